"""The Pyro story of the HMM: hidden states summed out by ``DiscreteHMM``, padded sequences
masked, and the exact per-sequence marginal for ArviZ."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ppl_dgm.core import X as X_SITE
from ppl_dgm.core import data_plate
from ppl_dgm.models import gaussian
from ppl_dgm.models import hmm_emissions as emissions
from ppl_dgm.models import hmm_inference as kernels

ROWS_PER_PASS = 2**22  # elements of the (draws, N, T, K, D) emission tensor evaluated at once in log_prob_at


class HMMStory:
    """The `HMM`'s generative story and `GenerativeModel` methods (mixed into `HMM`)."""

    def _check_sequences(self, x: torch.Tensor) -> torch.Tensor:
        from ppl_dgm.validation import check_integer_levels, check_tensor

        check_tensor(x, "x")
        width = 1 if self.emission == "categorical" else self.n_features
        if x.dim() != 3 or (width is not None and x.shape[2] != width):
            raise ValueError(f"x must hold padded sequences of shape (N, T, {width or 'D'}), got {tuple(x.shape)}")
        if self.emission == "categorical":
            check_integer_levels(x, self.n_features or int(x.max()) + 1)
        return x.to(self.device, self.dtype)

    def check_data(self, x: torch.Tensor) -> None:
        self._check_sequences(x)

    def _mask(self, lengths: torch.Tensor | None, n: int, steps: int) -> torch.Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths, device=self.device)
        if lengths.shape != (n,) or bool((lengths < 1).any()) or bool((lengths > steps).any()):
            raise ValueError(f"lengths must hold {n} integers in 1..{steps}, got {lengths.tolist()}")
        return torch.arange(steps, device=self.device) < lengths.unsqueeze(-1)

    def log_prob(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Exact marginal ``log p(x_n)`` of each padded sequence, hidden states summed out (nats), ``(N,)``."""
        x = self._check_sequences(x)
        if torch.is_grad_enabled():
            state = self._current()
            sites = {name: value.unsqueeze(0) for name, value in state.items()}
            return self._log_likelihood_at(x, sites, lengths)[0]
        n, steps = x.shape[:2]
        mask = self._mask(lengths, n, steps)
        seq_lengths = [steps] * n if mask is None else mask.sum(1).tolist()
        state = self._current()
        layout = kernels.make_layout(seq_lengths, self.device, n_states=self.n_components)
        rows = x[mask] if mask is not None else x.reshape(-1, x.shape[-1])
        rows = rows[:, 0].long() if self.emission == "categorical" else rows
        log_frame = self._log_frame(self._prepare(rows, layout), state).view(*layout.mask.shape, -1)
        result = kernels.forward_backward(state["startprob"], state["transmat"], log_frame, layout, posteriors=False)
        return result.log_likelihood

    def _log_likelihood_at(self, x: torch.Tensor, params: dict[str, torch.Tensor],
                           lengths: torch.Tensor | None) -> torch.Tensor:
        """``(S, N)`` marginal log-likelihoods under ``S`` parameter sets (hmmlearn-shaped, leading ``S``)."""
        n, steps = x.shape[:2]
        mask = self._mask(lengths, n, steps)
        if self.emission == "categorical":
            log_emission = params["emissionprob"].log().transpose(-1, -2)  # (S, F, K)
            log_frame = log_emission[:, x[..., 0].long()]  # (S, N, T, K)
        else:
            means, covars = params["means"], params["covars"]
            k, d = means.shape[-2:]
            if self.covariance_type in ("diag", "spherical"):
                var = covars if self.covariance_type == "diag" else covars.unsqueeze(-1).expand(*means.shape)
                obs = dist.Normal(means[:, None, None], var.sqrt()[:, None, None]).to_event(1)
            else:
                full = covars if self.covariance_type == "full" else covars.unsqueeze(-3).expand(-1, k, d, d)
                tril = torch.linalg.cholesky(full)
                obs = dist.MultivariateNormal(means[:, None, None], scale_tril=tril[:, None, None])
            log_frame = obs.log_prob(x.unsqueeze(-2))
        return kernels.forward_log_likelihood(params["startprob"].log(), params["transmat"].log(), log_frame, mask)

    def log_prob_at(self, x: torch.Tensor, sites: dict[str, torch.Tensor],
                    lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Marginal ``log p(x_n | params)`` for a batch of parameter draws: ``(S, N)`` from sites ``(S, ...)``."""
        x = x.to(self.device, self.dtype)
        draws = next(iter(sites.values())).shape[0]
        per_pass = max(1, ROWS_PER_PASS // max(1, x.numel() * self.n_components))
        parts = []
        for start in range(0, draws, per_pass):
            part = {name: value[start : start + per_pass] for name, value in sites.items()}
            parts.append(self._log_likelihood_at(x, self._state_from_sites(part), lengths))
        return torch.cat(parts)

    @property
    def _story_buffers(self) -> tuple[str, ...]:
        return ("max_length", "prior_mean", "prior_spread") if self.emission == "gaussian" else ("max_length",)

    def _set_prior(self, X: torch.Tensor) -> None:
        if self.emission == "gaussian":  # categorical emissions have flat Dirichlet priors
            super()._set_prior(X)

    def _story_rows(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The steps of the padded sequences ``x`` (padding left out) as rows for EM."""
        x = self._check_sequences(x)
        mask = self._mask(lengths, x.shape[0], x.shape[1])
        return self._check_X(x[mask] if mask is not None else x.reshape(-1, x.shape[-1]), fitting=True)

    def _initialize_story(self, rows: torch.Tensor, x: torch.Tensor) -> None:
        if not self._is_fitted():
            if rows.shape[0] < self.n_components:
                raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                                 f"{self.n_components}, n_samples = {rows.shape[0]}")
            self._init(rows)
        self._check()
        self._finish_fit(rows, x.shape[1])

    def _sites_from_state(self) -> dict[str, torch.Tensor]:
        """The story's site values at the EM state (probabilities floored away from zero, so that the
        guide's unconstrained parameters stay finite)."""
        floor = torch.finfo(self.dtype).tiny ** 0.5
        sites = {}
        for name in ("startprob", "transmat", "emissionprob"):
            if name in self._state_names:
                sites[name] = emissions.normalize_rows(self._buffers[name].clamp_min(floor))
        if self.emission == "gaussian":
            sites["means"] = self.means
            covars = self.covars  # as the densities use them: variances floored, singular matrices jittered
            if self.covariance_type in ("full", "tied"):
                chol = emissions.cholesky(covars)
                covars = chol @ chol.transpose(-1, -2)
            else:
                covars = covars.clamp_min(torch.finfo(torch.float64).tiny)
            sites.update(gaussian.sites_from_covariances(covars, self.covariance_type))
        return sites

    def _state_from_sites(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """EM's parameters (covariances in hmmlearn's shapes) at site values (leading batch dims allowed)."""
        values = {"startprob": sites["startprob"], "transmat": sites["transmat"]}
        if self.emission == "categorical":
            values["emissionprob"] = sites["emissionprob"]
        else:
            values["means"] = sites["means"]
            values["covars"] = gaussian.covariances_from_sites(sites, self.covariance_type)
        return values

    def model(self, x: torch.Tensor | None = None, n: int | None = None,
              lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The story; global parameters are sample sites, the hidden states are summed out by ``DiscreteHMM``."""
        self._ensure_initialized(x, lengths=lengths)
        k, dtype, device = self.n_components, self.dtype, self.device
        ones = torch.ones(k, dtype=dtype, device=device)
        startprob = pyro.sample("startprob", dist.Dirichlet(ones))
        transmat = pyro.sample("transmat", dist.Dirichlet(ones.expand(k, k)).to_event(1))
        if self.emission == "categorical":
            emissionprob = pyro.sample("emissionprob", dist.Dirichlet(
                torch.ones(k, int(self.n_features), dtype=dtype, device=device)).to_event(1))
            obs_dist = dist.Categorical(probs=emissionprob.unsqueeze(-2)).to_event(1)
        else:
            obs_dist = self._gaussian_story(k, int(self.n_features))
        steps = x.shape[1] if x is not None else (int(lengths.max()) if lengths is not None else int(self.max_length))
        trans_logits = torch.cat([startprob.log().expand(1, k, k), transmat.log().expand(steps - 1, k, k)])
        if x is not None:
            x = x.to(device, dtype)
            mask = self._mask(lengths, x.shape[0], steps)
            if mask is not None:
                obs_dist = obs_dist.expand((x.shape[0], steps, k)).mask(mask.unsqueeze(-1))
        with data_plate(x, n):
            hmm = dist.DiscreteHMM(torch.zeros(k, dtype=dtype, device=device), trans_logits, obs_dist, duration=steps)
            return pyro.sample(X_SITE, hmm, obs=x)

    def _gaussian_story(self, k: int, d: int) -> dist.Distribution:
        sites = gaussian.sample_component_sites(self.covariance_type, k, self.prior_mean, self.prior_spread)
        if self.covariance_type in ("diag", "spherical"):
            scales = sites["scales"] if self.covariance_type == "diag" else sites["scales"].unsqueeze(-1).expand(k, d)
            return dist.Normal(sites["means"], scales).to_event(1)
        tril = gaussian.scale_tril_from_sites(sites, self.covariance_type, d)
        return dist.MultivariateNormal(sites["means"], scale_tril=tril.expand(k, d, d))
