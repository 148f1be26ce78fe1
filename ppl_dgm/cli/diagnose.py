"""``ppl-dgm diagnose``: ArviZ diagnostics of a fitted run's global latents."""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyro

from ppl_dgm.cli.common import DIAGNOSTICS_DIR, UsageError, count, load_model, load_split, run_data, user_frame
from ppl_dgm.core import DATA, X
from ppl_dgm.diagnostics.report import KHAT_THRESHOLD, quiet_arviz, write_report
from ppl_dgm.posterior import global_latent_sites
from ppl_dgm.validation import check_device


def cmd_diagnose(args: argparse.Namespace) -> dict[str, Any]:
    """``ppl-dgm diagnose``: ArviZ diagnostics of a run's global latents (guide draws or NUTS) into
    RUN_DIR/diagnostics/."""
    directory = Path(args.dir)
    target = directory / DIAGNOSTICS_DIR
    if target.exists() and not args.overwrite:
        raise UsageError(f"{target} exists (an earlier diagnose); pass --overwrite to replace it, or move it away")
    device = check_device(args.device)
    model = load_model(directory, device)
    data = run_data(directory, args.data)
    x = load_split(data, args.split, device, model.dtype)
    if not global_latent_sites(model, {X: x}):
        raise UsageError(f"diagnose needs global latent sites (sample sites outside plate '{DATA}', e.g. weights "
                         f"or a rate), and {type(model).__name__} has none; score it with 'ppl-dgm evaluate' instead")
    from ppl_dgm.diagnostics import to_inference_data
    from ppl_dgm.infer.mcmc import nuts

    pyro.set_rng_seed(args.seed)
    result = None
    if args.nuts:
        result = nuts(model, x, num_samples=args.num_samples, warmup_steps=args.warmup, num_chains=args.chains,
                      seed=args.seed, progress=not args.no_progress)
        source = {"posterior": "nuts", "num_chains": result.num_chains, "num_draws": result.num_draws,
                  "divergences": result.divergences}
    else:
        source = {"posterior": "guide", "num_chains": 1, "num_draws": args.num_draws}
    try:
        with quiet_arviz(python_warnings=False):
            idata = to_inference_data(model, x, result, num_draws=args.num_draws, seed=args.seed,
                                      predictive=not args.no_ppc)
    except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as error:
        if args.no_ppc:
            raise
        raise UsageError(f"{error}{user_frame(error)}; if that comes from drawing replicated data (the story is "
                         "then called without data), make it draw x when its data argument is None, or pass "
                         "--no-ppc") from error
    source.update(data=data, split=args.split)
    staging = directory / f".{DIAGNOSTICS_DIR}.{uuid.uuid4().hex}"  # written whole, then renamed into place
    staging.mkdir()
    try:
        written, report = write_report(idata, staging, source)
        if target.exists():  # --overwrite: replace the earlier folder only now that the new one is complete
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in written:
        print(f"wrote {target / name}")
    if args.nuts:
        parts = [f"NUTS, {result.num_chains} chains x {result.num_draws} draws, divergences {sum(result.divergences)}"]
        rhat = report["max_r_hat"]
        parts.append(f"max R-hat {rhat:.3f}" if rhat is not None else "max R-hat n/a (one chain)")
    else:
        parts = [f"guide, {args.num_draws} draws"]
    loo = report.get("loo")
    if loo is not None:
        elpd, se = loo["elpd_loo"], loo["se"]
        parts.insert(0, f"elpd_loo {elpd:.2f} ± {se:.2f}" if elpd is not None and se is not None
                     else "elpd_loo not finite")
        parts.append(f"Pareto k-hat > {KHAT_THRESHOLD} for {loo[f'share_pareto_k_above_{KHAT_THRESHOLD}']:.1%} "
                     f"of {loo['n_data_points']} points")
    else:
        parts.insert(0, "no log-likelihood group: no LOO")
    if report["point_mass"] and not args.nuts:
        parts.append("every guide draw is the same (a point estimate), so LOO and k-hat say little: try --nuts")
    print(f"diagnosed {data} {args.split} ({'; '.join(parts)})")
    return report


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``diagnose`` subcommand."""
    p = sub.add_parser("diagnose", help="ArviZ diagnostics of a fitted model's global latents into DIR/diagnostics")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--nuts", action="store_true", help="sample the posterior with NUTS (default: draws from the "
                                                       "fitted guide)")
    p.add_argument("--num-draws", type=count(1), default=500, help="guide draws without --nuts (default 500)")
    p.add_argument("--num-samples", type=count(4), default=500,
                   help="NUTS draws per chain, at least 4 (default 500)")
    p.add_argument("--warmup", type=count(0), default=500, help="NUTS warm-up steps per chain (default 500)")
    p.add_argument("--chains", type=count(1), default=2, help="NUTS chains, one after another (default 2)")
    p.add_argument("--data", default=None, help="dataset name or .npy/.csv file (default: the one it was fitted on)")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="split (default train)")
    p.add_argument("--seed", type=int, default=0, help="seed of the NUTS chains (seed, seed + 1, ...), the guide "
                                                       "draws and the replicated data (default 0)")
    p.add_argument("--device", default="cpu", help="where to compute (default cpu)")
    p.add_argument("--no-ppc", action="store_true", help="skip the posterior predictive (replicated data sets, "
                                                           "ppc.png): for a story that cannot draw data alone")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier DIR/diagnostics folder")
    p.add_argument("--no-progress", action="store_true", help="hide NUTS's progress bar")
    p.set_defaults(func=cmd_diagnose)
