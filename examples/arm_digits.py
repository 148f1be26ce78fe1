"""An autoregressive model (ARM, PixelCNN-style) on scikit-learn's 8x8 digits: fit with early stopping on
validation, exact test NLL, samples drawn pixel by pixel in raster order and their timing.

References:
    van den Oord, Kalchbrenner & Kavukcuoglu (2016), Pixel Recurrent Neural Networks, ICML.
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016), Conditional Image
        Generation with PixelCNN Decoders, NeurIPS.
    Tomczak (2022), Deep Generative Modeling, Springer, chapter 2 (autoregressive models).

    python examples/arm_digits.py --no-progress --out docs/images/arm
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
from ppl_dgm.models.autoregressive.arm import ARM  # noqa: E402


def mosaic(images: torch.Tensor, rows: int, image_shape: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """Tile ``images`` ``(rows * cols, H * W)`` into one ``(rows * (H + 1), cols * (W + 1))`` picture, with
    a one-pixel gap (NaN, drawn blank) after each image."""
    h, w = image_shape
    tiles = torch.full((images.shape[0], h + 1, w + 1), float("nan"))
    tiles[:, :h, :w] = images.detach().float().cpu().reshape(-1, h, w)
    return tiles.reshape(rows, -1, h + 1, w + 1).permute(0, 2, 1, 3).reshape(rows * (h + 1), -1)


def samples_beside_test(samples: torch.Tensor, test: torch.Tensor, path: Path) -> None:
    """Save a PNG with test digits on the left and model samples on the right (``(N, 64)`` each, N = 36)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, images, title in zip(axes, (test, samples), ("test digits", "ARM samples"), strict=True):
        ax.imshow(mosaic(images, 6), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def nll_histogram(nll: torch.Tensor, path: Path) -> None:
    """Save a histogram of the per-image test NLL (nats)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(nll.numpy(), bins=40, color="C0")
    ax.axvline(float(nll.mean()), color="k", linestyle="--", label=f"mean {float(nll.mean()):.2f}")
    ax.set_xlabel("NLL per test image (nats)")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--encoding", default="scalar", choices=["one_hot", "scalar", "both"])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--num-samples", type=int, default=1000, help="images drawn for the sampling timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/arm_digits", help="figures and results.json")
    parser.add_argument("--save", default=None, help="directory for the fitted model's checkpoint")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device).x for name in ("train", "val", "test")}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = ARM(channels=args.channels, num_blocks=args.num_blocks, dropout=args.dropout, encoding=args.encoding)
    cpu_start = time.process_time()
    result = ppl_dgm.fit(model, splits["train"], val=splits["val"], epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, weight_decay=args.weight_decay, patience=args.patience, seed=args.seed,
                         device=args.device, progress=not args.no_progress)
    fit_cpu_seconds = time.process_time() - cpu_start
    test = ppl_dgm.log_likelihood(model, splits["test"])
    nll = -test.per_sample
    print(f"best epoch {result.best_epoch + 1} of {result.epochs_run}, validation NLL {result.best_val_loss:.2f} nats; "
          f"fit {result.seconds:.0f} s wall, {fit_cpu_seconds:.0f} s CPU")

    torch.manual_seed(args.seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    samples = ppl_dgm.draw(model, args.num_samples)
    if samples.device.type == "cuda":
        torch.cuda.synchronize()
    sampling_seconds, sampling_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples_beside_test(samples[:36], splits["test"][:36], out / "samples.png")
    nll_histogram(nll, out / "test_nll.png")
    plots.training_curve(result.train_loss, result.val_loss, out / "curve.png", result.best_epoch)
    if args.save:
        ppl_dgm.save(model, args.save)
    quantiles = torch.tensor([0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0], dtype=nll.dtype)
    report = {
        "model": model.config,
        "fit": {"epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "lr": args.lr,
                "weight_decay": args.weight_decay, "seed": args.seed, "device": args.device,
                "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                "best_val_nll_nats": result.best_val_loss, "wall_seconds": result.seconds,
                "cpu_seconds": fit_cpu_seconds, "torch_threads": torch.get_num_threads()},
        **test.summary(),
        "test_nll_std_nats": float(nll.std()),
        "test_nll_quantiles_nats": dict(zip(("min", "q05", "q25", "median", "q75", "q95", "max"),
                                            torch.quantile(nll, quantiles).tolist(), strict=True)),
        "sampling_seconds_per_1000": sampling_seconds * 1000 / args.num_samples,
        "sampling_cpu_seconds_per_1000": sampling_cpu_seconds * 1000 / args.num_samples,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"test NLL {test.nll:.2f} ± {test.stderr:.2f} nats per image ({test.kind}), {test.bits_per_dim:.3f} "
          f"bits/dim; sampling {report['sampling_seconds_per_1000']:.1f} s per 1000 images; figures in {out}")
    return report


if __name__ == "__main__":
    main()
