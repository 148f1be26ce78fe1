"""Adversarial training: a generator and a discriminator (or critic) updated in turn by their own optimizers."""

from __future__ import annotations

from typing import Any

import torch

from ppl_dgm.core import GenerativeModel, X
from ppl_dgm.infer.engine import Engine, register_engine
from ppl_dgm.infer.sample_validation import ValidatesBySamples
from ppl_dgm.sites import context_of

REQUIRED = ("generate", "discriminator_loss", "generator_loss", "generator_parameters", "discriminator_parameters")
"""Methods a model needs for this engine (see ``ppl_dgm.models.adversarial.AdversarialModel``)."""
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}
"""The model's ``optimizer_kind`` -> optimizer class (Adam with decoupled weight decay, or RMSProp)."""


@register_engine("adversarial")
class AdversarialEngine(ValidatesBySamples, Engine):
    """Alternating updates of a GAN's discriminator and generator, each with its own optimizer.

    Each step shows the discriminator the real minibatch and as many fresh generated images (with the
    batch's context, e.g. labels), takes one discriminator update, calls the model's
    ``after_discriminator_step`` (weight clipping), and every ``n_critic``-th step one generator update on
    new draws. Everything particular to a model comes from it, duck-typed: ``generate(n, **ctx)``,
    ``discriminator_loss(real, fake, **ctx)``, ``generator_loss(fake, **ctx)``, the two parameter groups,
    ``optimizer_kind`` (``"adam"``: AdamW, ``"rmsprop"``), ``optimizer_options`` (e.g. Adam's betas) and
    ``n_critic``. The figures of a step are the discriminator's loss (the training loss) and the
    generator's loss against the current discriminator (computed without an update on steps that take
    none). The validation figure is the Frechet distance of draws from the validation digits (see
    `ppl_dgm.infer.sample_validation`), so the best epoch's weights are kept; on other data there is none, and
    the fit runs all its epochs and keeps the last weights.

    Args:
        n_critic: discriminator updates per generator update (default: the model's ``n_critic``).
    """

    unit = "discriminator loss"
    """The model's own: nats for the cross-entropy GANs, critic units for the Wasserstein ones."""

    def __init__(self, model: GenerativeModel, *, n_critic: int | None = None, **common: Any) -> None:
        super().__init__(model, **common)
        missing = [name for name in REQUIRED if not callable(getattr(model, name, None))]
        if missing:
            raise TypeError(f"the adversarial engine needs a model with {', '.join(REQUIRED)}; {type(model).__name__} "
                            f"lacks {', '.join(missing)} (subclass ppl_dgm.models.adversarial.AdversarialModel)")
        n_critic = n_critic if n_critic is not None else getattr(model, "n_critic", 1)
        if not isinstance(n_critic, int) or isinstance(n_critic, bool) or n_critic < 1:
            raise ValueError(f"n_critic must be a positive integer, got {n_critic!r}")
        kind = getattr(model, "optimizer_kind", "adam")
        if kind not in OPTIMIZERS:
            raise ValueError(f"{type(model).__name__}.optimizer_kind must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {kind!r}")
        self.n_critic = n_critic
        self.steps = 0
        self.generator_optimizer: torch.optim.Optimizer | None = None
        self.discriminator_optimizer: torch.optim.Optimizer | None = None

    def prepare(self, first_batch: dict[str, torch.Tensor]) -> None:
        self.generator_params = list(self.model.generator_parameters())
        self.discriminator_params = list(self.model.discriminator_parameters())
        generator, discriminator = {id(p) for p in self.generator_params}, {id(p) for p in self.discriminator_params}
        if not self.generator_params or not self.discriminator_params or generator & discriminator:
            raise ValueError(f"{type(self.model).__name__}'s generator and discriminator parameters must be two "
                             "non-empty, disjoint groups")
        left_out = [name for name, p in self.model.named_parameters()
                    if p.requires_grad and id(p) not in generator | discriminator]
        if left_out:
            raise ValueError(f"parameters in neither the generator's nor the discriminator's group would never be "
                             f"fitted: {', '.join(left_out)}")
        optimizer = OPTIMIZERS[getattr(self.model, "optimizer_kind", "adam")]
        options = dict(getattr(self.model, "optimizer_options", {}))
        self.generator_optimizer = optimizer(self.generator_params, lr=self.lr, weight_decay=self.weight_decay,
                                             **options)
        self.discriminator_optimizer = optimizer(self.discriminator_params, lr=self.lr,
                                                 weight_decay=self.weight_decay, **options)

    def step(self, batch: dict[str, torch.Tensor], dataset_size: int) -> dict[str, float]:
        model, context = self.model, context_of(batch)
        real = batch[X]
        n = real.shape[0]
        with torch.no_grad():  # the discriminator's step needs no graph through the generator
            fake = model.generate(n, **context)
        discriminator = self.update(model.discriminator_loss(real, fake, **context), self.discriminator_optimizer,
                                    self.discriminator_params, "discriminator loss")
        after = getattr(model, "after_discriminator_step", None)
        if callable(after):
            after()
        self.steps += 1
        if self.steps % self.n_critic == 0:
            loss = model.generator_loss(model.generate(n, **context), **context)
            generator = self.update(loss, self.generator_optimizer, self.generator_params, "generator loss")
        else:
            with torch.no_grad():
                generator = float(model.generator_loss(fake, **context))
        return {"discriminator": discriminator, "generator": generator}

    def state_dict(self) -> dict[str, Any]:
        return {"generator_optimizer": self.generator_optimizer.state_dict(),
                "discriminator_optimizer": self.discriminator_optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self.steps = int(state["steps"])
