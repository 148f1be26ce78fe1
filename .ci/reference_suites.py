#!/usr/bin/env python
"""Run the reference libraries' own test files against ppl_dgm's drop-ins.

For a suite (``sklearn`` or ``hmmlearn``) this copies the *installed* package's test files into a
temporary directory, rewrites only the import lines that name the class under test so that they
import ppl_dgm's drop-in instead, and runs pytest there. Tests that reach into the reference's
private internals are deselected; they are listed, each with its reason, in
``tests/reference/<suite>.txt`` (``<file>::<test id> | <reason>``), and a listed test that no longer
exists is an error, so the list cannot go stale.

    python .ci/reference_suites.py sklearn [-- PYTEST_ARGS]
    python .ci/reference_suites.py hmmlearn [-- PYTEST_ARGS]
    python .ci/reference_suites.py all
    python .ci/reference_suites.py docs    # the exclusion lists into docs/drop-ins.md

Exits with pytest's status (non-zero if any public-API test fails).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXCLUSIONS = ROOT / "tests" / "reference"
DOCS_PAGE = ROOT / "docs" / "drop-ins.md"
RESULTS = ROOT / "benchmarks" / "results" / "reference_suites.json"


@dataclass(frozen=True)
class Suite:
    """Where a reference's tests live and which import lines point them at ppl_dgm."""

    package: str
    distribution: str
    """Name pip installs it under."""
    tests: str
    """Folder of the test files inside the installed package."""
    files: tuple[str, ...]
    """The test files run (each must exist in the installed version)."""
    imports: dict[str, str]
    """Import line of the reference -> import line of the drop-in; each must occur in some file."""
    support: tuple[str, ...] = ()
    """Files of the tests package copied as they are (helpers the tests import, conftest)."""
    conftest: str | None = None
    """Text of a conftest.py to write (for fixtures the package keeps in a conftest above its tests)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment defaults (an already set variable wins)."""


SUITES = {
    "sklearn": Suite(
        package="sklearn",
        distribution="scikit-learn",
        tests="mixture/tests",
        files=("test_gaussian_mixture.py",),
        imports={"from sklearn.mixture import GaussianMixture":
                 "from ppl_dgm.models.classical.gmm import GaussianMixture"},
        support=("__init__.py",),
        conftest="from sklearn.conftest import *  # noqa: F403 (sklearn's fixtures and hooks)\n",
        env={"SKLEARN_RUN_FLOAT32_TESTS": "1"},  # sklearn runs its float32 cases only when asked
    ),
    "hmmlearn": Suite(
        package="hmmlearn",
        distribution="hmmlearn",
        tests="tests",
        files=("test_gaussian_hmm.py", "test_categorical_hmm.py", "test_gmm_hmm.py", "test_gmm_hmm_new.py",
               "test_gmm_hmm_multisequence.py", "test_poisson_hmm.py"),
        imports={"from hmmlearn import hmm": "from ppl_dgm.models.classical import hmm",
                 "from .. import hmm": "from ppl_dgm.models.classical import hmm",
                 "from ..hmm import GMMHMM": "from ppl_dgm.models.classical.hmm import GMMHMM"},
        support=("__init__.py", "conftest.py"),
        env={"HMMLEARN_SEED": "1"},  # hmmlearn's conftest draws a seed per run otherwise
    ),
}


def installed_tests(suite: Suite) -> Path:
    """The installed package's test folder."""
    spec = importlib.util.find_spec(suite.package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{suite.package} is not installed: pip install it (it ships its tests)")
    folder = Path(next(iter(spec.submodule_search_locations))) / suite.tests
    missing = [name for name in suite.files + suite.support if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"{folder} lacks {', '.join(missing)}: this version of {suite.package} does not install "
                         "its tests as expected; update SUITES in .ci/reference_suites.py")
    return folder


def copy_with_drop_in_imports(suite: Suite, source: Path, target: Path) -> None:
    """Copy the suite's files into ``target``, rewriting only the import lines of the class under test."""
    target.mkdir(parents=True)
    for name in suite.support:
        shutil.copy(source / name, target / name)
    if suite.conftest is not None:
        (target / "conftest.py").write_text(suite.conftest)
    used = set()
    for name in suite.files:
        lines = (source / name).read_text().splitlines(keepends=True)
        for i, line in enumerate(lines):
            stripped = line.rstrip("\n")
            if stripped in suite.imports:
                lines[i] = suite.imports[stripped] + "\n"
                used.add(stripped)
        (target / name).write_text("".join(lines))
    unused = sorted(set(suite.imports) - used)
    if unused:
        raise SystemExit(f"no test file of {suite.package} has the import line(s) {unused}: its tests changed; "
                         "update SUITES in .ci/reference_suites.py")


def read_exclusions(name: str) -> dict[str, str]:
    """``{test id: reason}`` from ``tests/reference/<name>.txt``."""
    path = EXCLUSIONS / f"{name}.txt"
    exclusions = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        test, sep, reason = line.partition("|")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}:{number}: expected '<file>::<test id> | <reason>', got {line!r}")
        exclusions[test.strip()] = reason.strip()
    return exclusions


def collected_ids(folder: Path, env: dict[str, str]) -> set[str]:
    """Test ids pytest collects in ``folder`` (collected as the run collects them: parametrized ids depend on it)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           folder.name], cwd=folder.parent, env=env, capture_output=True, text=True)
    ids = {line.strip() for line in done.stdout.splitlines() if "::" in line}
    if not ids:
        raise SystemExit(f"collecting the tests failed:\n{done.stdout}\n{done.stderr}")
    return ids


def run_suite(name: str, pytest_args: list[str]) -> int:
    """Run one suite; returns pytest's exit status."""
    suite = SUITES[name]
    source = installed_tests(suite)
    exclusions = read_exclusions(name)
    env = {**suite.env, **os.environ}
    with tempfile.TemporaryDirectory(prefix=f"reference-{name}-") as tmp:
        folder = Path(tmp) / f"{suite.package}_reference_tests"
        copy_with_drop_in_imports(suite, source, folder)
        (Path(tmp) / "pytest.ini").write_text("[pytest]\n")  # no ini of ours or theirs applies
        ids = {i.removeprefix(f"{folder.name}/") for i in collected_ids(folder, env)}
        stale = sorted(set(exclusions) - ids - {i.partition("[")[0] for i in ids})  # a bare name: all its params
        if stale:
            raise SystemExit(f"tests/reference/{name}.txt lists tests that {suite.package} no longer has: "
                             f"{', '.join(stale)}; remove them")
        # exact ids only: pytest deselects by prefix, so test_x would also drop test_x_other
        excluded = sorted(i for i in ids if i in exclusions or i.partition("[")[0] in exclusions)
        deselect = [arg for test in excluded for arg in ("--deselect", f"{folder.name}/{test}")]
        print(f"{name}: {len(suite.files)} test file(s) of {suite.package} from {source}; "
              f"{len(excluded)} private-API test(s) deselected (tests/reference/{name}.txt)", flush=True)
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", f"--junitxml={report}",
                   "--continue-on-collection-errors", folder.name, *deselect, *pytest_args]  # errors still fail
        status = subprocess.run(command, cwd=tmp, env=env).returncode
        if not pytest_args and report.exists():  # a full run: record its counts for the docs
            record_counts(name, suite, report, len(excluded))
        return status


def record_counts(name: str, suite: Suite, report: Path, deselected: int) -> None:
    """Store the suite's counts (per file: passed, failed, skipped) and versions in `RESULTS`."""
    counts: dict[str, dict[str, int]] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        file = case.get("classname", "").split(".")[1] + ".py"
        skipped = case.find("skipped")
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "passed" if skipped is None
                   else "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped")
        counts.setdefault(file, {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0})[outcome] += 1
    versions = {package: importlib.metadata.version(package) for package in (suite.distribution, "ppl_dgm")}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = {"versions": versions, "deselected": deselected, "files": counts}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def exclusions_table() -> str:
    """The deselected tests of every suite with their reasons, as a markdown table."""
    rows = ["| Suite | Test | Why it is not run against the drop-in |", "|---|---|---|"]
    for name in SUITES:
        for test, reason in read_exclusions(name).items():
            rows.append(f"| {name} | `{test}` | {reason.replace('|', '/')} |")
    return "\n".join(rows)


def results_table() -> str:
    """The last full run of each suite (from `RESULTS`), per test file, as a markdown table."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows = ["| Suite (version) | Test file | Passed | Failed | Expected failures (the reference's xfail) "
            "| Skipped by the reference's own setup |", "|---|---|---|---|---|---|"]
    for name, result in results.items():
        label = f"{name} {result['versions'][SUITES[name].distribution]}"
        for file, counts in result["files"].items():
            rows.append(f"| {label} | `{file}` | {counts['passed']} | {counts['failed']} | {counts['xfailed']} "
                        f"| {counts['skipped']} |")
    return "\n".join(rows)


def write_docs() -> None:
    """Put the results of the last full runs and the exclusion lists into the docs page."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from doc_blocks import replace_block

    for block, table in (("reference-results", results_table()), ("reference-exclusions", exclusions_table())):
        if not replace_block(DOCS_PAGE, block, table):
            raise SystemExit(f"{DOCS_PAGE} lacks the markers of {block}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=[*SUITES, "all", "docs"])
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    args = parser.parse_args(argv)
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    if args.suite == "docs":
        write_docs()
        return 0
    names = list(SUITES) if args.suite == "all" else [args.suite]
    status = 0
    for name in names:
        status = run_suite(name, extra) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
