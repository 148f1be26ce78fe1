"""The reference-suite runner's bookkeeping: exclusion lists are well formed, give reasons, and the docs
page shows exactly them. (The suites themselves run in CI: ``python .ci/reference_suites.py all``.)"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("reference_suites", ROOT / ".ci" / "reference_suites.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_suite_has_an_exclusion_list_with_reasons(runner):
    for name in runner.SUITES:
        exclusions = runner.read_exclusions(name)
        files = runner.SUITES[name].files
        for test, reason in exclusions.items():
            assert test.split("::")[0] in files, f"{name}: {test} is not in one of the suite's files {files}"
            assert len(reason) > 15, f"{name}: {test} needs a reason, got {reason!r}"


def test_docs_list_exactly_the_exclusions(runner):
    page = runner.DOCS_PAGE.read_text()
    assert runner.exclusions_table() in page, "docs/drop-ins.md is stale: run python .ci/reference_suites.py docs"


def test_a_malformed_exclusion_line_is_refused(runner, tmp_path, monkeypatch):
    (tmp_path / "sklearn.txt").write_text("test_gaussian_mixture.py::test_x\n")
    monkeypatch.setattr(runner, "EXCLUSIONS", tmp_path)
    with pytest.raises(SystemExit, match="expected '<file>::<test id> | <reason>'"):
        runner.read_exclusions("sklearn")
