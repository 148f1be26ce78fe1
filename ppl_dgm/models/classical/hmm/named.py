"""hmmlearn's named HMM classes (``GaussianHMM``, ``CategoricalHMM``, ``GMMHMM``, ``PoissonHMM``) on
the shared `HMM`: exactly hmmlearn 0.3.3's constructor arguments (names, order, defaults), then
keyword-only ``posterior``, ``device`` and ``dtype``, so that sklearn's ``clone``, ``get_params`` and
grid searches see hmmlearn's parameters and messages name hmmlearn's class."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ppl_dgm.infer.guides import GuideKind
from ppl_dgm.models.classical import gaussian
from ppl_dgm.models.classical.hmm.estimator import HMM
from ppl_dgm.models.registry import register_model


@register_model("gaussian_hmm")
class GaussianHMM(HMM):
    """Hidden Markov model with Gaussian emissions; hmmlearn's ``GaussianHMM`` (Rabiner 1989, "A
    tutorial on hidden Markov models and selected applications in speech recognition", Proc. IEEE
    77(2)) with Baum-Welch in torch, and the Pyro story of `HMM` (``emission="gaussian"``).

    Args:
        n_components ... implementation: hmmlearn 0.3.3's ``GaussianHMM`` arguments, same meaning.
        posterior: the guide used by :func:`ppl_dgm.fit` with ``engine="svi"`` (``"map"`` or ``"normal"``).
        device, dtype: where and in which floating dtype the state lives and EM runs.
    """

    def __init__(
        self,
        n_components: int = 1,
        covariance_type: gaussian.CovarianceType = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0,
        means_weight: Any = 0,
        covars_prior: Any = 1e-2,
        covars_weight: Any = 1,
        algorithm: Literal["viterbi", "map"] = "viterbi",
        random_state: int | np.random.RandomState | None = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmc",
        init_params: str = "stmc",
        implementation: Literal["log", "scaling"] = "log",
        *,
        posterior: GuideKind = "map",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(
            n_components, emission="gaussian", covariance_type=covariance_type, min_covar=min_covar,
            startprob_prior=startprob_prior, transmat_prior=transmat_prior, means_prior=means_prior,
            means_weight=means_weight, covars_prior=covars_prior, covars_weight=covars_weight,
            algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
            params=params, init_params=init_params, implementation=implementation, posterior=posterior,
            device=device, dtype=dtype)


@register_model("categorical_hmm")
class CategoricalHMM(HMM):
    """Hidden Markov model with categorical emissions (symbol ids ``(n_samples, 1)``); hmmlearn's
    ``CategoricalHMM`` (Rabiner 1989, Proc. IEEE 77(2)) with Baum-Welch in torch, and the Pyro story
    of `HMM` (``emission="categorical"``).

    Args:
        n_components ... implementation: hmmlearn 0.3.3's ``CategoricalHMM`` arguments, same meaning.
        posterior: the guide used by :func:`ppl_dgm.fit` with ``engine="svi"`` (``"map"`` or ``"normal"``).
        device, dtype: where and in which floating dtype the state lives and EM runs.
    """

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        *,
        emissionprob_prior: Any = 1.0,
        n_features: int | None = None,
        algorithm: Literal["viterbi", "map"] = "viterbi",
        random_state: int | np.random.RandomState | None = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "ste",
        init_params: str = "ste",
        implementation: Literal["log", "scaling"] = "log",
        posterior: GuideKind = "map",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(
            n_components, emission="categorical", startprob_prior=startprob_prior, transmat_prior=transmat_prior,
            emissionprob_prior=emissionprob_prior, n_features=n_features, algorithm=algorithm,
            random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose, params=params,
            init_params=init_params, implementation=implementation, posterior=posterior, device=device, dtype=dtype)


@register_model("gmm_hmm")
class GMMHMM(HMM):
    """Hidden Markov model whose states emit Gaussian mixtures of ``n_mix`` components; hmmlearn's
    ``GMMHMM`` (Rabiner 1989, Proc. IEEE 77(2); Juang, Levinson & Sondhi 1986, "Maximum likelihood
    estimation for multivariate mixture observations of Markov chains", IEEE Trans. Inf. Theory 32(2))
    with Baum-Welch in torch, and the Pyro story of `HMM` (``emission="gmm"``). ``means_`` is
    ``(n_components, n_mix, n_features)``, ``weights_`` ``(n_components, n_mix)``, ``covars_`` in
    GMMHMM's own shapes (e.g. ``(n_components, n_mix, n_features)`` for ``"diag"``).

    Args:
        n_components ... implementation: hmmlearn 0.3.3's ``GMMHMM`` arguments, same meaning.
        posterior: the guide used by :func:`ppl_dgm.fit` with ``engine="svi"`` (``"map"`` or ``"normal"``).
        device, dtype: where and in which floating dtype the state lives and EM runs.
    """

    def __init__(
        self,
        n_components: int = 1,
        n_mix: int = 1,
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        weights_prior: Any = 1.0,
        means_prior: Any = 0.0,
        means_weight: Any = 0.0,
        covars_prior: Any = None,
        covars_weight: Any = None,
        algorithm: Literal["viterbi", "map"] = "viterbi",
        covariance_type: gaussian.CovarianceType = "diag",
        random_state: int | np.random.RandomState | None = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmcw",
        init_params: str = "stmcw",
        implementation: Literal["log", "scaling"] = "log",
        *,
        posterior: GuideKind = "map",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(
            n_components, emission="gmm", n_mix=n_mix, min_covar=min_covar, startprob_prior=startprob_prior,
            transmat_prior=transmat_prior, weights_prior=weights_prior, means_prior=means_prior,
            means_weight=means_weight, covars_prior=covars_prior, covars_weight=covars_weight, algorithm=algorithm,
            covariance_type=covariance_type, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
            params=params, init_params=init_params, implementation=implementation, posterior=posterior,
            device=device, dtype=dtype)


@register_model("poisson_hmm")
class PoissonHMM(HMM):
    """Hidden Markov model whose states emit independent Poisson counts (``lambdas_``
    ``(n_components, n_features)``); hmmlearn's ``PoissonHMM`` (Rabiner 1989, Proc. IEEE 77(2)) with
    Baum-Welch in torch, and the Pyro story of `HMM` (``emission="poisson"``).

    Args:
        n_components ... implementation: hmmlearn 0.3.3's ``PoissonHMM`` arguments, same meaning.
        posterior: the guide used by :func:`ppl_dgm.fit` with ``engine="svi"`` (``"map"`` or ``"normal"``).
        device, dtype: where and in which floating dtype the state lives and EM runs.
    """

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        lambdas_prior: Any = 0.0,
        lambdas_weight: Any = 0.0,
        algorithm: Literal["viterbi", "map"] = "viterbi",
        random_state: int | np.random.RandomState | None = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stl",
        init_params: str = "stl",
        implementation: Literal["log", "scaling"] = "log",
        *,
        posterior: GuideKind = "map",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(
            n_components, emission="poisson", startprob_prior=startprob_prior, transmat_prior=transmat_prior,
            lambdas_prior=lambdas_prior, lambdas_weight=lambdas_weight, algorithm=algorithm,
            random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose, params=params,
            init_params=init_params, implementation=implementation, posterior=posterior, device=device, dtype=dtype)
