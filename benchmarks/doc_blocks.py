"""Tables in the docs that a benchmark writes: the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` in a markdown page is replaced by the benchmark's output, so the page cannot drift
from the figures the script measured."""

from __future__ import annotations

import re
from pathlib import Path


def replace_block(page: str | Path, name: str, text: str) -> bool:
    """Put ``text`` between the ``name`` markers of ``page``; whether the page has them (it is left as is
    when it has not)."""
    page = Path(page)
    if not page.is_file():
        return False
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    content = page.read_text()
    if not pattern.search(content):
        return False
    page.write_text(pattern.sub(lambda _: f"{start}\n{text.strip()}\n{end}", content, count=1))
    return True
