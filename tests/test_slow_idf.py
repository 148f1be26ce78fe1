"""Slow tier: the IDF of examples/idf_digits.py reaches its exact NLL target on the digits test split."""

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "idf_digits.py"


@pytest.mark.slow
def test_idf_reaches_120_nats_exact_on_digits(tmp_path):
    spec = importlib.util.spec_from_file_location("idf_digits", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    figures = example.main(["--out", str(tmp_path), "--no-progress"])
    print(figures)
    assert figures["kind"] == "exact" and figures["num_examples"] == 447
    assert figures["test_nll_nats"] <= 120.0
    assert json.loads((tmp_path / "idf_digits.json").read_text())["test_nll_nats"] == figures["test_nll_nats"]
    assert (tmp_path / "samples.png").is_file()
