"""Data-parallel fitting (`ppl_dgm.infer.distributed`): two gloo processes on the CPU fit exactly what one
process fits on the same global batches; a stochastic VAE improves; only rank 0 writes; resume continues."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ppl_dgm
from ppl_dgm.infer import distributed
from ppl_dgm.models.classical.gmm import GaussianMixture

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is unavailable in this torch build")

WORLD = 2


def _data() -> torch.Tensor:
    """Three float64 clusters in 2-D, 240 rows."""
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]], dtype=torch.float64)
    return (centres.repeat(80, 1) + 0.5 * torch.randn(240, 2, generator=g, dtype=torch.float64))


def _gmm() -> GaussianMixture:
    return GaussianMixture(3, covariance_type="diag", random_state=0, posterior="map", dtype="float64")


def _fit_gmm(**kwargs) -> tuple[GaussianMixture, ppl_dgm.FitResult]:
    model = _gmm()
    x = _data()
    result = ppl_dgm.fit(model, x[:200], val=x[200:], engine="svi", batch_size=50, lr=0.05, seed=0, progress=False,
                         **kwargs)
    return model, result


def _worker(rank: int, port: int, tmp: str) -> None:
    """One rank of the job: the runs every test below checks, results in ``tmp/rank{rank}.json``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    report = {}
    model, result = _fit_gmm(epochs=4)
    torch.save(model.state_dict(), os.path.join(tmp, f"gmm{rank}.pt"))
    report["gmm"] = {"train": result.train_loss, "val": result.val_loss}
    vae = ppl_dgm.models.VAE(input_dim=8, latent_dim=2, hidden_dims=[16])
    x = torch.randint(0, 17, (400, 8), generator=torch.Generator().manual_seed(2)).float()
    fitted = ppl_dgm.fit(vae, x, val=x[:100], epochs=6, batch_size=50, lr=1e-2, seed=0, progress=False,
                         checkpoint_dir=os.path.join(tmp, f"vae_rank{rank}"))
    report["vae"] = fitted.train_loss
    shared = os.path.join(tmp, "resume")
    _fit_gmm(epochs=2, checkpoint_dir=shared)
    _, resumed = _fit_gmm(epochs=4, checkpoint_dir=shared, resume=True)
    report["resume"] = {"epochs_run": resumed.epochs_run, "train": resumed.train_loss}
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[str, list[dict]]:
    """Run the two-process job once for the module; its directory and each rank's report."""
    tmp = str(tmp_path_factory.mktemp("ddp"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(port, tmp), nprocs=WORLD, join=True, start_method="spawn")
    reports = []
    for rank in range(WORLD):
        with open(os.path.join(tmp, f"rank{rank}.json")) as f:
            reports.append(json.load(f))
    return tmp, reports


def test_two_processes_fit_what_one_process_fits(job):
    tmp, reports = job
    model, result = _fit_gmm(epochs=4)
    one = model.state_dict()
    for rank in range(WORLD):
        other = torch.load(os.path.join(tmp, f"gmm{rank}.pt"))
        for name, value in one.items():
            torch.testing.assert_close(other[name], value, rtol=1e-6, atol=1e-9, msg=name)
        assert reports[rank]["gmm"]["train"] == pytest.approx(result.train_loss, rel=1e-6)
        assert reports[rank]["gmm"]["val"] == pytest.approx(result.val_loss, rel=1e-6)


def test_a_stochastic_vae_improves_under_two_processes_and_only_rank_0_writes(job):
    tmp, reports = job
    for report in reports:
        losses = report["vae"]
        assert all(map(torch.isfinite, torch.tensor(losses)))
        assert losses[-1] < losses[0]
    assert reports[0]["vae"] == reports[1]["vae"]  # the figures are all-reduced
    assert os.listdir(os.path.join(tmp, "vae_rank0"))
    assert not os.path.exists(os.path.join(tmp, "vae_rank1"))


def test_resume_under_two_processes_continues(job):
    _, reports = job
    for report in reports:
        assert report["resume"]["epochs_run"] == 4
        assert len(report["resume"]["train"]) == 4
    _, one = _fit_gmm(epochs=4)
    assert reports[0]["resume"]["train"][:2] == pytest.approx(one.train_loss[:2], rel=1e-6)


def test_without_torchrun_a_process_is_a_job_of_one():
    assert not distributed.active()
    index = torch.arange(7)
    assert distributed.share(index) == (index, 1.0)
    assert distributed.is_main_process()
