"""Tables in the docs that a script writes: the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` in a markdown page is replaced by the script's output, so the page cannot drift
from the figures the script measured (or, for docs/cli.md, from the argument parsers).

    python benchmarks/doc_blocks.py --cli    # rewrite the option tables of docs/cli.md from ppl-dgm's parsers
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

CLI_PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _pattern(name: str) -> re.Pattern[str]:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    return re.compile(re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), re.DOTALL)


def read_block(page: str | Path, name: str) -> str | None:
    """The text between the ``name`` markers of ``page`` (stripped), or ``None`` when it has none."""
    page = Path(page)
    match = _pattern(name).search(page.read_text()) if page.is_file() else None
    return None if match is None else match.group(1).strip()


def replace_block(page: str | Path, name: str, text: str) -> bool:
    """Put ``text`` between the ``name`` markers of ``page``; whether the page has them (it is left as is
    when it has not)."""
    page = Path(page)
    if not page.is_file():
        return False
    pattern = _pattern(name)
    content = page.read_text()
    if not pattern.search(content):
        return False
    block = f"<!-- {name}:start -->\n{text.strip()}\n<!-- {name}:end -->"
    page.write_text(pattern.sub(lambda _: block, content, count=1))
    return True


def write_cli_tables(page: str | Path = CLI_PAGE) -> list[str]:
    """Rewrite every ``cli-NAME`` block of ``page`` with the option table of ``ppl-dgm NAME``; the names of
    the tables that have no markers in the page."""
    from ppl_dgm.cli.docs import option_tables

    return [name for name, table in option_tables().items() if not replace_block(page, name, table)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", action="store_true", help="rewrite the option tables of docs/cli.md")
    parser.add_argument("--page", default=str(CLI_PAGE), help="the page to rewrite (default docs/cli.md)")
    args = parser.parse_args(argv)
    if not args.cli:
        parser.error("nothing to do: pass --cli")
    missing = write_cli_tables(args.page)
    print(f"option tables of {args.page} rewritten" + (f"; no markers for {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
