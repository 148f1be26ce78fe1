"""Data-parallel fitting under ``torchrun``: every rank holds the whole model, takes its share of each
global minibatch, and the gradients are summed over ranks before the one shared optimizer step.

``torchrun --nproc_per_node N`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; `init_from_env`
reads them and starts the process group once (``gloo`` on the CPU, ``nccl`` on CUDA with the device
``cuda:LOCAL_RANK``). Without them (a plain ``python`` run) everything here is a no-op and a fit runs
in one process as before.

Why all-reduce after ``backward`` instead of ``DistributedDataParallel``: Pyro's parameters (and lazily
built guides) live in the model module, some are created only at the first batch (after a DDP wrapper
would have registered its buckets), engines call the model through Pyro's ELBOs rather than
``module.forward``, and several engines step two optimizers on different parameter sets per batch
(a GAN). One flat all-reduce inside `ppl_dgm.infer.engine.Engine.update`, between ``backward`` and the
non-finite check, covers every engine the same way and lets the check see the global loss, so every
rank raises (or steps) together.

The arithmetic: with ``N`` training rows, a global batch of ``B`` rows and rank ``r`` holding ``b_r`` of
them, the data plate scales rank ``r``'s loss by ``N / b_r`` while one process would scale the whole
batch by ``N / B``. Weighting rank ``r``'s loss, gradient and per-example figures by ``b_r / B`` and
summing over ranks therefore gives exactly the one-process loss, gradient and figures.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
"""The variables ``torchrun`` sets for every process."""


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group with more than one process is running (fits then shard their batches)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the job (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes in the job (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main_process() -> bool:
    """Whether this process writes files (checkpoints, the CLI's run directory, figures): rank 0, or the
    only process. Safe to call before `init_from_env` (it reads ``RANK`` then)."""
    return rank() == 0 if active() else int(os.environ.get("RANK", "0")) == 0


def init_from_env(device: str | torch.device | None = None) -> torch.device | None:
    """Start the process group from ``torchrun``'s environment (once; later calls only return the device).

    Args:
        device: the device asked for (``None``: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU).

    Returns:
        The device this rank should fit on, or ``device`` unchanged when not launched by ``torchrun``.

    Raises:
        RuntimeError: ``torch.distributed`` is unavailable in this build of torch.
    """
    if not launched():
        return None if device is None else torch.device(device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process "
                           "(plain python) or install a torch build with distributed support")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = torch.device(device) if device is not None else \
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.type == "cuda":
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if wanted.type == "cuda" else "gloo")
    return wanted


def share(index: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's rows of a global batch ``index`` (``(B,)`` row numbers) and its weight ``b_r / B``.

    Rows are dealt round-robin, so the shares differ by at most one row; with one process the whole
    batch and weight 1 come back.
    """
    if not active():
        return index, 1.0
    mine = index[rank()::world_size()]
    return mine, len(mine) / len(index)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over ranks, in place (``values`` unchanged in one process)."""
    if active():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def reduce_gradients(loss: torch.Tensor, grads: list[torch.Tensor], weight: float) -> torch.Tensor:
    """Sum ``weight * grad`` over ranks into every gradient (in place) and return the summed ``weight * loss``.

    Args:
        loss: this rank's scalar loss (detached is fine).
        grads: this rank's gradients, one tensor per parameter, the same list on every rank.
        weight: ``b_r / B``, this rank's share of the global batch (`share`).

    Returns:
        The global loss, a scalar: the loss one process computes on the global batch (NaN/inf if any
        rank's loss or gradient was).
    """
    flat = torch.cat([loss.detach().reshape(1).to(grads[0].dtype if grads else loss.dtype),
                      *(g.reshape(-1) for g in grads)]) * weight
    all_reduce_sum(flat)
    offset = 1
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()
    return flat[0]


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module`` (in place), so that all ranks
    start from the same weights whatever their random initialization."""
    if not active():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if isinstance(tensor, torch.Tensor):
                dist.broadcast(tensor, src=0)


def shared_seed(device: torch.device) -> int:
    """A seed drawn from rank 0's torch generator and sent to every rank (the shuffling order's seed)."""
    seed = torch.randint(0, 2**62, (1,), dtype=torch.int64)
    if active():
        seed = seed.to(device)
        dist.broadcast(seed, src=0)
    return int(seed)


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if active():
        dist.barrier()
