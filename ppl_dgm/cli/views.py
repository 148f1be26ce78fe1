"""``ppl-dgm views``: the representation views of a fitted VAE-family run, written as PNGs (see `ppl_dgm.views`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ppl_dgm import views
from ppl_dgm.cli.common import UsageError, count, load_model, run_data, scored_split
from ppl_dgm.datasets import dataset_info, load_dataset
from ppl_dgm.io import atomic_write
from ppl_dgm.user_code import is_data_file
from ppl_dgm.validation import check_device

VIEWS = ("traversals", "interpolations", "class_grid", "reconstructions", "latent_map")
"""The views ``--which`` picks from, in the order they are written."""
VIEWS_FILE = "views.json"
"""The JSON in ``--out`` naming each PNG and what it shows."""


def view_names(text: str) -> tuple[str, ...]:
    """``--which``: comma-separated names from `VIEWS`."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in VIEWS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown view(s) {', '.join(unknown) or repr(text)}; "
                                         f"choose from {','.join(VIEWS)}")
    return names


def _chosen(args: argparse.Namespace, conditional: bool, latent_dim: int) -> tuple[str, ...]:
    """The views to draw: ``--which``, checked against the model, or every view that applies to it."""
    if args.which is None:
        return tuple(name for name in VIEWS if (name != "class_grid" or conditional)
                     and (name != "latent_map" or latent_dim == 2 or args.pca))
    if "class_grid" in args.which and not conditional:
        raise UsageError("class_grid needs a conditional model (e.g. a CVAE); this one is not conditional on labels")
    if "latent_map" in args.which and latent_dim != 2 and not args.pca:
        raise UsageError(f"latent_map needs a 2-D code and this model has latent_dim={latent_dim}: fit it with "
                         "-O latent_dim=2, or pass --pca for a PCA projection of the code")
    return args.which


def _pairs(order: torch.Tensor, labels: torch.Tensor | None, number: int) -> list[tuple[int, int]]:
    """``number`` pairs of distinct indices taken in ``order``; of one label each where ``labels`` are given."""
    pairs, used = [], set()
    for a in order.tolist():
        if a in used:
            continue
        partners = [b for b in order.tolist() if b != a and b not in used
                    and (labels is None or int(labels[b]) == int(labels[a]))]
        if partners:
            pairs.append((a, partners[0]))
            used.update(pairs[-1])
        if len(pairs) == number:
            break
    return pairs


def cmd_views(args: argparse.Namespace) -> dict[str, Any]:
    """``ppl-dgm views``: write the chosen views of the run in ``args.dir`` to ``args.out`` with a JSON naming them."""
    directory, out = Path(args.dir), Path(args.out)
    model = load_model(directory, check_device(args.device))
    views.check_view_model(model)
    data = run_data(directory, args.data)
    info = None if is_data_file(data) else dataset_info(data)
    if info is None or info.image_shape is None:
        raise UsageError(f"the views draw images and {data} has no image form; pass --data with an image data set "
                         "(e.g. digits)")
    split = scored_split(data, args.split)
    real = load_dataset(data, split, device=model.device, dtype=model.dtype)
    conditional = bool(model.capabilities.conditional)
    if conditional and real.y is None:
        raise UsageError(f"{type(model).__name__} is conditional on labels and {data} has none")
    x, labels = real.x, real.y
    y = labels if conditional else None
    latent_dim = views.codes(model, x[:1], None if y is None else y[:1]).shape[1]
    which = _chosen(args, conditional, latent_dim)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed)).to(x.device)
    style = {"image_shape": info.image_shape, "vmax": None if info.num_levels is None else info.num_levels - 1}
    record: dict[str, Any] = {}
    for name in which:
        path = out / f"{name}.png"
        torch.manual_seed(args.seed)
        if name == "traversals":
            index = int(order[0])
            dims, score, criterion = views.rank_latent_dims(model, x, y)
            dims = dims[: args.num_dims].tolist()
            views.latent_traversals(model, x[index], path, y=None if y is None else y[index:index + 1], data=x,
                                    data_y=y, dims=dims, steps=args.steps, span=args.span, **style)
            record[name] = {"index": index, "dims": dims, "criterion": criterion,
                            "scores": [float(score[d]) for d in dims], "span_std": args.span}
        elif name == "interpolations":
            pairs = _pairs(order, None if y is None else labels, args.pairs)
            a, b = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
            views.interpolations(model, x[a], x[b], path, y=None if y is None else y[a], steps=args.steps,
                                 method=args.interpolation, **style)
            record[name] = {"pairs": pairs, "method": args.interpolation}
        elif name == "class_grid":
            views.class_conditional_grid(model, path, per_class=args.per_class, kind=args.grid_kind, **style)
            record[name] = {"kind": args.grid_kind, "per_class": args.per_class}
        elif name == "reconstructions":
            chosen = order[: args.n]
            views.reconstructions(model, x[chosen], path, y=None if y is None else y[chosen], **style)
            record[name] = {"indices": chosen.tolist()}
        else:
            shown = views.latent_map(model, x, labels, path, projection="pca" if latent_dim != 2 else "none",
                                     **style)
            record[name] = {"projection": shown.projection, "decoded_grid": shown.grid is not None}
        record[name] = {"file": path.name, **record[name]}
        print(f"wrote {path}")
    summary = {"run": str(directory), "model": type(model).__name__, "data": data, "split": split, "seed": args.seed,
               "views": record}
    atomic_write(out / VIEWS_FILE, (json.dumps(summary, indent=1) + "\n").encode())
    print(f"{len(record)} view(s) of {type(model).__name__} on {data} {split} in {out} (listed in {VIEWS_FILE})")
    return summary


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``views`` subcommand."""
    p = sub.add_parser("views", help="latent traversals, interpolations, reconstructions, ... of a VAE-family run")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--out", required=True, help="directory for the PNGs and views.json")
    p.add_argument("--which", type=view_names, default=None, metavar="VIEW[,VIEW...]",
                   help=f"views to draw, from {','.join(VIEWS)} (default: every one that applies to the model)")
    p.add_argument("--data", default=None, help="image data set whose digits to show (default: the fitted one)")
    p.add_argument("--split", choices=["train", "val", "test"], default=None, help="split of the digits (default test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the digits picked and of the prior draws")
    p.add_argument("--num-dims", type=count(1), default=8, help="traversals: most active dimensions shown")
    p.add_argument("--steps", type=count(2), default=9, help="traversals and interpolations: images a row")
    p.add_argument("--span", type=float, default=2.5,
                   help="traversals: offsets up to +-SPAN standard deviations of the codes (default 2.5)")
    p.add_argument("--interpolation", choices=["linear", "slerp"], default="linear",
                   help="interpolations: straight line or great circle (slerp; suits a hyperspherical code)")
    p.add_argument("--pairs", type=count(1), default=4, help="interpolations: pairs of test digits")
    p.add_argument("--per-class", type=count(1), default=10, help="class_grid: images per label")
    p.add_argument("--grid-kind", choices=["mean", "sample"], default="mean",
                   help="class_grid: mean images of p(x | y, z), or draws of it")
    p.add_argument("-n", type=count(1), default=16, help="reconstructions: test digits shown")
    p.add_argument("--pca", action="store_true", help="latent_map: PCA projection of a code that is not 2-D")
    p.add_argument("--device", default="cpu", help="where to compute (default cpu)")
    p.set_defaults(func=cmd_views)
