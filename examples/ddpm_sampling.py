"""DDPMs on the digits: the test bound of fitted models side by side, and sample quality against the number of
sampling steps for ancestral (respaced) and DDIM sampling, with the seconds per 1,000 samples.

Fit the models with the CLI first (see docs/models/ddpm.md for the options), then point this script at them:

    ppl-dgm fit ddpm --data digits --out runs/ddpm_plain ...
    ppl-dgm fit ddpm --data digits --out runs/ddpm_improved ...
    python examples/ddpm_sampling.py --model plain=runs/ddpm_plain --model improved=runs/ddpm_improved \
        --out docs/images/ddpm

References:
    Ho, Jain & Abbeel (2020), Denoising Diffusion Probabilistic Models, NeurIPS.
    Nichol & Dhariwal (2021), Improved Denoising Diffusion Probabilistic Models, ICML.
    Song, Meng & Ermon (2021), Denoising Diffusion Implicit Models, ICLR.
    Heusel et al. (2017), GANs Trained by a Two Time-Scale Update Rule ... (Frechet distance).
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

import ppl_dgm  # noqa: E402
from ppl_dgm import plots  # noqa: E402
from ppl_dgm.datasets import load_dataset  # noqa: E402
from ppl_dgm.evaluation.sample_quality import real_data_floor, sample_quality  # noqa: E402


def steps_curve(model, steps: list[int], method: str, reference: torch.Tensor, seed: int) -> list[dict[str, float]]:
    """Frechet distance (classifier features) of ``len(reference)`` samples and seconds per 1,000 samples, for each
    number of ``steps`` with ``method`` (``"ancestral"`` or ``"ddim"``)."""
    rows = []
    for k in steps:
        torch.manual_seed(seed)
        start = time.perf_counter()
        samples = model.sample_images(len(reference), steps=k, method=method)
        seconds = (time.perf_counter() - start) * 1000 / len(reference)
        quality = sample_quality(samples, reference, seed=seed)
        rows.append({"steps": k, "frechet_distance": quality.frechet_distance, "precision": quality.precision,
                     "recall": quality.recall, "seconds_per_1000": seconds})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                        help="a fitted DDPM (a directory written by ppl-dgm fit or ppl_dgm.save); repeatable")
    parser.add_argument("--steps", default="5,10,20,50,100,200", help="comma-separated numbers of sampling steps")
    parser.add_argument("--bound-samples", type=int, default=4, help="draws of each x_t in the test bound")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/ddpm_sampling")
    parser.add_argument("--no-progress", action="store_true", help="accepted for uniformity; nothing to show")
    args = parser.parse_args(argv)

    out = Path(args.out)
    test = load_dataset("digits", "test", device=args.device).x
    floor = real_data_floor("test", seed=args.seed).frechet_distance
    results: dict = {"real_data_floor_frechet": floor, "models": {}}
    fig, (ax_fd, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    for spec in args.model:
        name, _, directory = spec.partition("=")
        model = ppl_dgm.load(directory).to(args.device).eval()
        bound = ppl_dgm.log_likelihood(model, test, num_samples=args.bound_samples, seed=args.seed)
        steps = sorted({min(int(s), model.num_timesteps) for s in args.steps.split(",")})
        entry = {"config": model.config, "test_nll": bound.nll, "test_nll_stderr": bound.stderr,
                 "bits_per_dim": bound.bits_per_dim, "kind": bound.kind,
                 "ancestral": steps_curve(model, steps, "ancestral", test, args.seed),
                 "ddim": steps_curve(model, steps, "ddim", test, args.seed)}
        results["models"][name] = entry
        print(f"{name}: test bound {bound.nll:.2f} ± {bound.stderr:.2f} nats/image ({bound.bits_per_dim:.3f} bits/dim)")
        for method, style in (("ancestral", "-o"), ("ddim", "--s")):
            rows, label = entry[method], f"{name} {method}"
            ax_fd.plot([r["steps"] for r in rows], [r["frechet_distance"] for r in rows], style, label=label)
            ax_time.plot([r["steps"] for r in rows], [r["seconds_per_1000"] for r in rows], style, label=label)
            print(f"  {method}: " + ", ".join(f"{r['steps']} steps FD {r['frechet_distance']:.2f} "
                                             f"({r['seconds_per_1000']:.2f} s/1000)" for r in rows))
        torch.manual_seed(args.seed)
        plots.image_grid(ppl_dgm.draw(model, 64), (8, 8), out / f"samples_{name}.png", vmax=16,
                         title=f"{name}: ancestral, {model.num_timesteps} steps")
    ax_fd.axhline(floor, color="grey", linestyle=":", label="real data (train vs test)")
    ax_fd.axhline(1.5 * floor, color="grey", linestyle="--", label="1.5 x real data")
    for ax, label in ((ax_fd, "Frechet distance (classifier features)"), (ax_time, "seconds per 1,000 samples")):
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_fd.set_yscale("log")
    ax_fd.legend(fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "steps.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    (out / "ddpm_sampling.json").write_text(json.dumps(results, indent=2))
    best = min(((n, r["frechet_distance"], r["steps"], m) for n, e in results["models"].items()
                for m in ("ancestral", "ddim") for r in e[m]), key=lambda row: row[1])
    print(" | ".join(f"{n} bound {e['test_nll']:.2f} nats" for n, e in results["models"].items())
          + f" | best FD {best[1]:.2f} ({best[0]}, {best[3]}, {best[2]} steps) vs floor {floor:.2f}")
    return results


if __name__ == "__main__":
    main()
