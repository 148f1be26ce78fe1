"""Fitting benchmark entries with ``ppl-dgm fit``, the way a user would: one run directory per entry (and
seed), fits that finished (``metrics.json`` written) reused, several at once with the cores shared out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One model: ``ppl-dgm fit MODEL --data DATA -O key=value ... FIT``."""

    label: str
    model: str
    data: str = "digits"
    options: dict[str, Any] = field(default_factory=dict)
    fit: tuple[str, ...] = ()
    name: str | None = None

    @property
    def slug(self) -> str:
        """Its run directory's name (and what ``--only`` takes): ``name`` if given, else the label in lower case,
        ``_`` for the rest."""
        return self.name or re.sub(r"[^a-z0-9]+", "_", self.label.lower()).strip("_")

    @property
    def args(self) -> list[str]:
        """The ``-O`` options (values as JSON) and the fit flags."""
        return [arg for key, value in self.options.items() for arg in ("-O", f"{key}={json.dumps(value)}")] + list(
            self.fit)


def is_fitted(run: Path) -> bool:
    """Whether ``ppl-dgm fit`` finished in ``run``."""
    return (run / "metrics.json").is_file()


def fit_entry(entry: Entry, out: Path, threads: int, extra: Iterable[str] = ()) -> bool:
    """``ppl-dgm fit`` of ``entry`` into ``out`` (its output in ``out/fit.log``); whether it succeeded."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ppl_dgm.cli", "fit", entry.model, "--data", entry.data, "--out", str(out),
               "--overwrite", "--no-progress", "--eval-samples", "0", *entry.args, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(out / "fit.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode}, see {out / 'fit.log'})"
    print(f"fitted {entry.label} into {out} in {time.perf_counter() - start:.0f} s: {status}", flush=True)
    return done.returncode == 0


def fit_all(jobs: list[tuple[Entry, Path, tuple[str, ...]]], parallel: int, refit: bool) -> None:
    """Fit each ``(entry, run directory, extra flags)`` not fitted yet (all with ``refit``), ``parallel`` at
    once; each fit gets ``OMP_NUM_THREADS`` threads if that is set, else the cores divided by ``parallel``."""
    to_fit = [job for job in jobs if refit or not is_fitted(job[1])]
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, (os.cpu_count() or 2) // max(1, parallel))
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        list(pool.map(lambda job: fit_entry(job[0], job[1], threads, job[2]), to_fit))
