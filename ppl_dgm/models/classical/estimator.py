"""Plumbing shared by the classical estimators: sklearn-style parameters, arrays in, arrays out."""

from __future__ import annotations

import inspect
import warnings
from time import perf_counter
from typing import Any, ClassVar

import numpy as np
import scipy.sparse
import torch
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from ppl_dgm.core import GenerativeModel
from ppl_dgm.infer.guides import GlobalGuide, GuideKind
from ppl_dgm.lazy import PROTOTYPE
from ppl_dgm.validation import check_device, check_tensor


def to_numpy(value: torch.Tensor) -> np.ndarray:
    """A CPU numpy copy of ``value`` (what sklearn-style attributes return)."""
    return value.detach().cpu().numpy()


def fitted_attribute(name: str, doc: str, *, settable: bool = False) -> property:
    """A fitted attribute (numpy): the state ``name`` of the estimator's own fit, or at the guide's
    point after SVI; ``settable``: assigning an array-like sets that state by hand (see `Estimator._assign`)."""
    getter = property(lambda self: to_numpy(self._current()[name]), doc=doc)
    return getter.setter(lambda self, value: self._assign(name, value)) if settable else getter


def _json_friendly(value: Any) -> Any:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, torch.device):
        return str(value)
    return value


def feature_names(X: Any) -> np.ndarray | None:
    """The column names of a data frame when all are strings (sklearn's ``feature_names_in_``), else ``None``."""
    columns = getattr(X, "columns", None)
    if columns is None or len(columns) == 0 or not all(isinstance(column, str) for column in columns):
        return None
    return np.asarray(columns, dtype=object)


def _is_float32(X: Any) -> bool:
    """Whether the array-like ``X`` holds float32 (numpy or torch)."""
    dtype = getattr(X, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype == torch.float32
    return dtype is not None and np.dtype(dtype) == np.float32


class EMProgress:
    """sklearn's verbose output of one EM initialization: ``verbose=1`` names the iterations (every
    ``interval``-th), ``verbose>=2`` adds the time lapse (s) and the change of the lower bound (nats)."""

    def __init__(self, verbose: int, interval: int, init: int) -> None:
        self.verbose, self.interval = verbose, interval
        self.start = self.last = perf_counter()
        if verbose:
            print(f"Initialization {init}")

    def iteration(self, n_iter: int, change: float) -> None:
        """After iteration ``n_iter`` (from 1), whose lower bound changed by ``change``."""
        if not self.verbose or n_iter % self.interval:
            return
        if self.verbose == 1:
            print(f"  Iteration {n_iter}")
        else:
            now = perf_counter()
            print(f"  Iteration {n_iter}\t time lapse {now - self.last:.5f}s\t ll change {change:.5f}")
            self.last = now

    def end(self, lower_bound: float, converged: bool) -> None:
        """After the last iteration of the initialization."""
        status = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {status}.")
        elif self.verbose >= 2:
            print(f"Initialization {status}. time lapse {perf_counter() - self.start:.5f}s\t lower bound "
                  f"{lower_bound:.5f}.")


class Estimator(GenerativeModel):
    """Base of estimators that mirror scikit-learn / hmmlearn: ``get_params``/``set_params``,
    array-like inputs checked and moved to ``device``/``dtype``, fitted state as buffers.

    Subclasses keep every constructor argument as an attribute of the same name (the sklearn
    convention), name their fitted tensors in ``_state_names`` and store them with
    ``_set_state`` (``_set_fitted`` for their own fit); a fresh instance loads a saved state of any
    shape.

    The Pyro story (``model``) reads the fitted state through its global sample sites. Subclasses
    map one to the other (``_sites_from_state``, ``_state_from_sites``); the rest is shared: the
    story initializes itself from data as the estimator's own fit would (``_ensure_initialized``),
    the `GlobalGuide` finds the global sites by tracing the story and starts at the fitted state,
    and the fitted attributes read ``_current()``: the estimator's own fit, or after SVI the
    guide's point (``uses_guide_point``).
    """

    default_engine: ClassVar[str] = "em"
    """The estimator's own EM or closed-form fit; ``ppl_dgm.fit(model, x, engine="svi")`` fits the story."""

    _state_names: tuple[str, ...] = ()

    def __init__(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> None:
        super().__init__()
        self._device = check_device(device)
        self._dtype = _as_dtype(dtype)
        self._placement = {"device": device, "dtype": dtype}  # as given, for get_params

    # the Pyro story: its data-dependent buffers, a guide over its global sites, and which state is current
    _story_buffers: tuple[str, ...] = ("prior_mean", "prior_spread")
    """Buffers the story reads besides the fitted state (made from data by `_ensure_initialized`)."""

    def _make_guide(self, posterior: GuideKind) -> None:
        """Create the `GlobalGuide` over the story's global sites (found by tracing `model`, started
        at the fitted state), and the flag saying whether the fitted attributes follow its point
        (after SVI) or the estimator's own fit (after EM)."""
        self.guide_params = GlobalGuide(self.model, posterior, init_loc_fn=self._init_loc)
        self.register_buffer("uses_guide_point", torch.zeros((), dtype=torch.bool))

    def _init_loc(self, site: dict) -> torch.Tensor:
        """Where the guide starts: the site's value at the fitted state (the prior median for a site
        the state does not determine)."""
        return init_to_value(site, values=self._sites_from_state(), fallback=init_to_median)

    def _set_fitted(self, **values: torch.Tensor) -> None:
        """Store the estimator's own fit (EM, closed form): the fitted attributes follow it again, and
        the guide (with the batch that first ran it) restarts from it at its next run."""
        self._set_state(**values)
        self.uses_guide_point.fill_(False)
        self.guide_params.reset()
        self._modules.pop(PROTOTYPE, None)

    def _materialize(self) -> None:
        """After SVI: copy the guide's point into the estimator's own state (which then is current)."""
        if bool(self.uses_guide_point):
            with torch.no_grad():
                self._set_fitted(**{k: v.detach() for k, v in self._current().items()})

    def _assign(self, name: str, value: Any) -> None:
        """Set the fitted state ``name`` by hand (as sklearn users set ``means_`` etc.), as an array of
        the estimator's dtype on its device; the other state stays as it is."""
        self._materialize()
        array = value.detach() if isinstance(value, torch.Tensor) else np.array(value, dtype=np.float64)
        self._set_fitted(**{name: torch.as_tensor(array, dtype=self.dtype, device=self.device)})

    def _sites_from_state(self) -> dict[str, torch.Tensor]:
        """The story's global site values at the estimator's own fitted state."""
        raise TypeError(f"{type(self).__name__} has no Pyro story")

    def _state_from_sites(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The fitted state (by ``_state_names``) at global site values (leading batch dims allowed)."""
        raise TypeError(f"{type(self).__name__} has no Pyro story")

    def _current(self) -> dict[str, torch.Tensor]:
        """The fitted state by name: the estimator's own fit, or the guide's point after SVI."""
        self._check_is_fitted()
        if bool(self.uses_guide_point):
            return self._state_from_sites(self.guide_params.points())
        return {name: self._buffers[name] for name in self._state_names}

    def point_estimate(self) -> dict[str, torch.Tensor]:
        """The story's global sites at the estimator's fitted state, or at the guide's point after SVI."""
        self._check_is_fitted()
        if bool(self.uses_guide_point):
            return self.guide_params.median()
        return self._sites_from_state()

    def _check_parameters(self) -> None:
        """Raise ``ValueError`` unless the constructor arguments are valid."""

    def _story_rows(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """The examples ``x`` as the estimator's own ``fit`` takes them, checked as it checks them."""
        return self._check_X(x, fitting=True)

    def _initialize_story(self, rows: torch.Tensor, x: torch.Tensor) -> None:
        """Unless fitted, the estimator's starting point from ``rows`` (its ``_initialize(rows,
        random_state)``, no iterations); then the story's priors centred on them."""
        if not self._is_fitted():
            self._initialize(rows, check_random_state(self.random_state))
        self._set_prior(rows)

    def _ensure_initialized(self, x: torch.Tensor | None, **ctx: Any) -> None:
        """Make the story runnable: unless fitted, initialize from ``x`` as the estimator's own fit
        would (no iterations); the guide then starts at that state when it first runs."""
        if self._is_fitted() and all(name in self._buffers for name in self._story_buffers):
            return
        if x is None:
            self._check_is_fitted()
            raise ValueError("the story needs data once: call fit, setup(x) or model(x) first")
        with torch.no_grad():
            self._check_parameters()
            self._initialize_story(self._story_rows(x, **ctx), x)

    def _set_prior(self, X: torch.Tensor) -> None:
        """Weakly informative priors of the story centred on the rows ``X`` (N, D): their mean and
        per-feature spread (floored at a thousandth of the largest)."""
        spread = X.std(0) if X.shape[0] > 1 else torch.ones_like(X[0])
        spread = spread.clamp_min(1e-3 * float(spread.max()) + 1e-12)
        self._set_state(prior_mean=X.mean(0), prior_spread=spread)

    def setup(self, x: torch.Tensor, **ctx: Any) -> None:
        """Before SVI/NUTS: initialize from ``x`` as the estimator's own fit would (no iterations),
        unless fitted; from then on the fitted attributes follow the guide's point."""
        self._ensure_initialized(x, **ctx)
        self.uses_guide_point.fill_(True)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None, **ctx: Any) -> dict[str, torch.Tensor]:
        """Point masses (MAP) or mean-field normals over the story's global sites; returns their values."""
        self._ensure_initialized(x, **ctx)
        return self.guide_params(x, n=n, **ctx)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is finite rows ``(N, D)`` of the fitted width."""
        check_tensor(x, "x", event_shape=self.event_shape or None)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")

    # sklearn's parameter protocol (what sklearn.base.clone and grid searches use)
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments, as sklearn estimators report them."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: self._placement[name] if name in self._placement else getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> Estimator:
        """Set constructor arguments by name; returns ``self``."""
        valid = self.get_params()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"invalid parameter {unknown[0]!r} for {type(self).__name__}; valid: {sorted(valid)}")
        check_device(params.get("device"))  # raise for a bad device or dtype before anything changed
        _as_dtype(params.get("dtype"))
        if "posterior" in params and hasattr(self, "guide_params"):  # a guide of the new kind, from the fitted state
            if self._is_fitted():
                self._materialize()
            self._make_guide(params["posterior"])  # raises for an unknown kind before anything changed
        for key, value in params.items():
            setattr(self, key, value)
            if key in self._placement:
                self._placement[key] = value
        return self

    @property
    def config(self) -> dict[str, Any]:  # type: ignore[override]
        """The current constructor arguments, JSON-friendly (arrays become lists)."""
        return {key: _json_friendly(value) for key, value in self.get_params().items()}

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        """Where the fitted state lives and the computations run."""
        return self._device

    @device.setter
    def device(self, value: str | torch.device | None) -> None:
        self.to(check_device(value))

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        """Floating dtype of the computations (float64 by default, as scikit-learn)."""
        return self._dtype

    @dtype.setter
    def dtype(self, value: str | torch.dtype | None) -> None:
        self.to(_as_dtype(value))

    def _apply(self, fn, recurse=True):  # keeps device and dtype in step with .to(), .double(), ...
        super()._apply(fn, recurse)
        probe = fn(torch.zeros((), dtype=self._dtype, device=self._device))
        self._device, self._dtype = probe.device, probe.dtype
        return self

    # fitted state
    def _set_state(self, **values: torch.Tensor) -> None:
        """Store fitted tensors as buffers (replacing any of another shape)."""
        for name, value in values.items():
            value = value.detach().to(self._device)
            if name in self._buffers and self._buffers[name].shape == value.shape:
                self._buffers[name].copy_(value)
            else:
                self.register_buffer(name, value.clone())

    def fit_data(self, x: torch.Tensor) -> Estimator:
        """Fit with the estimator's own algorithm (EM or closed form) on examples ``x`` shaped as
        the data sets yield them, ``(N, *event_shape)``; what ``ppl-dgm fit --engine em`` runs."""
        return self.fit(x)

    def fit_history(self) -> list[float]:
        """Mean log-likelihood per example (nats) after each iteration of the last ``fit``
        (one value for a closed-form fit); the CLI draws it as the training curve."""
        return list(getattr(self, "lower_bounds_", []))

    def _is_fitted(self) -> bool:
        return all(name in self._buffers for name in self._state_names)

    def _check_is_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )

    # array conversion
    def _follow_input_dtype(self, X: Any) -> None:
        """With ``dtype=None``, compute in float32 for float32 data and in float64 otherwise (as sklearn)."""
        if self._placement["dtype"] is None:
            self.to(torch.float32 if _is_float32(X) else torch.float64)

    def _check_feature_names(self, names: np.ndarray | None, fitting: bool = False) -> None:
        """Record the column names ``fit`` sees (`feature_names`); later warn or raise (sklearn's messages)
        when the columns differ from them."""
        fitted, estimator = getattr(self, "feature_names_in_", None), type(self).__name__
        if fitting:
            if names is not None:
                self.feature_names_in_ = names
            elif fitted is not None:
                del self.feature_names_in_
        elif fitted is None and names is not None:
            warnings.warn(f"X has feature names, but {estimator} was fitted without feature names", UserWarning,
                          stacklevel=4)
        elif fitted is not None and names is None:
            warnings.warn(f"X does not have valid feature names, but {estimator} was fitted with feature names",
                          UserWarning, stacklevel=4)
        elif fitted is not None and (len(fitted) != len(names) or (fitted != names).any()):
            raise ValueError("The feature names should match those that were passed during fit; pass the "
                             f"columns {list(fitted)} in that order.")

    def _as_tensor(self, X: Any, name: str = "X", *, ndim: int = 2, integer: bool = False) -> torch.Tensor:
        """Check an array-like of ``ndim`` dimensions and return it as a tensor on the model's device."""
        if isinstance(X, torch.Tensor):
            tensor = X.detach()
        else:
            if scipy.sparse.issparse(X):
                raise TypeError(f"Sparse data was passed for {name}, but dense data is required. Use '.toarray()' "
                                "to convert to a dense numpy array.")
            try:
                array = np.asarray(X)
                if array.dtype == object:  # numbers in an object array, as sklearn's check_array takes them
                    array = array.astype(np.float64)
            except (TypeError, ValueError) as error:
                raise TypeError(f"{name} must be an array-like of numbers: {error}") from None
            if np.iscomplexobj(array):
                raise ValueError(f"Complex data not supported in {name}; pass its real part or its modulus.")
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(array) if array.flags.writeable else array.copy())
        if tensor.dim() != ndim:
            how = (" Reshape your data either using array.reshape(-1, 1) if your data has a single feature or "
                   "array.reshape(1, -1) if it contains a single sample.") if ndim == 2 else ""
            raise ValueError(f"Expected {ndim}D array for {name}, got {tensor.dim()}D array of shape "
                             f"{tuple(tensor.shape)}.{how}")
        if tensor.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or infinity")
        if integer:
            if tensor.is_floating_point() and bool((tensor != tensor.round()).any()):
                raise ValueError(f"{name} must hold integer symbols, found non-integer values")
            if bool((tensor < 0).any()):
                raise ValueError(f"{name} must hold non-negative integer symbols, found negative values")
            return tensor.to(self._device, torch.long)
        return tensor.to(self._device, self._dtype)


def _as_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float64
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as float64 or float32, got {dtype!r}")
    return dtype
