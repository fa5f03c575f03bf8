"""Entry point: options from ``--config`` and argv, one run, exit status and one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path

from ._io import CliError
from ._options import PLOT_FORMATS
from ._parser import build_parser

#: The tokenizer's warning for non-count input: the CLI turns it into an error.
NON_COUNTS_WARNING = r"the matrix is not integer counts"
NON_COUNTS_FIX = (
    "on the command line read counts with --layer/--counts-layer NAME, or accept the values with "
    "--allow-non-counts (tokenize: --no-normalize uses them as they are)"
)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _config_path(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _tokens_for(action: argparse.Action, value, *, source: str) -> list[str]:
    flag = next(s for s in action.option_strings if s.startswith("--"))
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise CliError(f"{source}: {action.dest} must be true or false, got {value!r}")
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, dict):
        return [flag, json.dumps(value)]
    if action.nargs in ("+", "*"):
        values = value if isinstance(value, list) else [value]
        return [flag, *(str(v) for v in values)]
    if isinstance(value, list | dict):
        raise CliError(f"{source}: {action.dest} takes one value, got {value!r}")
    return [flag, str(value).lower() if isinstance(value, bool) else str(value)]


def _config_tokens(parser: argparse.ArgumentParser, command: str, path: str) -> list[str]:
    """Options of ``command`` from a TOML file, as argv tokens placed before the user's own."""
    import tomllib

    subs = _subparsers(parser)
    sub = subs[command]
    if not Path(path).is_file():
        sub.error(f"--config: no such file: {path}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        sub.error(f"--config {path} is not valid TOML: {e}")

    def actions_of(p):
        return {a.dest: a for a in p._actions if a.option_strings and a.dest != "help"}

    mine = actions_of(sub)
    anyone = set().union(*(actions_of(p) for p in subs.values()))
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for name in tables:
        if name not in subs:
            sub.error(f"--config {path}: [{name}] is not a subcommand ({', '.join(subs)})")
    tokens: list[str] = []
    for scope, items in (("top level", top), (f"[{command}]", tables.get(command, {}))):
        for key, value in items.items():
            dest = key.replace("-", "_")
            if dest in ("input", "output", "config"):
                sub.error(f"--config {path}: {key} is given on the command line, not in the file")
            if dest not in mine:
                if scope == "top level" and dest in anyone:
                    continue  # an option of another subcommand
                sub.error(f"--config {path}: {scope}: {command} has no option {key!r}")
            try:
                tokens += _tokens_for(mine[dest], value, source=f"--config {path}")
            except CliError as e:
                sub.error(str(e))
    return tokens


def _merge_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    path = _config_path(argv)
    if path is None:
        return argv
    i = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if i is None or argv[i] not in _subparsers(parser):
        return argv  # argparse reports the missing or unknown subcommand
    command = argv[i]
    return argv[: i + 1] + _config_tokens(parser, command, path) + argv[i + 1 :]


def _one_line(e: BaseException) -> str:
    if isinstance(e, CliError | ValueError | OSError | UserWarning):
        text = str(e) or type(e).__name__
    elif isinstance(e, KeyError):
        text = f"missing key {e}"
    else:
        text = f"{type(e).__name__}: {e} (rerun with --debug for the traceback)"
    if isinstance(e, UserWarning) and NON_COUNTS_WARNING in text:
        text = f"{text}; {NON_COUNTS_FIX}"
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _plot_format(parser, args) -> None:
    if args.command not in ("plot-heads", "plot-grn"):
        return
    if args.format is None:
        suffix = Path(args.output).suffix.lower().lstrip(".")
        if suffix not in PLOT_FORMATS:
            _subparsers(parser)[args.command].error(
                f"cannot tell the image format of {args.output!r}: give it a .png, .pdf or "
                ".svg extension, or pass --format"
            )
        args.format = suffix


def main(argv: list[str] | None = None) -> int:
    """Run ``sctransformer`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_merge_config(parser, argv))
    _plot_format(parser, args)
    from . import _commands

    try:
        with warnings.catch_warnings(), _commands.settings_restored():
            warnings.showwarning = _show_warning
            if args.quiet:
                warnings.simplefilter("ignore")
            if not getattr(args, "allow_non_counts", False):
                warnings.filterwarnings("error", message=NON_COUNTS_WARNING, category=UserWarning)
            _commands.run(args, argv)
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
        return 1
    return 0
