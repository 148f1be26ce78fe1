"""Integer discrete flow (Hoogeboom et al., 2019): an exact discrete likelihood that can be entropy coded."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from ppl_dgm.core import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.models.flows.idf_base import DiscretizedLogisticMixture
from ppl_dgm.models.flows.idf_flow import IntegerFlow
from ppl_dgm.models.registry import register_model
from ppl_dgm.validation import check_tensor

_MIN_SCALE = 0.05  # lower bound on the base's logistic scales, in data units


class IntegerFlowDistribution(TorchDistribution):
    """The distribution of ``x = f^{-1}(z)``, ``z ~`` base, for an integer bijection ``f``: ``P(x) = P_base(f(x))``.

    Args:
        idf: the `IDF` whose flow and base it uses.
        num_examples: batch size ``N``; the event shape is ``(D,)``.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.integer, 1)
    has_rsample = False

    def __init__(self, idf: IDF, num_examples: int, validate_args=None) -> None:
        self.idf = idf
        super().__init__(torch.Size([num_examples]), torch.Size(idf.event_shape), validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log P(x)`` in nats, ``(N, D)`` integers -> ``(N,)``; gradients reach the flow straight through."""
        if self._validate_args:
            self._validate_sample(value)
        return self.idf.base().log_prob(self.idf.flow(value)).sum(-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """``f^{-1}(z)`` for ``z`` from the base: integers (float dtype), shape ``(*sample_shape, N, D)``; they may
        fall outside the range of the training data. The flow is inverted in evaluation mode (no dropout)."""
        with self.idf._deterministic():
            z = self.idf.base().sample((*sample_shape, *self.batch_shape))
            return self.idf.flow.inverse(z.reshape(-1, z.shape[-1])).reshape(z.shape)


@register_model("idf")
class IDF(GenerativeModel):
    """Integer discrete flow: ``z = f(x)`` with ``f`` a bijection of ``Z^D``, ``z ~`` a factorized mixture of
    discretized logistics, so ``log P(x) = log P_base(f(x))`` exactly (Hoogeboom, Peters, van den Berg and
    Welling, 2019, "Integer discrete flows and lossless compression", NeurIPS).

    ``f`` alternates fixed random permutations and additive couplings ``z_b = x_b + round(t(x_a))`` whose
    rounding passes gradients straight through. The model is a probability mass function on all of ``Z^D``:
    data need to be integers but not in ``0..num_levels-1``, and samples may fall outside that range.

    It implements the entropy-coding interface (``num_symbols``, ``to_symbols``, ``from_symbols``,
    ``coding_steps``, ``coding_log_probs``): the symbols are ``z - symbol_offset`` in ``0..num_symbols-1``,
    decoded in one step, with the base's tails beyond the alphabet folded into its first and last symbols.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        num_levels: the data's usual values are ``0..num_levels-1``; the couplings' networks see
            ``(x - c) / c`` with ``c = (num_levels - 1) / 2``, and the alphabet is centred on ``c``.
        num_couplings: number of couplings (each preceded by a permutation).
        num_parts: parts the coordinates are split into by each coupling; each part after the first is
            translated by a network of the parts before it (2: the usual halves).
            The defaults (12 couplings of 4 parts, two hidden layers of 128, dropout 0.5) suit the digits.
        hidden_dims: widths of the hidden layers of each coupling's translation network.
        num_components: logistics in the base's mixture, per dimension.
        activation: nonlinearity of the translation networks.
        dropout: dropout rate of the translation networks' hidden layers while fitting.
        num_symbols: alphabet size ``K`` of the entropy coder: latent values
            ``symbol_offset .. symbol_offset + K - 1`` can be coded, ``symbol_offset = floor(c) - K // 2``.
    """

    capabilities = Capabilities(likelihood="exact", data="discrete")

    def __init__(
        self,
        input_dim: int = 64,
        num_levels: int = 17,
        num_couplings: int = 12,
        num_parts: int = 4,
        hidden_dims: Sequence[int] = (128, 128),
        num_components: int = 5,
        activation: Literal["relu", "elu", "tanh", "gelu", "silu"] = "relu",
        dropout: float = 0.5,
        num_symbols: int = 256,
    ) -> None:
        super().__init__()
        for name, value, least in (("input_dim", input_dim, 2), ("num_levels", num_levels, 2),
                                   ("num_couplings", num_couplings, 1),
                                   ("num_parts", num_parts, 2), ("num_components", num_components, 1),
                                   ("num_symbols", num_symbols, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if num_parts > input_dim:
            raise ValueError(f"num_parts must be at most input_dim={input_dim}, got {num_parts}")
        self.input_dim, self.num_levels, self.num_symbols = input_dim, num_levels, num_symbols
        self.event_shape = (input_dim,)
        centre = (num_levels - 1) / 2
        self.symbol_offset = math.floor(centre) - num_symbols // 2
        self.flow = IntegerFlow(input_dim, num_couplings, num_parts, hidden_dims, centre, activation, dropout)
        spread = torch.linspace(0.0, num_levels - 1.0, num_components) if num_components > 1 else torch.tensor([centre])
        self.base_logits = nn.Parameter(torch.zeros(input_dim, num_components))
        self.base_loc = nn.Parameter(spread.expand(input_dim, num_components).clone())
        self.base_raw_scale = nn.Parameter(torch.zeros(input_dim, num_components))

    def base(self) -> DiscretizedLogisticMixture:
        """The factorized base distribution of ``z``: batch shape ``(D,)``, one mixture per dimension."""
        scale = F.softplus(self.base_raw_scale) + _MIN_SCALE
        return DiscretizedLogisticMixture(self.base_logits, self.base_loc, scale)

    def check_data(self, x: torch.Tensor) -> None:
        """Reject data the model cannot score: wrong shape, non-finite or non-integer values."""
        check_tensor(x, "x", event_shape=self.event_shape)
        if bool((x != torch.round(x)).any()):
            raise ValueError("IDF models integer-valued data, found non-integer values; quantize the data to "
                             "integers (e.g. torch.round) or use a continuous flow")

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``x ~ P(x) = P_base(f(x))`` for each example in plate ``"data"``; with ``x=None`` draws ``n``."""
        with data_plate(x, n):
            return pyro.sample(X, IntegerFlowDistribution(self, x.shape[0] if x is not None else n), obs=x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log P(x)`` per example in nats: ``(N, D)`` integers -> ``(N,)``."""
        self.check_data(x)
        return IntegerFlowDistribution(self, x.shape[0]).log_prob(x)

    @contextlib.contextmanager
    def _deterministic(self) -> Iterator[None]:
        """Evaluation mode (no dropout) and no gradients for the duration; the previous mode is restored."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def to_symbols(self, x: torch.Tensor) -> torch.Tensor:
        """Symbols ``f(x) - symbol_offset`` of integer data: ``(N, D)`` -> ``(N, D)`` long in ``0..num_symbols-1``.

        Raises:
            ValueError: some latent value falls outside the alphabet (names how many and where).
        """
        self.check_data(x)
        with self._deterministic():
            symbols = (self.flow(x.to(self.device, self.dtype)) - self.symbol_offset).long()
        outside = (symbols < 0) | (symbols >= self.num_symbols)
        if bool(outside.any()):
            rows = outside.any(-1).nonzero().flatten().tolist()
            low, high = self.symbol_offset, self.symbol_offset + self.num_symbols - 1
            raise ValueError(f"{int(outside.sum())} latent value(s) of example(s) {rows[:10]} fall outside the "
                             f"alphabet {low}..{high}; rebuild the model with a larger num_symbols to code them")
        return symbols

    def from_symbols(self, s: torch.Tensor) -> torch.Tensor:
        """Data ``f^{-1}(s + symbol_offset)`` of symbols: ``(N, D)`` long -> ``(N, D)`` integers, model's dtype."""
        with self._deterministic():
            return self.flow.inverse(s.to(self.device, self.dtype) + self.symbol_offset)

    def coding_steps(self) -> int:
        """Number of sequential decoding steps: 1 (the base is factorized given the symbols)."""
        return 1

    def coding_log_probs(self, s: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The dims decoded at ``step`` (all ``D`` at step 0) and their log-probabilities over the alphabet.

        Returns ``(dims (D,) long, log_probs (N, D, num_symbols))``; each row sums to one: the base's
        masses of the latent values, with its tails beyond the alphabet folded into the end symbols. They
        do not depend on ``s`` (only its batch size ``N`` is read).
        """
        if step != 0:
            raise ValueError(f"IDF decodes in one step (step 0), got step={step!r}")
        with self._deterministic():
            table = self.base().log_prob_table(self.symbol_offset, self.num_symbols)  # (D, K)
        dims = torch.arange(self.input_dim, device=table.device)
        return dims, table.expand(s.shape[0], *table.shape)
