"""Overhead of ppl_dgm.fit against a hand-written PyTorch training loop, on the same VAE.

Both train the default :class:`ppl_dgm.models.VAE` on the digits training split from the
same initial weights, with the same batch size, number of epochs, Adam settings and the
same single-sample ELBO estimator; repeats alternate between the two. Prints one line per
repeat and the median time ratio (ppl_dgm / pure PyTorch) last, and writes JSON.

    python benchmarks/svi_overhead.py [--epochs 20] [--repeats 5] [--device cpu] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import VAE


def pure_torch_fit(vae: VAE, x: torch.Tensor, epochs: int, batch_size: int, lr: float) -> list[float]:
    """The loop a PyTorch user writes by hand: reparameterized one-sample ELBO, Adam, minibatches."""
    n, levels = x.shape[0], vae.num_levels
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    log_2pi = math.log(2 * math.pi)
    history = []
    vae.train()
    for _ in range(epochs):
        total = 0.0
        for index in torch.randperm(n, device=x.device).split(batch_size):
            xb = x[index]
            loc, raw_scale = vae.encoder(xb / (levels - 1)).chunk(2, dim=-1)
            scale = F.softplus(raw_scale) + 1e-4
            eps = torch.randn_like(loc)
            z = loc + scale * eps
            log_q = (-0.5 * eps**2 - scale.log() - 0.5 * log_2pi).sum(-1)
            log_prior = (-0.5 * z**2 - 0.5 * log_2pi).sum(-1)
            logits = vae.decoder(z).unflatten(-1, (vae.input_dim, levels))
            log_lik = F.log_softmax(logits, -1).gather(-1, xb.long().unsqueeze(-1)).squeeze(-1).sum(-1)
            loss = -(n / xb.shape[0]) * (log_lik + log_prior - log_q).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        history.append(total / math.ceil(n / batch_size) / n)
    return history


def ppl_dgm_fit(vae: VAE, x: torch.Tensor, epochs: int, batch_size: int, lr: float) -> list[float]:
    result = ppl_dgm.fit(vae, x, epochs=epochs, batch_size=batch_size, lr=lr, objective="elbo",
                         patience=None, progress=False)
    return result.train_loss


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden widths (default: VAE's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="svi_overhead.json")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    x = load_dataset("digits", "train", device=device).x
    torch.manual_seed(0)
    template = (VAE(hidden_dims=tuple(args.hidden)) if args.hidden else VAE()).to(device)
    runners = {"ppl_dgm": ppl_dgm_fit, "pytorch": pure_torch_fit}
    times: dict[str, list[float]] = {name: [] for name in runners}
    final: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():  # warm-up: first calls pay for lazy initialisation
        runner(copy.deepcopy(template), x, 1, args.batch_size, 1e-3)
    for repeat in range(args.repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for name in order:
            vae = copy.deepcopy(template)
            torch.manual_seed(repeat)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            history = runners[name](vae, x, args.epochs, args.batch_size, 1e-3)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            final[name].append(history[-1])
        print(f"repeat {repeat}: ppl_dgm {times['ppl_dgm'][-1]:.2f}s, pytorch {times['pytorch'][-1]:.2f}s, "
              f"ratio {times['ppl_dgm'][-1] / times['pytorch'][-1]:.3f}; final train loss "
              f"{final['ppl_dgm'][-1]:.2f} vs {final['pytorch'][-1]:.2f} nats")
    ratios = [a / b for a, b in zip(times["ppl_dgm"], times["pytorch"], strict=True)]
    summary = {
        "device": str(device),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "hidden_dims": list(template.config["hidden_dims"]),
        "torch_threads": torch.get_num_threads(),
        "seconds": times,
        "final_train_loss_nats": final,
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
    }
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=2)
    print(f"svi_overhead: ppl_dgm.fit / pure PyTorch time ratio = {summary['ratio_median']:.3f} "
          f"(median of {args.repeats}, {device}, hidden {summary['hidden_dims']}, target <= 1.3)")
    return summary


if __name__ == "__main__":
    main()
