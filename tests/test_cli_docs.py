"""docs/cli.md's tables of commands and options are the ones the argument parsers generate."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ppl_dgm.cli.common import Parser, count
from ppl_dgm.cli.docs import option_table, option_tables

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from doc_blocks import read_block, replace_block, write_cli_tables  # noqa: E402

PAGE = ROOT / "docs" / "cli.md"


@pytest.fixture(scope="module")
def fresh_tables() -> dict[str, str]:
    """The tables as a fresh process builds them (what `doc_blocks.py --cli` writes): engines that models
    register when imported, as other tests import them, are not the command line's own."""
    code = "import json; from ppl_dgm.cli.docs import option_tables; print(json.dumps(option_tables()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", sorted(option_tables()))
def test_the_page_shows_what_the_parsers_say(name, fresh_tables):
    assert read_block(PAGE, name) == fresh_tables[name], (
        f"docs/cli.md's {name} table differs from the parser; run 'python benchmarks/doc_blocks.py --cli'")


def test_every_subcommand_with_options_has_a_table():
    assert {"cli-commands", "cli-fit", "cli-evaluate", "cli-sample", "cli-diagnose", "cli-views", "cli-compress",
            "cli-decompress", "cli-demo"} <= set(option_tables())


def test_a_table_row_follows_its_argument():
    parser = Parser(prog="toy")
    parser.add_argument("dir", help="a run")
    parser.add_argument("--steps", "-s", type=count(1), default=3, metavar="K", help="steps a|b (default 3)")
    parser.add_argument("--device", default="cpu", help="where")
    parser.add_argument("--flag", action="store_true", help="a switch (default: off, as always)")
    rows = option_table(parser).splitlines()
    assert rows[2:] == ["| `DIR` | (required) | a run |",
                        r"| `--steps K`, `-s K` | `3` | steps a\|b |",
                        "| `--device DEVICE` | `cpu` | where |",
                        "| `--flag` | off, as always | a switch |"]


def test_writing_the_tables_fills_the_markers_and_keeps_the_rest(tmp_path):
    page = tmp_path / "cli.md"
    page.write_text("# intro\n<!-- cli-fit:start -->\nold\n<!-- cli-fit:end -->\ntail\n")
    missing = write_cli_tables(page)
    assert "cli-fit" not in missing and "cli-evaluate" in missing
    assert read_block(page, "cli-fit") == option_tables()["cli-fit"]
    assert page.read_text().startswith("# intro\n") and page.read_text().endswith("\ntail\n")
    assert not replace_block(tmp_path / "absent.md", "cli-fit", "x")
