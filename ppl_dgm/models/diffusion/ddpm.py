"""DDPM (Ho et al., 2020; Nichol & Dhariwal, 2021): the reverse chain is the model, the forward chain the guide."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from ppl_dgm.core import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.models.diffusion.decoder import DiscretizedGaussian
from ppl_dgm.models.diffusion.network import Denoiser
from ppl_dgm.models.diffusion.sampling import SamplingMethod, sample_images
from ppl_dgm.models.diffusion.schedules import Chain, ScheduleKind, noise_schedule
from ppl_dgm.models.registry import register_model
from ppl_dgm.validation import check_integer_levels, check_tensor

ROWS_PER_PASS = 16_384
"""(example, step) pairs the bound evaluates per network call."""


def latent_site(t: int) -> str:
    """Name of the latent site of step ``t`` in ``1..T``: ``"x_t"``."""
    return f"x_{t}"


@register_model("ddpm")
class DDPM(GenerativeModel):
    """Denoising diffusion probabilistic model on integer-valued data (Ho et al., 2020).

    The story is the reverse chain ``x_T ~ N(0, I)``, ``x_{t-1} ~ N(mu(x_t, t), Sigma(x_t, t))`` for
    ``t = T..2`` (sites ``"x_T" .. "x_1"``) and a discretized Gaussian over the integer levels for
    ``x | x_1`` (site ``"x"``); the guide is the fixed forward chain ``x_t ~ N(sqrt(1 - beta_t) x_{t-1},
    beta_t I)`` from ``x_0 = x`` mapped to ``[-1, 1]``. Their ELBO is the diffusion bound on the discrete
    image; `evidence_lower_bound` computes it with the per-step KL terms in closed form.

    The defaults are the improved model that suits sklearn's digits; Ho et al.'s plain DDPM is
    ``schedule="linear", parameterization="eps", variance="fixed", loss="simple"``.
    Improved-DDPM choices (Nichol & Dhariwal, 2021): the cosine schedule, learned variances (the
    network's extra output ``v`` interpolates the log-variance between ``beta_t`` and ``beta~_t``,
    through a sigmoid) trained with the hybrid loss ``L_simple + hybrid_weight * L_vlb`` (the mean
    detached in ``L_vlb``), and importance-sampled steps (the engine keeps each step's recent ``L_t``).

    Args:
        input_dim: pixels ``D`` of a flattened example (data shape ``(N, D)``).
        num_levels: the data's integer levels ``0..num_levels-1``, mapped linearly onto ``[-1, 1]``.
        timesteps: ``T``, steps of the chain.
        schedule: ``"linear"`` or ``"cosine"`` noise schedule (see `noise_schedule`).
        parameterization: ``"eps"``: the network predicts the noise (Ho et al., 2020). ``"levels"``: it
            predicts per-pixel logits over the levels, to which the exact log-likelihood of ``x_t`` under
            each level is added; ``x_0``'s prediction is the posterior mean over the levels (as CDCD,
            Dieleman et al., 2022, predicts categorical ``x_0``), so nearly noiseless steps cost nothing.
        variance: ``"fixed"`` (``beta~_t``, and ``beta_1`` for the decoder) or ``"learned"``.
        loss: ``"simple"`` (noise regression, Ho et al.) or ``"hybrid"`` (needed for learned variances).
        timestep_sampling: ``"uniform"`` or ``"importance"`` (weights ``L_vlb``; needs the hybrid loss).
        hybrid_weight: weight ``lambda`` of ``L_vlb`` in the hybrid loss.
        width: hidden width of the denoising network.
        num_blocks: residual blocks of the network.
        dropout: dropout inside the network while fitting.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(likelihood="bound", data="discrete")
    default_engine: ClassVar[str] = "denoising"
    evaluation_samples: ClassVar[int] = 4  # draws of x_1..x_T per image; each costs T network passes

    def __init__(
        self,
        input_dim: int = 64,
        num_levels: int = 17,
        timesteps: int = 400,
        schedule: ScheduleKind = "cosine",
        parameterization: Literal["eps", "levels"] = "levels",
        variance: Literal["fixed", "learned"] = "learned",
        loss: Literal["simple", "hybrid"] = "hybrid",
        timestep_sampling: Literal["uniform", "importance"] = "uniform",
        hybrid_weight: float = 0.001,
        width: int = 512,
        num_blocks: int = 3,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        for name, value, options in (("parameterization", parameterization, ("eps", "levels")),
                                     ("variance", variance, ("fixed", "learned")), ("loss", loss, ("simple", "hybrid")),
                                     ("timestep_sampling", timestep_sampling, ("uniform", "importance"))):
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")
        if loss == "simple" and (variance == "learned" or timestep_sampling == "importance"):
            raise ValueError("learned variances and importance-sampled steps are trained through L_vlb: "
                             "pass loss='hybrid'")
        sizes = (("input_dim", input_dim, 1), ("num_levels", num_levels, 2), ("timesteps", timesteps, 2))
        for name, value, low in sizes:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.input_dim, self.num_levels, self.num_timesteps = input_dim, num_levels, timesteps
        self.parameterization, self.variance, self.loss = parameterization, variance, loss
        self.timestep_sampling, self.hybrid_weight = timestep_sampling, hybrid_weight
        self.schedule, self.event_shape = schedule, (input_dim,)
        self.chain = Chain.from_betas(noise_schedule(schedule, timesteps))
        self.register_buffer("levels", torch.linspace(-1.0, 1.0, num_levels), persistent=False)
        outputs = input_dim * (num_levels if parameterization == "levels" else 1) + input_dim * (variance == "learned")
        self.net = Denoiser(input_dim, outputs, width, num_blocks, dropout=dropout)

    def check_data(self, x: torch.Tensor) -> None:
        """Reject data the discrete decoder cannot score (shape, non-finite, values off ``0..num_levels-1``)."""
        check_tensor(x, "x", event_shape=self.event_shape)
        check_integer_levels(x, self.num_levels)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Integer levels ``(N, D)`` mapped onto ``[-1, 1]``."""
        return x * (2.0 / (self.num_levels - 1)) - 1.0

    def predict(self, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The network's reading of ``x_t`` (shape ``(N, D)``) at 0-based steps ``t`` (shape ``(N,)``):
        the prediction of ``x_0`` clipped to ``[-1, 1]``, of the noise (unclipped), both ``(N, D)``, and
        the variance interpolation fraction in (0, 1) (``None`` for fixed variances)."""
        out = self.net(xt, t)
        a = self.chain.at("alpha_bar", t, xt)
        fraction = torch.sigmoid(out[:, -self.input_dim:]) if self.variance == "learned" else None
        if self.parameterization == "eps":
            eps = out[:, : self.input_dim]
            return ((xt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1), eps, fraction
        logits = out[:, : self.input_dim * self.num_levels].unflatten(-1, (self.input_dim, self.num_levels))
        levels = self.levels.to(xt.dtype)
        likelihood = -(xt[..., None] - a[..., None].sqrt() * levels) ** 2 / (2 * (1 - a[..., None]))
        x0 = torch.softmax(logits + likelihood, dim=-1) @ levels
        return x0, (xt - a.sqrt() * x0) / (1 - a).sqrt(), fraction

    def reverse(self, xt: torch.Tensor, i: torch.Tensor, chain: Chain, t: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``i`` of ``chain`` backwards from ``x_t``: mean and log-variance of ``p(x_{i-1} | x_i)``
        and the ``x_0`` prediction, each ``(N, D)``; ``t`` are the steps' indices in the full chain
        (default ``i``)."""
        x0, _, fraction = self.predict(xt, i if t is None else t)
        return chain.posterior_mean(x0, xt, i), chain.reverse_log_variance(i, fraction, xt), x0

    def decoder(self, mean: torch.Tensor, log_variance: torch.Tensor) -> dist.Distribution:
        """``p(x | x_1)``: discretized Gaussian over the levels with the last step's mean and log-variance
        (shape ``(N, D)``, in ``[-1, 1]`` units); event ``(D,)``."""
        half_span = (self.num_levels - 1) / 2
        return DiscretizedGaussian((mean + 1) * half_span, (0.5 * log_variance).exp() * half_span,
                                   self.num_levels).to_event(1)

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``x_T ~ N(0, I)``, then the reverse chain down to ``x_1`` and the discrete decoder at site ``"x"``."""
        size = x.shape[0] if x is not None else n
        with data_plate(x, n):
            zeros = torch.zeros(size, self.input_dim, dtype=self.dtype, device=self.device)
            xt = pyro.sample(latent_site(self.num_timesteps), dist.Normal(zeros, 1.0).to_event(1))
            for t in range(self.num_timesteps, 0, -1):
                mean, log_variance, _ = self.reverse(xt, torch.full((size,), t - 1, device=xt.device), self.chain)
                if t == 1:
                    return pyro.sample(X, self.decoder(mean, log_variance), obs=x)
                xt = pyro.sample(latent_site(t - 1), dist.Normal(mean, (0.5 * log_variance).exp()).to_event(1))

    def guide(self, x: torch.Tensor | None = None, n: int | None = None) -> None:
        """The forward chain ``q(x_t | x_{t-1})``, ``t = 1..T``, from ``x_0 = x`` on ``[-1, 1]``; empty without x."""
        if x is None:
            return
        with data_plate(x, n):
            xt = self.to_unit(x)
            for t, beta in enumerate(self.chain.beta.to(xt.dtype), start=1):
                xt = pyro.sample(latent_site(t), dist.Normal((1 - beta).sqrt() * xt, beta.sqrt()).to_event(1))

    def step_terms(self, x: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, mean: torch.Tensor,
                   log_variance: torch.Tensor) -> torch.Tensor:
        """The bound's term of step ``t`` (0-based, shape ``(N,)``) in nats, shape ``(N,)``: the decoder's
        ``-log p(x | x_1)`` at ``t = 0``, else ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` with the
        reverse step's ``mean`` and ``log_variance`` (``(N, D)``); ``x`` are the integer data."""
        first = t == 0
        true_mean = self.chain.posterior_mean(self.to_unit(x), xt, t)
        true_scale = torch.where(first[:, None], 1.0, self.chain.at("posterior_variance", t, xt).sqrt())
        kl = kl_divergence(dist.Normal(true_mean, true_scale), dist.Normal(mean, (0.5 * log_variance).exp()))
        nll = -self.decoder(mean, log_variance).log_prob(x)
        return torch.where(first, nll, kl.sum(-1))

    def prior_term(self, x: torch.Tensor) -> torch.Tensor:
        """``KL(q(x_T | x_0) || N(0, I))`` in nats for integer data ``x`` (``(N, D)``), shape ``(N,)``."""
        a = self.chain.alpha_bar[-1].to(x.dtype)
        q = dist.Normal(a.sqrt() * self.to_unit(x), (1 - a).sqrt())
        return kl_divergence(q, dist.Normal(0.0, 1.0)).sum(-1)

    def training_loss(self, x: torch.Tensor, t: torch.Tensor, vlb_weight: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training objective at steps ``t`` (0-based, ``(N,)``) for integer data ``x`` (``(N, D)``).

        Returns ``(loss, terms)``, both ``(N,)``: ``loss`` per example (``L_simple``, the mean squared
        noise error per pixel, plus ``hybrid_weight * vlb_weight * L_t`` with the mean detached for the
        hybrid loss, ``vlb_weight`` the importance weight ``1 / (T p_t)``, default 1), and ``terms``,
        the bound's ``L_t`` in nats (detached) for the engine's importance-sampling history.
        """
        noise = torch.randn_like(x)
        xt = self.chain.diffuse(self.to_unit(x), t, noise)
        x0, eps, fraction = self.predict(xt, t)
        simple = (noise - eps).pow(2).mean(-1)
        mean = self.chain.posterior_mean(x0, xt, t)
        log_variance = self.chain.reverse_log_variance(t, fraction, xt)
        if self.loss == "simple":
            with torch.no_grad():
                return simple, self.step_terms(x, xt, t, mean, log_variance)
        terms = self.step_terms(x, xt, t, mean.detach(), log_variance)
        weight = 1.0 if vlb_weight is None else vlb_weight
        return simple + self.hybrid_weight * weight * terms, terms.detach()

    def bound_terms(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The bound's terms ``L_t`` (nats, shape ``(N,)``) of integer data ``x`` (``(N, D)``) at steps ``t``
        (0-based, ``(N,)``), each at a fresh draw of ``x_t ~ q(x_t | x_0)``."""
        xt = self.chain.diffuse(self.to_unit(x), t, torch.randn_like(x))
        mean, log_variance, _ = self.reverse(xt, t, self.chain)
        return self.step_terms(x, xt, t, mean, log_variance)

    @torch.no_grad()
    def evidence_lower_bound(self, x: torch.Tensor, num_samples: int = 1, **ctx: Any) -> torch.Tensor:
        """Lower bound on ``log P(x)`` per example in nats, shape ``(N,)``, for integer data ``x`` ``(N, D)``:
        minus the prior KL and the sum over all ``T`` steps of the analytic terms (`step_terms`), each
        at its own draw of ``x_t ~ q(x_t | x_0)``, averaged over ``num_samples`` such draws."""
        n, steps = x.shape[0], self.num_timesteps
        total = torch.zeros(n, dtype=torch.float64, device=x.device)
        pairs = torch.arange(n * steps, device=x.device)
        for _ in range(num_samples):
            for chunk in pairs.split(ROWS_PER_PASS):
                rows = chunk // steps
                total.index_add_(0, rows, self.bound_terms(x[rows], chunk % steps).double())
        return -(self.prior_term(x).double() + total / num_samples)

    def sample_images(self, n: int, steps: int | None = None, method: SamplingMethod = "ancestral") -> torch.Tensor:
        """``n`` images ``(n, D)`` of integer levels by ``steps`` reverse steps (default ``T``): ancestral
        (respaced) or deterministic DDIM; see `ppl_dgm.models.diffusion.sampling.sample_images`."""
        return sample_images(self, n, steps, method)
