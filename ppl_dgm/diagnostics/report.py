"""Files a diagnosis writes: ArviZ summary (CSV), LOO (JSON), trace, posterior predictive and k-hat plots;
PSIS-LOO model comparison with one k-hat line in place of ArviZ's warning per model."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ppl_dgm.plots  # noqa: F401  (selects matplotlib's Agg backend)

SUMMARY_FILE = "summary.csv"
LOO_FILE = "loo.json"
TRACE_FILE = "trace.png"
PPC_FILE = "ppc.png"
KHAT_FILE = "khat.png"
KHAT_THRESHOLD = 0.7


@contextmanager
def quiet_arviz(python_warnings: bool = True) -> Iterator[None]:
    """Silence ArviZ's log (one-chain shape checks) and, with ``python_warnings``, the warnings of its
    statistics (one-chain R-hat, PSIS k-hat): what they say is written to the files."""
    import arviz as az

    logger = getattr(az, "_log", None)  # ArviZ 0.x logs through its own Logger, outside logging's registry
    logger = logger if isinstance(logger, logging.Logger) else logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if python_warnings:
                warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class LooComparison:
    """PSIS-LOO of several fits and ArviZ's ranking of them (`compare_loo`).

    Attributes:
        table: ``az.compare``'s DataFrame (rank, elpd_loo, p_loo, elpd_diff, dse, weight, ...), best first;
            elpd in nats summed over the data points.
        loo: each model's pointwise ``az.loo`` result (``ELPDData`` with ``pareto_k`` per data point).
    """

    table: Any
    loo: dict[str, Any]

    def khat_counts(self, threshold: float = KHAT_THRESHOLD) -> dict[str, tuple[int, int]]:
        """Per model, how many data points have Pareto k-hat above ``threshold``, and of how many."""
        return {name: (int((np.asarray(loo.pareto_k) > threshold).sum()), int(np.asarray(loo.pareto_k).size))
                for name, loo in self.loo.items()}

    def khat_line(self, threshold: float = KHAT_THRESHOLD) -> str:
        """One line in place of ArviZ's warning per model: the points whose LOO estimate is unreliable."""
        counts = ", ".join(f"{name} {above} of {total}" for name, (above, total) in self.khat_counts(threshold).items())
        return f"Pareto k-hat > {threshold} (LOO unreliable at those points): {counts}"


def compare_loo(fits: Mapping[str, Any]) -> LooComparison:
    """``az.compare(fits, ic="loo")`` with each model's PSIS-LOO computed once, without ArviZ's k-hat
    warning per model (`LooComparison.khat_line` says the same in one line).

    Args:
        fits: model name -> ``InferenceData`` with a ``log_likelihood`` group (see `to_inference_data`).
    """
    import arviz as az

    with quiet_arviz():
        loo = {name: az.loo(idata, pointwise=True) for name, idata in fits.items()}
        table = az.compare(loo, ic="loo")
    return LooComparison(table=table, loo=loo)


def _save_axes(axes: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = np.ravel(axes)[0].get_figure()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close("all")


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def write_report(idata: Any, folder: Path, source: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Write summary.csv, loo.json and the figures of ``idata`` into ``folder``; return the names
    written and the numbers of the final summary line."""
    import arviz as az

    written: list[str] = []
    groups = set(idata.groups())
    report: dict[str, Any] = {"point_mass": all(  # every draw the same, up to rounding
        float(values.std(dim=("chain", "draw")).max()) <= 1e-6 * max(1.0, float(abs(values).max()))
        for values in idata.posterior.data_vars.values())}
    with quiet_arviz():
        summary = az.summary(idata)
        summary.to_csv(folder / SUMMARY_FILE)
        written.append(SUMMARY_FILE)
        report["max_r_hat"] = _finite(summary["r_hat"].max()) if "r_hat" in summary else None
        loo = None
        if "log_likelihood" in groups:
            loo = az.loo(idata, pointwise=True)
            khat = np.asarray(loo.pareto_k).ravel()
            report["loo"] = {
                "elpd_loo": _finite(loo.elpd_loo), "se": _finite(loo.se), "p_loo": _finite(loo.p_loo),
                f"share_pareto_k_above_{KHAT_THRESHOLD}": float((khat > KHAT_THRESHOLD).mean()),
                "max_pareto_k": _finite(np.max(khat)), "warning": bool(loo.warning),
                "n_samples": int(loo.n_samples), "n_data_points": int(loo.n_data_points),
                "draws_identical": report["point_mass"], **source,
            }
            (folder / LOO_FILE).write_text(json.dumps(report["loo"], indent=2))
            written.append(LOO_FILE)
        _save_axes(az.plot_trace(idata), folder / TRACE_FILE)
        written.append(TRACE_FILE)
        if "posterior_predictive" in groups:
            draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
            _save_axes(az.plot_ppc(idata, num_pp_samples=min(50, draws)), folder / PPC_FILE)
            written.append(PPC_FILE)
        if loo is not None:
            _save_axes(az.plot_khat(loo), folder / KHAT_FILE)
            written.append(KHAT_FILE)
    return written, report
