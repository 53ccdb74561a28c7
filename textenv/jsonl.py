"""Reading JSON-lines files, every error naming its ``file:line``: prompts, preference data, demonstrations.

One reader for every JSONL file textenv and the agents read (:func:`textenv.task.load_prompts`,
:func:`textenv.rm.load_preferences`, :func:`agents.text.sft.load_demonstrations`): it decodes and parses each
line and hands the caller the object with its ``where`` (``"path:line"``), so the caller's own checks name
the line too. Lines are counted from 1, blank lines included (they are skipped).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_jsonl(path: str | os.PathLike, what: str = "JSONL file") -> Iterator[tuple[str, Any]]:
    """``(where, object)`` for every non-blank line of ``path``, ``where`` being ``"path:line"``.

    Raises ``FileNotFoundError`` naming ``what`` when there is no such file, and ``ValueError`` naming
    ``path:line`` for a line that is not UTF-8 or not JSON.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "prompts.jsonl"
    >>> _ = path.write_text('{"prompt": "the room was"}\\n\\n{"prompt": "the food"')
    >>> next(read_jsonl(path))[1]
    {'prompt': 'the room was'}
    >>> list(read_jsonl(path))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../prompts.jsonl:3: malformed JSON (Expecting ',' delimiter at column 22): '{"prompt": "the food"'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise ValueError(f"{where}: not valid UTF-8 ({error.reason} at byte {error.start}): {raw[:80]!r}") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: malformed JSON ({error.msg} at column {error.colno}): {line[:80]!r}") from None
            yield where, obj
