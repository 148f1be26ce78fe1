"""The option tables of docs/cli.md, generated from the ``ppl-dgm`` argument parsers.

``python benchmarks/doc_blocks.py --cli`` writes each subcommand's table between the
``<!-- cli-NAME:start -->`` and ``<!-- cli-NAME:end -->`` markers of the page; tests/test_cli_docs.py fails
when the page and the parsers disagree.
"""

from __future__ import annotations

import argparse
import re

from ppl_dgm.cli import build_parser

_DEFAULT = re.compile(r"\s*\(default:? ([^()]*(?:\([^()]*\)[^()]*)*)\)\s*$")
"""A help text's closing ``(default ...)`` (it may hold one level of parentheses)."""


def subcommand_parsers(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser of ``ppl-dgm`` (or of ``parser``), by name, in the order ``--help`` lists them."""
    parser = parser or build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _invocation(action: argparse.Action) -> str:
    """How the option is written: ``DIR``, ``--out OUT``, ```--option KEY=VALUE`, `-O KEY=VALUE```."""
    if action.choices is not None and action.metavar is None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.metavar or action.dest.upper()
    if not action.option_strings:
        return f"`{metavar}`"
    takes_value = action.nargs != 0
    return ", ".join(f"`{flag} {metavar}`" if takes_value else f"`{flag}`" for flag in action.option_strings)


def _default_and_meaning(action: argparse.Action) -> tuple[str, str]:
    """The default column (a help text's closing ``(default ...)``, else the parser's default) and the help
    text without it."""
    meaning = (action.help or "").replace("%%", "%")
    match = _DEFAULT.search(meaning)
    if match:
        default = match.group(1)
        return (default if " " in default else f"`{default}`"), meaning[: match.start()]
    if action.required:
        return "(required)", meaning
    if action.default is None or action.default is False or action.default == [] or action.default == argparse.SUPPRESS:
        return "", meaning
    return f"`{action.default:g}`" if isinstance(action.default, float) else f"`{action.default}`", meaning


def option_table(parser: argparse.ArgumentParser) -> str:
    """A markdown table ``option | default | meaning`` of a subcommand's arguments (``--help`` left out)."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        default, meaning = _default_and_meaning(action)
        meaning = meaning.replace("|", r"\|")  # a pipe would end the cell
        rows.append(f"| {_invocation(action)} | {default} | {meaning} |")
    return "\n".join(rows)


def command_table(parser: argparse.ArgumentParser | None = None) -> str:
    """A markdown table ``command | what it does`` of the subcommands, from their ``--help`` one-liners."""
    parser = parser or build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rows = ["| command | what it does |", "| --- | --- |"]
    rows += [f"| `{a.dest}` | {a.help} |" for a in sub._choices_actions]
    return "\n".join(rows)


def option_tables() -> dict[str, str]:
    """The tables of docs/cli.md by block name: ``cli-commands``, and ``cli-NAME`` for every subcommand that
    takes arguments."""
    tables = {"cli-commands": command_table()}
    tables.update({f"cli-{name}": option_table(p) for name, p in subcommand_parsers().items()
                   if any(not isinstance(a, argparse._HelpAction) for a in p._actions)})
    return tables
