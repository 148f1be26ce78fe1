"""The ``ppl-dgm`` command line: list, fit, evaluate, sample, views, diagnose, demo, compress, decompress."""

from __future__ import annotations

import argparse
import sys

from ppl_dgm.cli import compress, diagnose, fit, results, views
from ppl_dgm.cli.common import Parser, user_frame
from ppl_dgm.infer import NonFiniteLossError

COMMAND_MODULES = (results, fit, diagnose, compress, views)
"""Each adds its subcommands to the parser (``add_parsers``), in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ppl-dgm`` (every subcommand has ``--help``)."""
    parser = Parser(prog="ppl-dgm", description="Fit, evaluate and sample deep generative models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ppl-dgm``; returns the exit status (2 for a user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"ppl-dgm: error: {error}{user_frame(error)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"ppl-dgm: fit failed: {error}{_outcome(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"ppl-dgm: interrupted{_outcome(error)}", file=sys.stderr)
        return 130
    return 0


def _outcome(error: BaseException) -> str:
    """What a failed ``fit`` left in its directory (set by the fit as ``error.outcome``), after a semicolon."""
    outcome = getattr(error, "outcome", None)
    return f"; {outcome}" if outcome else ""


if __name__ == "__main__":
    sys.exit(main())
