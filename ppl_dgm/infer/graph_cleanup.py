"""Clean-ups of a recorded loss graph (``torch.fx``, ATen operators) that change no value it computes.

A story run through Pyro leaves work in its graph that a hand-written loss would not have: plates'
index tensors nobody reads, ``score_parts`` computed and dropped, views and broadcasts to the shape a
tensor already has, multiplications by 1. Each replay would pay Python's dispatch cost for every one of
them (a few microseconds each, forward and backward); these passes remove them once, when the graph is
recorded. Random operators are never removed or reordered, so a replay draws the same random numbers
as the story run eagerly.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

aten = torch.ops.aten

_SAME_TYPE_IDENTITIES = {aten.expand.default, aten.view.default, aten.reshape.default, aten._unsafe_view.default,
                         aten.broadcast_to.default, aten.to.device, aten.to.dtype, aten.to.dtype_layout, aten.to.other}
"""Operators that return their input's values unchanged when the result has the input's shape, dtype and device."""
_NEUTRAL_SCALARS = {aten.mul.Tensor: 1, aten.div.Tensor: 1, aten.add.Tensor: 0, aten.sub.Tensor: 0}
"""Arithmetic that returns its tensor argument unchanged with this Python number as the second argument."""


def clean(module: fx.GraphModule) -> fx.GraphModule:
    """Remove identity operations and dead code from ``module`` in place, and run ``x - logsumexp(x)`` as one
    ``log_softmax``; returns it, recompiled."""
    graph = module.graph
    _fuse_log_softmax(graph)
    _drop_identities(graph)
    _drop_dead_code(graph)
    graph.lint()
    module.recompile()
    return module


def _value(node: Any) -> Any:
    """The example value make_fx recorded for ``node`` (a fake tensor), or ``None``."""
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def _same_tensor_type(a: Any, b: Any) -> bool:
    """Whether two recorded values are tensors of the same shape, dtype and device."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and a.dtype == b.dtype and a.device == b.device)


def _mutates(node: fx.Node) -> bool:
    """An ATen operator that writes into one of its arguments (``normal_``, ``add_``, ``out=``)."""
    return isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable


def _aliases_input(node: Any) -> bool:
    """A view: an operator (or an item of a list of views) whose result shares its first argument's memory."""
    if not isinstance(node, fx.Node) or node.op != "call_function" or not node.args:
        return False
    if node.target is operator.getitem:
        return _aliases_input(node.args[0])
    return isinstance(node.target, torch._ops.OpOverload) and any(
        ret.alias_info is not None for ret in node.target._schema.returns)


def _alias_root(node: Any) -> Any:
    """The tensor whose memory ``node`` views (``node`` itself when it is not a view)."""
    while _aliases_input(node):
        node = node.args[0]
    return node


def _written_args(node: fx.Node) -> list:
    """The arguments ``node`` writes into, passed by position or by keyword (``out=``)."""
    if not _mutates(node):
        return []
    written = []
    for position, schema in enumerate(node.target._schema.arguments):
        if schema.alias_info is not None and schema.alias_info.is_write:
            if position < len(node.args) and not schema.kwarg_only:
                written.append(node.args[position])
            elif schema.name in node.kwargs:
                written.append(node.kwargs[schema.name])
    return written


def _written(graph: fx.Graph) -> set:
    """The tensors (by their alias roots) that some operator of ``graph`` writes into."""
    return {_alias_root(arg) for node in graph.nodes for arg in _written_args(node)}


def _identity_input(node: fx.Node, written: set) -> fx.Node | None:
    """The argument that ``node`` returns unchanged, if it is such an identity and nothing writes into either
    (replacing one by the other then changes no value), else ``None``."""
    if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    source = node.args[0]
    if _alias_root(source) in written or node in written or not _same_tensor_type(_value(node), _value(source)):
        return None
    if node.target in _SAME_TYPE_IDENTITIES:
        return source
    if node.target is aten.permute.default and list(node.args[1]) == list(range(len(node.args[1]))):
        return source
    neutral = _NEUTRAL_SCALARS.get(node.target)
    if neutral is not None and len(node.args) == 2 and not node.kwargs and isinstance(node.args[1], int | float) \
            and not isinstance(node.args[1], bool) and node.args[1] == neutral:
        return source
    return None


def _drop_identities(graph: fx.Graph) -> None:
    """Replace every identity operation (and every output of a broadcast that keeps its input's shape) by its
    input."""
    written = _written(graph)
    for node in list(graph.nodes):
        if node.target is operator.getitem and isinstance(node.args[0], fx.Node) \
                and node.args[0].target is aten.broadcast_tensors.default:
            source = node.args[0].args[0][node.args[1]]
            if _alias_root(source) not in written and node not in written \
                    and _same_tensor_type(_value(node), _value(source)):
                node.replace_all_uses_with(source)
            continue
        source = _identity_input(node, written)
        if source is not None:
            node.replace_all_uses_with(source)


def _fuse_log_softmax(graph: fx.Graph) -> None:
    """Replace ``x - logsumexp(x, [d], keepdim=True)`` (how ``Categorical(logits=x)`` normalizes its logits) by
    ``log_softmax(x, d)``: the same values up to rounding, in one kernel instead of three (forward and backward)."""
    for node in list(graph.nodes):
        if node.target is not aten.sub.Tensor or node.kwargs or len(node.args) != 2:
            continue
        x, normalizer = node.args
        if not (isinstance(normalizer, fx.Node) and normalizer.target is aten.logsumexp.default
                and normalizer.args[0] is x and len(normalizer.args) == 3 and normalizer.args[2] is True
                and len(normalizer.args[1]) == 1 and _same_tensor_type(_value(node), _value(x))):
            continue
        with graph.inserting_before(node):
            fused = graph.call_function(aten.log_softmax.int, (x, normalizer.args[1][0]))
        fused.meta = dict(node.meta)
        node.replace_all_uses_with(fused)


def _random(node: fx.Node) -> bool:
    """An operator that draws from the random number generator (its draws must stay in place)."""
    return isinstance(node.target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in node.target.tags


def _removable(node: fx.Node) -> bool:
    """Whether ``node``, which nobody reads, can go: pure operators, and writes into a temporary only the write
    itself reads. Anything else (random draws, grad-mode switches, writes into the model's buffers) stays."""
    if node.op != "call_function" or node.users:
        return node.op == "get_attr" and not node.users
    if node.target is operator.getitem:
        return True
    if not isinstance(node.target, torch._ops.OpOverload) or _random(node):
        return False
    if not _mutates(node):
        return True
    written = _written_args(node)
    return bool(written) and all(_fresh(arg) and len(arg.users) == 1 for arg in written)


def _fresh(node: Any) -> bool:
    """A tensor that an operator created (no view of, or write into, another one)."""
    return (isinstance(node, fx.Node) and node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and not _mutates(node) and all(ret.alias_info is None for ret in node.target._schema.returns))


def _drop_dead_code(graph: fx.Graph) -> None:
    """Erase removable nodes that nothing reads, last first, until none is left."""
    for node in reversed(list(graph.nodes)):
        if _removable(node):
            graph.erase_node(node)
