"""Model comparison on held-out data: NLL per example of each model, and paired differences to the best."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ppl_dgm.core import GenerativeModel
from ppl_dgm.evaluation.likelihood import LogLikelihood, log_likelihood

COLUMNS = {
    "name": "model",
    "nll": "NLL (nats/example)",
    "nll_stderr": "± s.e.",
    "kind": "kind",
    "delta_nll": "Δ NLL to best",
    "delta_stderr": "± s.e. (paired)",
}
KIND_NOTES = {
    "exact": "exact log-likelihood",
    "estimate": "importance-weighted estimate (its NLL an upper bound in expectation)",
    "predictive": "log posterior predictive density over draws of the global latents",
    "bound": "dequantized density: an upper bound on the NLL of the discrete data",
}


@dataclass(frozen=True)
class ComparisonTable:
    """Models ranked by mean held-out log-likelihood, best first.

    Attributes:
        rows: one dict per model with ``name``; ``nll`` and ``nll_stderr`` (nats per example);
            ``kind`` (``"exact"``, ``"estimate"``, ``"predictive"`` or ``"bound"``, as in
            `ppl_dgm.LogLikelihood`); ``delta_nll`` (its NLL minus the best NLL, ``>= 0``) and
            ``delta_stderr`` (standard error of the paired per-example difference, 0 for the best);
            ``num_samples`` and ``num_examples``.
    """

    rows: list[dict[str, Any]]

    def to_markdown(self) -> str:
        """The table as GitHub Markdown, with a note on each kind of score when the kinds differ."""
        lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + " --- |" * len(COLUMNS)]
        for row in self.rows:
            cells = [row["name"], f"{row['nll']:.2f}", f"{row['nll_stderr']:.2f}", row["kind"],
                     f"{row['delta_nll']:.2f}", f"{row['delta_stderr']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        kinds = sorted({row["kind"] for row in self.rows})
        if len(kinds) > 1:
            lines += ["", "Kinds differ, so differences compare unlike scores: "
                      + "; ".join(f"{kind}: {KIND_NOTES.get(kind, kind)}" for kind in kinds) + "."]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _scores(models: Mapping[str, GenerativeModel], data: Any, num_samples: int, seed: int
            ) -> dict[str, LogLikelihood]:
    """`log_likelihood` of every model; a model without a likelihood, or one that fails, is named."""
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping name -> GenerativeModel")
    for name, model in models.items():
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model {name!r} is a {type(model).__name__}, not a GenerativeModel")
        if model.capabilities.likelihood == "none":
            raise ValueError(f"model {name!r} ({type(model).__name__}) defines no normalized likelihood; leave it "
                             "out of the table and compare it by sample-quality metrics")
    scores = {}
    for name, model in models.items():
        try:
            scores[name] = log_likelihood(model, data, num_samples=num_samples, seed=seed)
        except ValueError as error:
            raise ValueError(f"model {name!r}: {error}") from error
    return scores


def _paired_stderr(difference: torch.Tensor) -> float:
    """Standard error of the mean of per-example differences, ``std(d_n) / sqrt(N)`` (nats)."""
    n = difference.numel()
    return float(difference.std() / math.sqrt(n)) if n > 1 else math.nan


def compare(
    models: Mapping[str, GenerativeModel],
    data: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    num_samples: int = 1000,
    seed: int = 0,
) -> ComparisonTable:
    """Score every model on the same held-out data with `ppl_dgm.log_likelihood` and rank them.

    Each model gets its per-example log-likelihoods ``l_n`` (nats) and their kind; the table
    reports ``NLL = -mean_n l_n`` with its standard error, and against the best model ``b`` the
    paired difference ``d_n = l_{b,n} - l_n``: ``Δ NLL = mean_n d_n`` with standard error
    ``std(d_n) / sqrt(N)``, much smaller than either model's own error when the models agree on
    which examples are hard. Scores of different kinds (an exact discrete likelihood beside a
    dequantization bound) are allowed; the ``kind`` column says which is which.

    Args:
        models: name -> model; each must define a likelihood (``capabilities.likelihood != "none"``).
        data: held-out examples ``(N, *event_shape)`` or a mapping with key ``"x"`` and context.
        num_samples: importance samples per example (latent-variable models).
        seed: seed of every model's sampling.

    Returns:
        `ComparisonTable` with one row per model, best (lowest NLL) first.

    Raises:
        ValueError: ``models`` is empty, a model has likelihood ``"none"`` (named in the message), or
            a model cannot score the data.
    """
    scores = _scores(models, data, num_samples, seed)
    ranked = sorted(scores, key=lambda name: -scores[name].mean)
    best = scores[ranked[0]].per_sample
    rows = []
    for name in ranked:
        score = scores[name]
        difference = best - score.per_sample
        rows.append({
            "name": name,
            "nll": score.nll,
            "nll_stderr": score.stderr,
            "kind": score.kind,
            "delta_nll": float(difference.mean()),
            "delta_stderr": _paired_stderr(difference),
            "num_samples": score.num_samples,
            "num_examples": score.per_sample.numel(),
        })
    return ComparisonTable(rows)
