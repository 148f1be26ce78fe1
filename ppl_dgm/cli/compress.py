"""``ppl-dgm compress`` / ``ppl-dgm decompress``: entropy-code integer data with a fitted exact discrete model."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch

from ppl_dgm import io as checkpoints
from ppl_dgm.cli.common import UsageError, load_model, load_split, run_data, scored_split
from ppl_dgm.evaluation.compression import decompress, require_codable
from ppl_dgm.evaluation.compression_report import compressed_size_report
from ppl_dgm.validation import check_device


def _output(path: str, force: bool) -> Path:
    """``path``, checked not to exist unless ``force`` and to have an existing folder."""
    out = Path(path)
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"no directory {out.parent} to write {out.name} into")
    return out


def _codable_model(directory: Path, device: str):
    model = load_model(directory, check_device(device))
    require_codable(model)
    return model


def cmd_compress(args: argparse.Namespace) -> None:
    """``ppl-dgm compress RUN_DIR [--data D] [--split S] -o FILE``: write the ANS stream of one split (checked to
    decode back) and print its size beside the model's NLL."""
    out = _output(args.output, args.force)
    directory = Path(args.dir)
    model = _codable_model(directory, args.device)
    data = run_data(directory, args.data)
    split = scored_split(data, args.split)
    x = load_split(data, split, device=model.device, dtype=model.dtype)
    report = compressed_size_report(model, x)
    if not report.decoded_equal:
        raise ValueError("the stream does not decode to the data; nothing written")
    checkpoints.atomic_write(out, report.stream)
    print(f"wrote {out}: {data} {split}, {report.num_images} examples in {report.total_bytes} bytes "
          f"({report.header_bytes}-byte header), {report.payload_bits_per_image:.2f} bits per example; model NLL "
          f"{report.nll_bits / report.num_images:.2f} bits per example, ratio {report.ratio:.4f}")


def cmd_decompress(args: argparse.Namespace) -> None:
    """``ppl-dgm decompress RUN_DIR FILE -o OUT.npy``: decode a stream into an int64 ``.npy`` array of the
    shape it was encoded with."""
    out = _output(args.output, args.force)
    source = Path(args.file)
    if not source.is_file():
        raise FileNotFoundError(f"no compressed file {source}")
    x = decompress(_codable_model(Path(args.dir), args.device), source.read_bytes())
    buffer = io.BytesIO()
    np.save(buffer, x.to("cpu", torch.int64).numpy(), allow_pickle=False)
    checkpoints.atomic_write(out, buffer.getvalue())
    print(f"wrote {out}: int64 array of shape {tuple(x.shape)}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``compress`` and ``decompress`` subcommands to ``sub`` (each ``set_defaults(func=...)``)."""
    p = sub.add_parser("compress", help="entropy-code a data split with a fitted exact discrete model (ARM, IDF)")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--data", default=None, help="dataset name or .npy/.csv file (default: the one it was fitted on)")
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="split to compress (default: test; train for a data file)")
    p.add_argument("-o", "--output", required=True, help="compressed file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...: decompress on the same kind of device")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="decode a file written by 'ppl-dgm compress' into a .npy array")
    p.add_argument("dir", help="directory of the fitted model that compressed the file")
    p.add_argument("file", help="compressed file")
    p.add_argument("-o", "--output", required=True, help=".npy file to write (int64, shape as encoded)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--device", default="cpu", help="the kind of device the file was compressed on")
    p.set_defaults(func=cmd_decompress)
