"""`napari-muvit` command line.

Each sub-command lives in its own module of this package with two functions:
``add_parser(subparsers)`` (registers flags and help) and ``run(args) -> int``.
Problems a user can fix raise ``ValueError``/``FileNotFoundError``; they are printed as one
line and the process exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module (imported lazily so `napari-muvit --help` stays fast and napari-free)
COMMANDS = {
    "demo": "demo",
    "synth": "synth",
    "predict": "predict",
    "attention": "attention",
    "rois": "rois",
    "pretrain": "pretrain",
    "finetune": "finetune",
    "info": "info",
    "measure": "measure",
}

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad input
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="napari-muvit",
        description="MuViT multi-resolution vision transformers for pyramidal microscopy slides.",
    )
    from napari_muvit import __version__

    parser.add_argument("--version", action="version", version=f"napari-muvit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module_name}":
                raise
            continue  # command not available in this build
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    module = importlib.import_module(f"{__name__}.{COMMANDS[args.command]}")
    from napari_muvit.engine.safety import os_error_sentence, terminal_text

    stdout = sys.stdout
    sys.stdout = _PlainText(stdout)  # names from files (classes, paths) never reach the terminal as escapes
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"napari-muvit: error: {terminal_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, file-size limit, permissions: one sentence, the store stays resumable
        print(f"napari-muvit: error: {terminal_text(os_error_sentence(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("napari-muvit: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout


class _PlainText:
    """A text stream that replaces control characters (terminal escape sequences) in everything written."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        from napari_muvit.engine.safety import terminal_text

        return self._stream.write(terminal_text(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
