"""A generative story of your own: a binomial factor model of the 8x8 digits.

The story, for each image::

    z ~ N(0, I_k)                                   (k = 8 latent factors)
    x_d | z ~ Binomial(16, sigmoid(W z + b)_d)      (d = 1..64 pixels)

A digit pixel takes the values 0..16, which is exactly the support of Binomial(16, p), so
the model puts its probability mass on the data as they are: no rescaling, no
dequantization. With a Gaussian likelihood instead of the binomial one this is
probabilistic PCA; with any exponential-family likelihood it is exponential-family PCA.
The guide is an amortized Gaussian ``q(z | x) = N(mu(x), diag sigma(x)^2)`` computed by a
small MLP, as in a variational autoencoder whose decoder is linear.

The class needs nothing but its story: ``ppl_dgm.fit``, ``ppl_dgm.log_likelihood``,
``model.sample`` and ``ppl_dgm.save`` / ``ppl_dgm.load`` work on it unchanged. It is
registered as ``"binomial_factor"``, so a checkpoint names it by that name and loads in any
process that has imported this module.

References:
    M. E. Tipping and C. M. Bishop. Probabilistic principal component analysis.
    Journal of the Royal Statistical Society B, 61(3):611-622, 1999.

    M. Collins, S. Dasgupta and R. E. Schapire. A generalization of principal components
    analysis to the exponential family. NIPS 14, 2001.

    D. P. Kingma and M. Welling. Auto-encoding variational Bayes. ICLR, 2014.

Run::

    python examples/custom_story.py [--epochs 2000] [--seed 0] [--out runs/custom_story] [--no-progress]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

import ppl_dgm
from ppl_dgm import Capabilities, GenerativeModel, X, Z, data_plate
from ppl_dgm.datasets import load_dataset
from ppl_dgm.nn import MLP
from ppl_dgm.plots import image_grid
from ppl_dgm.validation import check_integer_levels, check_tensor


# --8<-- [start:model]
@ppl_dgm.register_model("binomial_factor")
class BinomialFactorModel(GenerativeModel):
    """``z ~ N(0, I_k)``, ``x_d | z ~ Binomial(16, sigmoid(W z + b)_d)``; guide ``N(mu(x), sigma(x)^2)``.

    Args:
        latent_dim: number of factors ``k``.
        hidden_dims: widths of the hidden layers of the guide's MLP.
    """

    capabilities = Capabilities(likelihood="bound", data="discrete")
    event_shape = (64,)
    num_trials = 16  # pixel values 0..16 are the support of Binomial(16, p)

    def __init__(self, latent_dim: int = 8, hidden_dims: Sequence[int] = (128,)) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.loading = nn.Linear(latent_dim, 64)  # W (64 x k) and b (64)
        self.encoder = MLP(64, hidden_dims, 2 * latent_dim, activation="elu")
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def check_data(self, x: torch.Tensor) -> None:
        """Accept only tensors ``(N, 64)`` of integers in ``0..16``."""
        check_tensor(x, "x", event_shape=self.event_shape)
        check_integer_levels(x, self.num_trials + 1)

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """The story: a Gaussian factor ``z``, then 64 binomial pixels given ``z``."""
        with data_plate(x, n):
            z = pyro.sample(Z, dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            pixels = dist.Binomial(self.num_trials, logits=self.loading(z)).to_event(1)
            return pyro.sample(X, pixels, obs=x)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None) -> None:
        """``q(z | x) = N(mu(x), diag sigma(x)^2)``; without data, the prior."""
        with data_plate(x, n):
            if x is None:
                pyro.sample(Z, dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
                return
            loc, raw_scale = self.encoder(x / self.num_trials).chunk(2, dim=-1)
            pyro.sample(Z, dist.Normal(loc, F.softplus(raw_scale) + 1e-4).to_event(1))
# --8<-- [end:model]


def main(argv: list[str] | None = None) -> dict:
    """Fit the model on the digits, score it on the test split, save, reload and draw samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2000, help="maximum number of epochs (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/custom_story", help="output directory (default runs/custom_story)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    out = Path(args.out)

    train, val, test = (load_dataset("digits", split) for split in ("train", "val", "test"))
    pyro.set_rng_seed(args.seed)  # the initial weights
    model = BinomialFactorModel()

    # --8<-- [start:fit]
    result = ppl_dgm.fit(model, train.x, val=val.x, epochs=args.epochs, patience=50, lr=1e-2,
                         seed=args.seed, progress=not args.no_progress)
    ll = ppl_dgm.log_likelihood(model, test.x, num_samples=1000)
    # --8<-- [end:fit]
    print(f"fit: best validation -ELBO {result.best_val_loss:.2f} nats/image at epoch {result.best_epoch + 1} "
          f"({result.epochs_run} epochs, {result.seconds:.0f} s)")
    print(f"test NLL {ll.nll:.2f} ± {ll.stderr:.2f} nats/image ({ll.kind}, {ll.num_samples} importance samples), "
          f"-ELBO {-ll.elbo_mean:.2f} nats/image, {ll.bits_per_dim:.3f} bits/dim")

    # --8<-- [start:save]
    ppl_dgm.save(model, out / "checkpoint")
    reloaded = ppl_dgm.load(out / "checkpoint")
    again = ppl_dgm.log_likelihood(reloaded, test.x, num_samples=1000)
    # --8<-- [end:save]
    if not torch.equal(again.per_sample, ll.per_sample):
        raise SystemExit("the reloaded model scores the test set differently")
    print(f"saved to {out / 'checkpoint'}; the reloaded model gives the same test NLL ({again.nll:.2f} nats/image)")

    torch.manual_seed(args.seed)
    samples = model.sample(64)
    path = image_grid(samples, (8, 8), out / "samples.png", vmax=16, title="binomial factor model")
    print(f"wrote {path}")
    return {"fit": result, "test": ll.summary()}


if __name__ == "__main__":
    main()
