"""What every member of the VAE family shares: the base class, and training by the ELBO and by the IWAE bound."""

import pytest
import torch
from test_contract import CASES, _context, _data

import ppl_dgm
from ppl_dgm.models import get_model_class
from ppl_dgm.models.registry import BUILTIN_MODELS
from ppl_dgm.models.vae.base import AmortizedVAE

FAMILY = [name for name, spec in BUILTIN_MODELS.items() if spec.startswith("ppl_dgm.models.vae.")]
PARAMS = [pytest.param(name, kwargs, data, id=f"{name}-{i}")
          for name in FAMILY for i, (kwargs, data) in enumerate(CASES[name])]


def test_every_variant_is_an_amortized_vae():
    assert len(FAMILY) == 9
    for name in FAMILY:
        assert issubclass(get_model_class(name), AmortizedVAE), name


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_trains_by_the_elbo_and_the_iwae_bound(name, kwargs, data, objective):
    x = _data(data, torch.device("cpu"))[:16]
    torch.manual_seed(0)
    model = get_model_class(name)(**kwargs)
    batch = {"x": x, **_context(model, x)}
    result = ppl_dgm.fit(model, batch, epochs=2, batch_size=8, lr=1e-3, objective=objective, seed=0, progress=False)
    assert all(torch.isfinite(torch.tensor(result.train_loss)))
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    ppl_dgm.fit(model, batch, epochs=1, batch_size=8, lr=1e-3, objective=objective, seed=1, progress=False)
    moved = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert moved, f"{name}: no parameter moved under objective={objective}"
    score = ppl_dgm.log_likelihood(model, batch, num_samples=4)
    assert torch.isfinite(score.per_sample).all()

