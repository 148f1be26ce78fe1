"""Overhead of ppl_dgm.fit (eager and compiled SVI step) against a hand-written PyTorch training loop.

Two VAEs on the digits training split: the default :class:`ppl_dgm.models.VAE` (categorical pixels) and
a small MLP VAE (hidden 256, Bernoulli pixels, on the digits binarized at 8). Each runner trains from the
same initial weights with the same batch size, epochs, Adam settings and the same single-sample ELBO
estimator; repeats alternate the order of the runners. Prints one line per repeat, then single steps
timed in interleaved rounds and a compiled fit's one-time costs, and the median time ratios
(ppl_dgm / pure PyTorch) last, and writes JSON.

    python benchmarks/svi_overhead.py [--epochs 20] [--repeats 5] [--models NAME ...] [--device cpu]
                                      [--out FILE] [--docs]

``--docs`` writes the table into docs/engines.md (between the ``svi-overhead`` markers).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from functools import partial
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from doc_blocks import replace_block

import ppl_dgm
from ppl_dgm.core import X
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer.compiled import RECORDED
from ppl_dgm.infer.svi import SVIEngine
from ppl_dgm.models import VAE

LOG_2PI = math.log(2 * math.pi)


def hand_written_loss(vae: VAE, xb: torch.Tensor, n: int) -> torch.Tensor:
    """Minus the reparameterized one-sample ELBO of the batch ``xb`` (``(B, 64)``), scaled to ``n`` examples (nats)."""
    levels = vae.num_levels
    loc, raw_scale = vae.encoder(xb / (levels - 1)).chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + 1e-4
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    log_q = (-0.5 * eps**2 - scale.log() - 0.5 * LOG_2PI).sum(-1)
    log_prior = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
    if levels == 2:  # Bernoulli pixels
        logits = vae.decoder(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(-1)
    else:
        logits = vae.decoder(z).unflatten(-1, (vae.input_dim, levels))
        log_lik = F.log_softmax(logits, -1).gather(-1, xb.long().unsqueeze(-1)).squeeze(-1).sum(-1)
    return -(n / xb.shape[0]) * (log_lik + log_prior - log_q).sum()


def hand_written_step(vae: VAE, optimizer: torch.optim.Optimizer, xb: torch.Tensor, n: int) -> float:
    """One Adam step on `hand_written_loss`; returns the loss."""
    loss = hand_written_loss(vae, xb, n)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def pure_torch_fit(vae: VAE, x: torch.Tensor, epochs: int, batch_size: int, lr: float) -> list[float]:
    """The loop a PyTorch user writes by hand: reparameterized one-sample ELBO, Adam, minibatches."""
    n = x.shape[0]
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    history = []
    vae.train()
    for _ in range(epochs):
        total = sum(hand_written_step(vae, optimizer, x[index], n)
                    for index in torch.randperm(n, device=x.device).split(batch_size))
        history.append(total / math.ceil(n / batch_size) / n)
    return history


def step_milliseconds(template: VAE, x: torch.Tensor, batch_size: int, rounds: int = 15, steps: int = 10
                      ) -> dict[str, float]:
    """Median milliseconds of one training step on the same batch, hand-written and by the compiled SVI engine
    (its loop excluded), timed in ``rounds`` interleaved rounds of ``steps`` steps: less noisy than whole fits."""
    n, xb = x.shape[0], x[:batch_size]
    vae = copy.deepcopy(template).train()
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    engine = SVIEngine(copy.deepcopy(template), lr=1e-3)
    engine.model.setup(x)
    engine.prepare({X: xb})
    engine.model.train()
    runners = {"pytorch": lambda: hand_written_step(vae, optimizer, xb, n), "compiled": lambda: engine.step({X: xb}, n)}
    times: dict[str, list[float]] = {name: [] for name in runners}
    with pyro.validation_enabled(False):
        for run in (*runners.values(), *runners.values()):  # the first steps record, check and warm up
            run()
        for _ in range(rounds):
            for name, run in runners.items():
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(steps):
                    run()
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - start) / steps * 1e3)
    engine.finish()
    return {name: statistics.median(t) for name, t in times.items()}


def ppl_dgm_fit(vae: VAE, x: torch.Tensor, epochs: int, batch_size: int, lr: float, compile: bool) -> list[float]:
    """``ppl_dgm.fit`` with the SVI engine's ELBO, its step compiled or eager."""
    result = ppl_dgm.fit(vae, x, epochs=epochs, batch_size=batch_size, lr=lr, objective="elbo",
                         patience=None, progress=False, compile=compile)
    return result.train_loss


RUNNERS = {"pytorch": pure_torch_fit, "eager": partial(ppl_dgm_fit, compile=False),
           "compiled": partial(ppl_dgm_fit, compile=True)}
MODELS = {"default": {}, "mlp256_bernoulli": {"hidden_dims": (256,), "likelihood": "bernoulli"}}
TARGETS = {"default": 1.05, "mlp256_bernoulli": 1.15}
"""Target of the compiled / pure PyTorch time ratio on CPU (1.2 on a GPU)."""


def _timed(runner, template: VAE, x: torch.Tensor, epochs: int, batch_size: int) -> tuple[float, list[float]]:
    """Seconds of one fit of a copy of ``template`` by ``runner``, and its loss history."""
    vae = copy.deepcopy(template)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    history = runner(vae, x, epochs, batch_size, 1e-3)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, history


def one_time_costs(template: VAE, x: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Seconds a compiled one-epoch fit spends beyond a later identical one: the first in the process (imports and
    lazy set-up of the recorder included), and a later one whose graph is not kept (a new story or batch shape)."""
    first = _timed(RUNNERS["compiled"], template, x, 1, batch_size)[0]
    warm = _timed(RUNNERS["compiled"], template, x, 1, batch_size)[0]
    RECORDED.clear()
    new_graph = _timed(RUNNERS["compiled"], template, x, 1, batch_size)[0]
    warm = min(warm, _timed(RUNNERS["compiled"], template, x, 1, batch_size)[0])
    return {"first_compiled_fit": first - warm, "recording_a_new_graph": new_graph - warm}


def benchmark(template: VAE, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """Seconds and final training loss (nats per example) of every runner on one model, repeats alternating."""
    times: dict[str, list[float]] = {name: [] for name in RUNNERS}
    final: dict[str, list[float]] = {name: [] for name in RUNNERS}
    one_time = one_time_costs(template, x, args.batch_size)
    steps = step_milliseconds(template, x, args.batch_size)
    print(f"  one step, interleaved: pytorch {steps['pytorch']:.3f} ms, compiled {steps['compiled']:.3f} ms "
          f"({steps['compiled'] / steps['pytorch']:.3f}x)")
    for runner in RUNNERS.values():  # warm-up: first calls pay for lazy initialisation
        runner(copy.deepcopy(template), x, 1, args.batch_size, 1e-3)
    for repeat in range(args.repeats):
        order = list(RUNNERS) if repeat % 2 == 0 else list(reversed(RUNNERS))
        for name in order:
            torch.manual_seed(repeat)
            seconds, history = _timed(RUNNERS[name], template, x, args.epochs, args.batch_size)
            times[name].append(seconds)
            final[name].append(history[-1])
        print(f"  repeat {repeat}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in RUNNERS)
              + "; final train loss " + " / ".join(f"{final[n][-1]:.2f}" for n in RUNNERS) + " nats")
    per_repeat = {n: [a / b for a, b in zip(times[n], times["pytorch"], strict=True)] for n in ("eager", "compiled")}
    ratios = {n: statistics.median(r) for n, r in per_repeat.items()}
    print(f"  one-time: the first compiled fit of the process {one_time['first_compiled_fit']:.2f}s more, "
          f"recording a graph for a new story or batch shape {one_time['recording_a_new_graph']:.3f}s more")
    return {"hidden_dims": list(template.config["hidden_dims"]), "likelihood": template.config["likelihood"],
            "seconds": times, "final_train_loss_nats": final, "ratio_median": ratios,
            "ratio_range": {n: [min(r), max(r)] for n, r in per_repeat.items()}, "one_time_seconds": one_time,
            "step_milliseconds": steps}


DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "engines.md"
LABELS = {"default": "default VAE (512, 512; categorical)", "mlp256_bernoulli": "MLP VAE (256; Bernoulli, digits > 8)"}


def docs_table(summary: dict, args: argparse.Namespace) -> str:
    """The ratios as the markdown table of docs/engines.md, with the command that measured them."""
    rows = [f"`OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/svi_overhead.py --epochs {args.epochs} "
            f"--repeats {args.repeats} --docs` ({summary['device']}, median of {args.repeats}):", "",
            "| model | eager `fit` / PyTorch | compiled `fit` / PyTorch | single repeats (compiled) | target (CPU) "
            "| one step, interleaved: compiled / PyTorch | first compiled fit, once (s) | recording a new graph (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for name, result in summary["models"].items():
        ratio, spread, once = result["ratio_median"], result["ratio_range"]["compiled"], result["one_time_seconds"]
        step = result["step_milliseconds"]
        rows.append(f"| {LABELS[name]} | {ratio['eager']:.3f} | **{ratio['compiled']:.3f}** | "
                    f"{spread[0]:.3f}–{spread[1]:.3f} | {TARGETS[name]} | {step['compiled'] / step['pytorch']:.3f} "
                    f"({step['compiled']:.2f} / {step['pytorch']:.2f} ms) | {once['first_compiled_fit']:.2f} | "
                    f"{once['recording_a_new_graph']:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="svi_overhead.json")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/engines.md")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    digits = load_dataset("digits", "train", device=device).x
    summary = {"device": str(device), "epochs": args.epochs, "batch_size": args.batch_size,
               "torch_threads": torch.get_num_threads(), "models": {}}
    for name in args.models:
        print(f"{name}:")
        torch.manual_seed(0)
        template = VAE(**MODELS[name]).to(device)
        x = (digits > 8).to(digits.dtype) if template.config["likelihood"] == "bernoulli" else digits
        summary["models"][name] = benchmark(template, x, args)
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=2)
    if args.docs:
        replace_block(DOCS_PAGE, "svi-overhead", docs_table(summary, args))
    print("svi_overhead: ppl_dgm.fit / pure PyTorch time ratio (median of "
          f"{args.repeats}, {device}, {torch.get_num_threads()} thread(s)): " + "; ".join(
              f"{name} eager {r['ratio_median']['eager']:.3f}, compiled {r['ratio_median']['compiled']:.3f} "
              f"(target <= {TARGETS[name]})" for name, r in summary["models"].items()))
    return summary


if __name__ == "__main__":
    main()
