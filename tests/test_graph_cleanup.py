"""Clean-ups of recorded loss graphs (`ppl_dgm.infer.graph_cleanup`): identities and dead code go, values,
random draws and writes into buffers stay."""

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ppl_dgm.infer.graph_cleanup import clean

aten = torch.ops.aten


def _targets(module):
    return [node.target for node in module.graph.nodes if node.op == "call_function"]


def _record(function, *args):
    return make_fx(function, pre_dispatch=True)(*args)


def test_identities_and_dead_code_are_removed_and_the_value_is_unchanged():
    weight = torch.nn.Parameter(torch.randn(3, 4))

    def loss(x):
        unused = torch.arange(5) * 2.0  # a plate's index tensor nobody reads
        y = (x @ weight).expand(2, 4).reshape(2, 4).to(torch.float32) * 1.0 + 0.0
        z = y.permute(0, 1) / 1
        del unused
        return (z - 0).sum()

    x = torch.randn(2, 3)
    module = _record(loss, x)
    before = len(module.graph.nodes)
    clean(module)
    targets = _targets(module)
    assert len(module.graph.nodes) < before
    assert not {aten.arange.default, aten.expand.default, aten.reshape.default, aten.permute.default,
                aten.to.dtype} & set(targets)
    assert targets.count(aten.mul.Tensor) == 0 and targets.count(aten.div.Tensor) == 0
    torch.testing.assert_close(module(x), loss(x), rtol=0, atol=0)


def test_changing_ops_stay():
    def loss(x):
        return (x.expand(3, 2) * 2.0 + 1.0).reshape(6).to(torch.float64).sum()  # each changes shape, value or dtype

    module = clean(_record(loss, torch.randn(1, 2)))
    assert {aten.expand.default, aten.mul.Tensor, aten.add.Tensor, aten.reshape.default, aten.to.dtype} <= set(
        _targets(module))


def test_random_draws_and_buffer_writes_are_kept_even_when_unused():
    counter = torch.zeros(())

    def loss(x):
        torch.randn(4)  # a draw nobody reads still moves the random stream
        counter.add_(1)  # a write into state outside the graph
        return x.sum()

    module = clean(_record(loss, torch.ones(2)))
    targets = _targets(module)
    assert aten.add_.Tensor in targets
    assert any(torch.Tag.nondeterministic_seeded in t.tags for t in targets if isinstance(t, torch._ops.OpOverload))
    counter.zero_()
    torch.manual_seed(0)
    module(torch.ones(2))
    after_replay = torch.rand(())
    torch.manual_seed(0)
    torch.randn(4)
    assert counter == 1 and after_replay == torch.rand(())


def test_an_identity_whose_result_is_written_into_stays():
    def loss(x):
        y = x.clone()
        view = y.reshape(2)  # same shape, but the write below goes through it into y
        view.add_(1.0)
        return y.sum()

    x = torch.zeros(2)
    module = clean(_record(loss, x))
    assert module(x) == 2.0


def test_logits_normalized_by_logsumexp_run_as_one_log_softmax():
    def loss(logits, index):
        normalized = torch.distributions.Categorical(logits=logits, validate_args=False).logits  # x - logsumexp(x)
        return normalized.gather(-1, index.unsqueeze(-1)).sum()

    logits, index = torch.randn(5, 4, 3, requires_grad=True), torch.randint(0, 3, (5, 4))
    module = clean(_record(loss, logits, index))
    targets = _targets(module)
    assert aten.log_softmax.int in targets and aten.logsumexp.default not in targets
    torch.testing.assert_close(module(logits, index), loss(logits, index))
    grad, = torch.autograd.grad(module(logits, index), logits)
    torch.testing.assert_close(grad, torch.autograd.grad(loss(logits, index), logits)[0])


def test_writes_through_out_are_kept_and_block_identities():
    state = torch.zeros(3)

    def loss(x):
        torch.mul(x.detach().mean(0), 1.0, out=state)  # a write into outside state, its result unused
        y = x * 2
        copy_of_y = y * 1  # not an identity: y is overwritten below
        torch.add(x, 5.0, out=y)
        return copy_of_y.sum() * 100 + y.sum()

    x = torch.ones(2, 3)
    module = clean(_record(loss, x))
    state.zero_()
    assert module(x) == loss(x) and torch.equal(state, torch.ones(3))
