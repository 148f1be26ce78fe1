"""An energy-based model on scikit-learn's 8x8 digits: fit by contrastive divergence, then the energy
of real test digits against uniform noise and against the model's own Langevin samples.

References:
    Du & Mordatch (2019), Implicit Generation and Modeling with Energy-Based Models, NeurIPS.
    Nijkamp, Hill, Zhu & Wu (2019), Learning Non-Convergent Non-Persistent Short-Run MCMC Toward
    Energy-Based Model, NeurIPS.

    python examples/ebm_energies.py --out runs/ebm_energies
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
from ppl_dgm.evaluation.sample_quality import as_digit_images, real_data_floor, sample_quality  # noqa: E402
from ppl_dgm.models.energy import EBM  # noqa: E402


def energy_histogram(energies: dict[str, torch.Tensor], path: Path) -> None:
    """Overlaid histograms of per-example energies ``(N,)`` of each named group."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = torch.cat(list(energies.values()))
    bins = torch.linspace(float(values.min()), float(values.max()), 60).tolist()
    for name, energy in energies.items():
        ax.hist(energy.tolist(), bins=bins, alpha=0.55, label=f"{name} (mean {float(energy.mean()):.3f})")
    ax.set_xlabel("energy E(x) (unnormalized)")
    ax.set_ylabel("examples")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--steps", type=int, default=20, help="Langevin steps per training step")
    parser.add_argument("--fresh", type=float, default=1.0, help="share of chains started from noise")
    parser.add_argument("--sample-steps", type=int, default=40, help="Langevin steps from noise when drawing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/ebm_energies", help="figures and results.json")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    train = load_dataset("digits", "train", device=args.device).x
    test = load_dataset("digits", "test", device=args.device).x
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = EBM(sample_steps=args.sample_steps)
    cpu = time.process_time()
    result = ppl_dgm.fit(model, train, epochs=args.epochs, seed=args.seed, device=args.device,
                         progress=not args.no_progress, steps=args.steps, fresh=args.fresh)
    cpu = time.process_time() - cpu
    model.eval()
    torch.manual_seed(args.seed)
    samples = ppl_dgm.draw(model, len(test))
    with torch.no_grad():
        energies = {"test digits": model.energy(model.to_unit(test)),
                    "uniform noise": model.energy(model.noise(len(test))),
                    "model samples": model.energy(model.to_unit(samples))}
    energies = {name: value.cpu() for name, value in energies.items()}
    quality = sample_quality(as_digit_images(samples), test).summary()
    floor = real_data_floor("test").summary()
    below_noise = float((energies["test digits"][:, None] < energies["uniform noise"][None, :]).float().mean())

    out = Path(args.out)
    plots.image_grid(samples[:64], (8, 8), out / "samples.png", vmax=16,
                     title=f"EBM samples ({args.sample_steps} Langevin steps from noise)")
    energy_histogram(energies, out / "energies.png")
    plots.training_curve(result.train_loss, [], out / "curve.png", unit="energy",
                         extra={k: v for k, v in result.history.items() if k != "loss"})
    report = {
        "epochs": result.epochs_run, "seconds": result.seconds, "cpu_seconds": cpu, "steps": args.steps,
        "fresh": args.fresh, "sample_steps": args.sample_steps, "seed": args.seed,
        **{f"mean_energy_{name.replace(' ', '_')}": float(value.mean()) for name, value in energies.items()},
        **{f"std_energy_{name.replace(' ', '_')}": float(value.std()) for name, value in energies.items()},
        "share_test_below_noise": below_noise,
        "mean_pixel_test": float(test.mean()), "mean_pixel_samples": float(samples.mean()),
        "sample_quality": quality, "real_data_floor": floor,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"fit {result.epochs_run} epochs in {result.seconds:.0f} s ({cpu:.0f} s of CPU); figures and results.json "
          f"in {out}")
    print("mean energy: " + ", ".join(f"{name} {float(value.mean()):.3f} ± {float(value.std()):.3f}"
                                      for name, value in energies.items())
          + f"; test digits below noise in {100 * below_noise:.1f}% of pairs")
    print(f"Frechet distance {quality['frechet_distance']:.2f} (real-data floor {floor['frechet_distance']:.2f}), "
          f"precision {quality['precision']:.2f}, recall {quality['recall']:.2f}, "
          f"class entropy {quality['class_entropy']:.2f} nats")
    return report


if __name__ == "__main__":
    main()
