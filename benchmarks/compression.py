"""Lossless compression of the digits by an exact discrete model, against gzip, bz2, lzma and PNG.

`ppl_dgm.evaluation.compression.compress` entropy-codes the digits split with ANS (``constriction``)
driven by the model's probabilities; its size should be the model's exact NLL in bits (Townsend et
al., "Practical lossless compression with latent variables using bits back coding", ICLR 2019, and
Hoogeboom et al., "Integer discrete flows and lossless compression", NeurIPS 2019, report the same
comparison). The model is a fitted run directory (``ppl-dgm fit`` or ``ppl_dgm.save``), or a
registered model fitted here briefly with ``ppl_dgm.fit`` on the training split (early stopping on
validation). Prints the table (bytes, bits per image, bits per dim, size relative to the ANS stream)
and the payload and encoding time under constriction's two quantizations (lazy, the format's, and
perfect), writes JSON, and prints the ratio real/NLL last.

    python benchmarks/compression.py --run RUN_DIR [--split test] [--out FILE]
    python benchmarks/compression.py --model arm [-O channels=32] [--epochs 30] [--save DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation.compression import PERFECT, ans_encode, coding_tables
from ppl_dgm.evaluation.compression_report import compressed_size_report
from ppl_dgm.models import get_model_class


def _option(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _fitted(args: argparse.Namespace, device: torch.device) -> tuple[ppl_dgm.GenerativeModel, dict]:
    """The model of ``--run``, or ``--model`` fitted on the digits training split."""
    if args.run:
        return ppl_dgm.load(args.run, device=device), {"run": str(args.run)}
    torch.manual_seed(args.seed)
    model = get_model_class(args.model)(**dict(args.option)).to(device)
    train, val = (load_dataset("digits", split, device=device).x for split in ("train", "val"))
    start = time.perf_counter()
    result = ppl_dgm.fit(model, train, val=val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, patience=args.patience, seed=args.seed,
                         progress=not args.no_progress)
    model.eval()
    if args.save:
        ppl_dgm.save(model, args.save)
    fitted = {"model": args.model, "options": dict(args.option), "epochs_run": result.epochs_run,
              "best_epoch": result.best_epoch, "best_val_loss_nats": result.best_val_loss,
              "fit_seconds": time.perf_counter() - start}
    return model, fitted


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="checkpoint directory of a fitted codable model")
    source.add_argument("--model", help="registered codable model to fit here (e.g. arm, idf)")
    parser.add_argument("-O", "--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="constructor argument of --model (value parsed as JSON)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="save the model fitted with --model here")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compression.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    model, fitted = _fitted(args, device)
    x = load_dataset("digits", args.split, device=device).x
    report = compressed_size_report(model, x, image_shape=(8, 8))
    print(f"digits {args.split}: {report.num_images} images of {report.num_dims} pixels, model "
          f"{type(model).__name__}; header {report.header_bytes} bytes; encode {report.encode_seconds:.2f} s, "
          f"decode {report.decode_seconds:.2f} s; decoded identical: {report.decoded_equal}")
    print(report.table())
    _, tables = coding_tables(model, x)
    quantization = {}
    for perfect in (PERFECT, not PERFECT):  # the format's choice first
        start = time.perf_counter()
        words = ans_encode(tables, perfect=perfect)
        quantization["perfect" if perfect else "lazy"] = {"payload_bits": 32 * len(words),
                                                          "seconds": time.perf_counter() - start}
    print("quantization of the probabilities (ANS encoding only): " + ", ".join(
        f"{name} {q['payload_bits']} bits in {q['seconds']:.3f} s" for name, q in quantization.items()))
    summary = {"split": args.split, "device": str(device), **fitted, **report.as_dict(), "quantization": quantization}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    best = min(report.baselines, key=report.baselines.get)
    print(f"compression: ratio real/NLL = {report.ratio:.4f} (payload), {report.ratio_total:.4f} (with the "
          f"{report.header_bytes}-byte header); {report.total_bytes} bytes vs {best} {report.baselines[best]} "
          f"bytes; decoded identical: {report.decoded_equal}")
    return summary


if __name__ == "__main__":
    main()
