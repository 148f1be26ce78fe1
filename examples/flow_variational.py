"""Planar, radial, Sylvester and Householder flows as variational families on the 2-D energies U1-U4.

Each flow guide q(z) is fitted by Pyro SVI (Trace_ELBO) to the unnormalized target exp(-U(z)) of the
model ``z ~ flat; pyro.factor("energy", -U(z))``; KL(q || p) = E_q[log q(z) + U(z)] + log Z is
reported in nats, with log Z by quadrature on a fine grid.

References:
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, ICML (Fig. 3, Table 1).
    Tomczak & Welling (2016), Improving Variational Auto-Encoders using Householder Flow, arXiv:1611.09630.
    van den Berg, Hasenclever, Tomczak & Welling (2018), Sylvester Normalizing Flows for Variational
    Inference, UAI.

    python examples/flow_variational.py --out docs/images/flows --no-progress
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ppl_dgm.datasets.energies import ENERGIES, WINDOW, grid, log_partition
from ppl_dgm.models.flows.variational import FAMILIES, FlowGuide, fit_energy, kl_estimate
from ppl_dgm.plots import density_grid

RESOLUTION = 120  # pixels per side of each density panel


def _q_density(guide: FlowGuide, num_samples: int) -> torch.Tensor:
    """Histogram estimate of q on the window, ``(RESOLUTION, RESOLUTION)`` (planar, radial and Sylvester
    layers have no inverse, so q cannot be evaluated at grid points)."""
    z, _ = guide.sample_with_log_prob(num_samples)
    hist = torch.histogramdd(z.double().cpu(), bins=[RESOLUTION] * 2, range=[-WINDOW, WINDOW] * 2).hist
    return hist.T  # z2 along rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energies", nargs="+", default=list(ENERGIES), choices=list(ENERGIES))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--layers", nargs="+", type=int, default=[2, 8, 32])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--kl-samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/flow_variational")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    out = Path(args.out)
    points, _ = grid(WINDOW, RESOLUTION)
    results, log_z = [], {}
    panels: dict[int, dict[str, list[torch.Tensor]]] = {k: {} for k in args.layers}
    start = time.perf_counter()
    for name in args.energies:
        energy = ENERGIES[name]
        log_z[name] = log_partition(energy)
        target = (-energy(points) - log_z[name]).exp().reshape(RESOLUTION, RESOLUTION)
        for layers in args.layers:
            panels[layers][name] = [target]
            for family in args.families:
                torch.manual_seed(args.seed)
                guide = FlowGuide(2, family, layers).to(args.device)
                tic = time.perf_counter()
                loss = fit_energy(guide, energy, args.steps, args.lr, args.particles, seed=args.seed,
                                  progress=not args.no_progress)
                seconds = time.perf_counter() - tic
                kl, stderr = kl_estimate(guide, energy, log_z[name], args.kl_samples)
                panels[layers][name].append(_q_density(guide, 200_000))
                results.append({"energy": name, "family": family, "layers": layers, "kl_nats": kl,
                                "kl_stderr": stderr, "final_loss": sum(loss[-50:]) / len(loss[-50:]),
                                "fit_seconds": seconds})
                print(f"{name} {family:>11} K={layers:<2} KL {kl:.3f} ± {stderr:.3f} nats ({seconds:.0f} s)")
    for layers, rows in panels.items():
        density_grid(rows, ["target"] + [f"{family} K={layers}" for family in args.families],
              out / f"variational_K{layers}.png")
    total = time.perf_counter() - start
    summary = {"log_z": log_z, "results": results, "total_seconds": total, "args": vars(args)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow_variational.json").write_text(json.dumps(summary, indent=2))
    best = min(results, key=lambda r: r["kl_nats"])
    print(f"{len(results)} fits in {total:.0f} s; lowest KL {best['kl_nats']:.3f} nats "
          f"({best['energy']}, {best['family']} K={best['layers']}); figures and JSON in {out}")
    return summary


if __name__ == "__main__":
    main()
