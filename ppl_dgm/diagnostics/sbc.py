"""Simulation-based calibration (Talts et al., 2018) of any inference engine on any story with global latents."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine
from scipy import stats
from tqdm.auto import tqdm

from ppl_dgm.core import DATA, GenerativeModel, X
from ppl_dgm.infer.fitting import fit
from ppl_dgm.infer.mcmc import nuts
from ppl_dgm.posterior import posterior_draws
from ppl_dgm.traces import in_data_plate, is_latent

Engine = Callable[[GenerativeModel, dict[str, torch.Tensor], int], Mapping[str, torch.Tensor]]
"""``infer(model, data, num_draws) -> {site: tensor (num_draws, *site_shape)}``: posterior draws of the
global latents given ``data`` (``{"x": x, **context}``); ``model`` is fresh and may be fitted in place."""
MAX_PANELS = 12


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _label(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{','.join(map(str, index))}]" if index else name


@dataclass(frozen=True)
class SBCResult:
    """Ranks of the true global latents among their posterior draws, over many simulated data sets.

    Attributes:
        ranks: site name -> integer ranks in ``0..S``, shape ``(L, *site_shape)`` (``L`` simulations).
        num_posterior_draws: ``S``, posterior draws per simulation.
        num_bins: ``B``, bins of the rank histograms and of the chi-square tests.
        alpha: family-wise level of the uniformity test (Bonferroni over the scalar components).
        seconds: wall time of the simulations and inferences.
    """

    ranks: dict[str, np.ndarray]
    num_posterior_draws: int
    num_bins: int
    alpha: float = 0.01
    seconds: float = math.nan

    @property
    def num_simulations(self) -> int:
        """``L``, the number of simulated data sets."""
        return next(iter(self.ranks.values())).shape[0]

    def components(self) -> dict[str, np.ndarray]:
        """Ranks of every scalar component, shape ``(L,)``, labelled ``"site"`` or ``"site[i,j]"``."""
        return {_label(name, index): ranks[(slice(None), *index)]
                for name, ranks in self.ranks.items() for index in np.ndindex(ranks.shape[1:])}

    def bin_of_rank(self) -> np.ndarray:
        """The bin (``0..B-1``) of each rank ``0..S``, shape ``(S + 1,)``; bins hold equally many ranks
        when ``B`` divides ``S + 1``."""
        return np.arange(self.num_posterior_draws + 1) * self.num_bins // (self.num_posterior_draws + 1)

    def bin_probabilities(self) -> np.ndarray:
        """Probability of each bin under uniform ranks, shape ``(B,)``."""
        return np.bincount(self.bin_of_rank(), minlength=self.num_bins) / (self.num_posterior_draws + 1)

    def histograms(self) -> dict[str, np.ndarray]:
        """Counts of each component's ranks in the ``B`` bins, shape ``(B,)``."""
        bins = self.bin_of_rank()
        return {label: np.bincount(bins[ranks], minlength=self.num_bins) for label, ranks in self.components().items()}

    def p_values(self) -> dict[str, float]:
        """Chi-square test of uniform ranks for each scalar component (``scipy.stats.chisquare``)."""
        expected = self.bin_probabilities() * self.num_simulations
        return {label: float(stats.chisquare(counts, expected).pvalue) for label, counts in self.histograms().items()}

    @property
    def min_p_value(self) -> float:
        """Smallest p-value over the scalar components."""
        return min(self.p_values().values())

    @property
    def calibrated(self) -> bool:
        """No component rejects uniformity at level ``alpha / C`` (Bonferroni over ``C`` components)."""
        return self.min_p_value >= self.alpha / len(self.p_values())

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures: L, S, B, the p-value of each component, the smallest, the verdict."""
        p_values = self.p_values()
        return {
            "num_simulations": self.num_simulations,
            "num_posterior_draws": self.num_posterior_draws,
            "num_bins": self.num_bins,
            "p_values": p_values,
            "min_p_value": min(p_values.values()),
            "bonferroni_level": self.alpha / len(p_values),
            "calibrated": self.calibrated,
            "seconds": self.seconds,
        }


@torch.no_grad()
def prior_draw(model: GenerativeModel, num_examples: int, context: Mapping[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor, set[str]]:
    """One run of ``model.model`` with ``x=None``: the global latents θ*, the data set x*
    (``(num_examples, *event_shape)``) and the names of all its sample sites."""
    trace = poutine.trace(model.model).get_trace(None, n=num_examples, **context)
    if X not in trace.nodes:
        raise ValueError(f"{type(model).__name__}.model has no sample site {X!r}")
    sites = {name for name, site in trace.nodes.items() if site["type"] == "sample"}
    truth = {name: site["value"].detach() for name, site in trace.nodes.items()
             if is_latent(site) and not in_data_plate(site)}
    return truth, trace.nodes[X]["value"].detach(), sites


def _checked(draws: Mapping[str, torch.Tensor], truth: dict[str, torch.Tensor], sites: set[str],
             num_draws: int) -> dict[str, torch.Tensor]:
    """The engine's draws of the global latents, after checking names, shapes and finiteness."""
    if not isinstance(draws, Mapping):
        raise TypeError(f"the engine must return a mapping site -> draws, got {type(draws).__name__}")
    unknown, missing = sorted(set(draws) - sites), sorted(set(truth) - set(draws))
    if unknown or missing:
        raise ValueError(f"the engine returned sites the model lacks ({', '.join(unknown) or 'none'}) or left out "
                         f"global latents ({', '.join(missing) or 'none'}); the global latents are {sorted(truth)}")
    for name, value in truth.items():
        draw = draws[name]
        if not isinstance(draw, torch.Tensor) or tuple(draw.shape) != (num_draws, *value.shape):
            shape = tuple(draw.shape) if isinstance(draw, torch.Tensor) else type(draw).__name__
            raise ValueError(f"the engine's draws of {name!r} have shape {shape}, expected {(num_draws, *value.shape)}")
        if draw.is_floating_point() and not bool(torch.isfinite(draw).all()):
            raise ValueError(f"the engine's draws of {name!r} hold non-finite values")
    return {name: draws[name] for name in truth}


def _rank(draws: torch.Tensor, truth: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """Draws below ``truth``, plus a uniform share of the ties (discrete sites): ``0..S``, shape of ``truth``."""
    draws, truth = draws.detach().cpu().double().numpy(), truth.detach().cpu().double().numpy()
    below, ties = (draws < truth).sum(0), (draws == truth).sum(0)
    return below + rng.integers(0, ties + 1)


def _context(context: Mapping[str, torch.Tensor] | None, num_examples: int) -> dict[str, torch.Tensor]:
    context = dict(context or {})
    for key, value in context.items():
        if key == X or not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != num_examples:
            raise ValueError(f"context[{key!r}] must be a tensor with num_examples={num_examples} rows (not 'x')")
    return context


def _bins(num_bins: int | None, alpha: float, num_simulations: int, num_draws: int) -> int:
    """The number of bins (default: about 10 simulations per bin, at most 20, at most ``S + 1``)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if num_bins is None:
        return max(2, min(20, num_draws + 1, num_simulations // 10))
    if _positive_int("num_bins", num_bins) < 2 or num_bins > num_draws + 1:
        raise ValueError(f"num_bins must lie in 2..num_posterior_draws + 1 = {num_draws + 1}, got {num_bins}")
    return num_bins


def _simulate(make_model: Callable[[], GenerativeModel], infer: Engine, num_examples: int,
              context: dict[str, torch.Tensor], num_draws: int
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One simulation: θ* and x* from the prior predictive of a fresh model, then the engine's draws given x*."""
    model = make_model()
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"make_model must return a GenerativeModel, got {type(model).__name__}")
    truth, x, sites = prior_draw(model, num_examples, context)
    if not truth:
        raise ValueError(f"{type(model).__name__} has no global latent sites (outside plate {DATA!r}): "
                         "SBC checks the posterior of global latents; use psis_diagnostic for local ones")
    return truth, _checked(infer(model, {X: x, **context}, num_draws), truth, sites, num_draws)


def sbc(
    make_model: Callable[[], GenerativeModel],
    infer: Engine,
    *,
    num_simulations: int,
    num_examples: int,
    num_posterior_draws: int,
    seed: int = 0,
    context: Mapping[str, torch.Tensor] | None = None,
    num_bins: int | None = None,
    alpha: float = 0.01,
    plot: str | Path | None = None,
    progress: bool = True,
) -> SBCResult:
    """Simulation-based calibration of ``infer`` on the story ``make_model()`` (Talts et al., 2018).

    Each of ``L`` simulations draws the global latents θ* and a data set x* of ``N`` examples
    from the prior predictive (``model.model(None, n=N, **context)``), asks the engine for
    ``S`` posterior draws θ_1..θ_S given x*, and records the rank ``#{s: θ_s < θ*}`` of every
    scalar component (ties, for discrete sites, broken at random). If the engine samples the
    exact posterior, each rank is uniform on ``0..S``; an overconfident posterior piles ranks
    at both ends (a U), an underconfident one in the middle, a biased one on one side. Each
    component's ranks are tested for uniformity with a chi-square test on ``B`` bins.

    Args:
        make_model: returns a fresh `GenerativeModel` (its parameters fixed by the story).
        infer: the engine, ``infer(model, data, S) -> {site: (S, *site_shape)}``: see
            `svi_engine`, `nuts_engine`.
        num_simulations: ``L`` data sets.
        num_examples: ``N`` examples per data set.
        num_posterior_draws: ``S`` draws per simulation (choose ``S + 1`` a multiple of ``B``).
        seed: seeds torch (prior draws and the engine's randomness) and the tie-breaking.
        context: per-example tensors with ``N`` rows passed to model and engine (e.g. covariates),
            the same in every simulation.
        num_bins: ``B`` (default about ``L / 10``, at most 20 and ``S + 1``).
        alpha: family-wise level of the test (Bonferroni over the scalar components).
        plot: write a PNG there: the rank histogram of each component (up to 12) over the 99%
            band of a uniform histogram.
        progress: show a progress bar over simulations.

    Returns:
        `SBCResult` with the ranks ``(L, *site_shape)`` of each global site and the p-values.

    Raises:
        ValueError: the story has no global latents, a count is not a positive integer, or the
            engine returns sites the model lacks, misses a global latent, or draws of the wrong shape.
    """
    num_simulations = _positive_int("num_simulations", num_simulations)
    num_examples = _positive_int("num_examples", num_examples)
    num_draws = _positive_int("num_posterior_draws", num_posterior_draws)
    num_bins = _bins(num_bins, alpha, num_simulations, num_draws)
    context = _context(context, num_examples)
    rng = np.random.default_rng(seed)
    ranks: dict[str, list[np.ndarray]] = {}
    began = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in tqdm(range(num_simulations), disable=not progress, desc="sbc", unit="simulation", leave=False):
            truth, draws = _simulate(make_model, infer, num_examples, context, num_draws)
            for name, value in truth.items():
                ranks.setdefault(name, []).append(_rank(draws[name], value, rng))
    result = SBCResult({name: np.stack(values) for name, values in ranks.items()}, num_draws, num_bins, alpha,
                       time.perf_counter() - began)
    if plot is not None:
        plot_ranks(result, plot)
    return result


def svi_engine(**fit_kwargs: Any) -> Engine:
    """An engine that fits the model's guide with `ppl_dgm.fit` and draws from it.

    Args:
        **fit_kwargs: passed to `ppl_dgm.fit` (``epochs``, ``lr``, ``batch_size``, ...).

    Returns:
        ``infer(model, data, S)``: fits ``model`` in place on ``data`` (``{"x": x, **context}``),
        then runs the guide ``S`` times (`ppl_dgm.posterior.posterior_draws`); draws of each
        global site, shape ``(S, *site_shape)``.
    """

    def infer(model: GenerativeModel, data: dict[str, torch.Tensor], num_draws: int) -> dict[str, torch.Tensor]:
        fit(model, data, **{"progress": False, **fit_kwargs})
        with torch.no_grad():
            draws = posterior_draws(model, data, num_draws=num_draws)
        return {name: value[0] for name, value in draws.items()}

    return infer


def nuts_engine(**nuts_kwargs: Any) -> Engine:
    """An engine that samples the posterior with `ppl_dgm.infer.mcmc.nuts`, chains pooled and thinned.

    Args:
        **nuts_kwargs: passed to `nuts` (``num_samples``, ``warmup_steps``, ``num_chains``, ...). The
            seed of each run is drawn from torch's generator (which `sbc` seeds) unless given.

    Returns:
        ``infer(model, data, S)``: ``chains * num_samples`` draws pooled and thinned evenly to
        ``S``, shape ``(S, *site_shape)`` per site (a ``ValueError`` if there are fewer than ``S``).
    """

    def infer(model: GenerativeModel, data: dict[str, torch.Tensor], num_draws: int) -> dict[str, torch.Tensor]:
        seed = int(torch.randint(2**31 - 1, ()))
        run = nuts(model, data, **{"progress": False, "seed": seed, **nuts_kwargs})
        total = run.num_chains * run.num_draws
        if total < num_draws:
            raise ValueError(f"NUTS gave {total} draws (chains x num_samples), fewer than num_posterior_draws="
                             f"{num_draws}")
        keep = torch.linspace(0, total - 1, num_draws).round().long()
        return {name: value.reshape(total, *value.shape[2:])[keep] for name, value in run.samples.items()}

    return infer


def plot_ranks(result: SBCResult, path: str | Path) -> Path:
    """Write a PNG of the rank histograms (up to 12 components) over the 99% band of uniform ranks."""
    from ppl_dgm.plots import _save, plt

    histograms = list(result.histograms().items())[:MAX_PANELS]
    p_values = result.p_values()
    probabilities = result.bin_probabilities()
    widths = probabilities * (result.num_posterior_draws + 1)
    edges = np.concatenate([[0], np.cumsum(widths)])
    low, high = (stats.binom.ppf(q, result.num_simulations, probabilities) for q in (0.005, 0.995))
    cols = min(4, len(histograms))
    rows = math.ceil(len(histograms) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(histograms):]:
        ax.axis("off")
    for ax, (label, counts) in zip(axes.flat, histograms, strict=False):
        ax.bar(edges[:-1], counts, width=widths, align="edge", edgecolor="white", alpha=0.8)
        ax.fill_between(edges, np.append(low, low[-1]), np.append(high, high[-1]), step="post", color="grey",
                        alpha=0.35, linewidth=0)
        ax.set_title(f"{label}   p = {p_values[label]:.2g}", fontsize=9)
        ax.set_xlabel(f"rank (0..{result.num_posterior_draws})", fontsize=8)
    shown = f" (first {MAX_PANELS} of {len(p_values)})" if len(p_values) > MAX_PANELS else ""
    fig.suptitle(f"SBC rank histograms{shown}: L = {result.num_simulations}, S = {result.num_posterior_draws}, "
                 f"{'calibrated' if result.calibrated else 'NOT calibrated'} at level {result.alpha:g}\n"
                 "grey: 99% band of each bin's count under uniform ranks", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
