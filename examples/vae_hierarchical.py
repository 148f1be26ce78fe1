"""A ladder VAE on scikit-learn's 8x8 digits: fit, importance-weighted test NLL, samples, KL and active units per layer.

References:
    Sønderby, Raiko, Maaløe, Sønderby & Winther (2016), Ladder Variational Autoencoders, NeurIPS.
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR (active units).

    python examples/vae_hierarchical.py --out docs/images/vae_family/hierarchical --no-progress
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402

import ppl_dgm  # noqa: E402
from ppl_dgm.datasets import load_dataset  # noqa: E402
from ppl_dgm.evaluation.latents import ACTIVITY_THRESHOLD  # noqa: E402
from ppl_dgm.models.vae.ladder import HierarchicalVAE  # noqa: E402


@torch.no_grad()
def figure(model: HierarchicalVAE, test_x: torch.Tensor, path: Path, seed: int) -> dict[str, list]:
    """Draws from the model (the mean of ``p(x | z_1)`` at ``z ~ p(z)``, as pixel noise hides the shapes) beside
    the KL per latent dimension of each layer (test split); returns the per-layer figures."""
    torch.manual_seed(seed)
    story = poutine.trace(model.model).get_trace(n=64)
    images = torch.nn.functional.pad(model.head.mean(story.nodes["x"]["fn"]).reshape(64, 8, 8), (1, 1, 1, 1))
    samples = images.reshape(8, 8, 10, 10).permute(0, 2, 1, 3).reshape(80, 80)  # an 8 x 8 mosaic, 1-pixel margins
    kl = model.kl_per_dim(test_x, num_samples=64).mean(0)
    means = model.layer_means(test_x, num_samples=64)
    active = [int((m.var(0) > ACTIVITY_THRESHOLD).sum()) for m in means]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    left.imshow(samples.cpu().numpy(), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
    left.set(title="E[x | z1], z ~ p(z)", xticks=[], yticks=[])
    start = 0
    for i, (k, part) in enumerate(zip(model.latent_dims, kl.split(model.latent_dims), strict=True)):
        right.bar(range(start, start + k), part.cpu().numpy(), color=f"C{i}",
                  label=f"z{i + 1}: KL {float(part.sum()):.2f} nats, {active[i]}/{k} active")
        start += k + 1
    right.set(yscale="log", xlabel="latent dimension (z1 first)", ylabel="KL(q || p) per dimension (nats)",
              title="KL per dimension and layer, test split")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    layers = kl.split(model.latent_dims)
    return {"kl_per_layer_nats": [float(p.sum()) for p in layers], "active_units_per_layer": active,
            "kl_per_dim_nats": kl.tolist()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--likelihood", default="discretized_logistic",
                        choices=["categorical", "gaussian", "discretized_logistic"])
    parser.add_argument("--latent-dims", default="16,8", help="layer sizes, bottom (z1) first")
    parser.add_argument("--kl-warmup", type=int, default=1000, help="gradient steps of KL warm-up (0: none)")
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--num-particles", type=int, default=None, help="samples per example in the objective")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_hierarchical")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = HierarchicalVAE(latent_dims=[int(k) for k in args.latent_dims.split(",")], likelihood=args.likelihood,
                            kl_warmup=args.kl_warmup)
    start = time.perf_counter()
    result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs, objective=args.objective,
                         num_particles=args.num_particles, patience=50, seed=args.seed, device=args.device,
                         progress=not args.no_progress)
    seconds = time.perf_counter() - start
    test = ppl_dgm.log_likelihood(model, splits["test"].x, num_samples=args.num_samples, seed=args.seed)
    out = Path(args.out)
    layers = figure(model, splits["test"].x, out / "samples_and_kl.png", args.seed)
    numbers = {"test_nll": test.nll, "test_nll_stderr": test.stderr, "neg_elbo": -test.elbo_mean,
               "num_samples": test.num_samples, "best_epoch": result.best_epoch, "fit_seconds": seconds,
               "options": vars(args), **layers}
    (out / "hierarchical.json").write_text(json.dumps(numbers, indent=1))
    print(f"KL per layer (z1 first) {', '.join(f'{v:.2f}' for v in layers['kl_per_layer_nats'])} nats; "
          f"active units {layers['active_units_per_layer']}; figure and numbers in {out}")
    print(f"test NLL {test.nll:.2f} ± {test.stderr:.2f} nats/image (IW {test.num_samples}), "
          f"-ELBO {-test.elbo_mean:.2f}, best epoch {result.best_epoch + 1}, fit {seconds:.0f} s")
    return numbers


if __name__ == "__main__":
    main()
