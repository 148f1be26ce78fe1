"""Batched HMM kernels: scaled forward-backward over padded sequences (chunked in time, with a
log-space fallback), Viterbi, and a differentiable forward pass for many parameter sets at once, over
the padded layout of `ppl_dgm.models.classical.hmm.padding`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ppl_dgm.models.classical.hmm.padding import Layout, Workspace, buffer


def _tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def _steps(workspace: Workspace | None, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensor.unbind(0)``, cached in ``workspace`` for the same memory (the loops index every step)."""
    if workspace is None:
        return tensor.unbind(0)
    key = ("steps", tensor.data_ptr(), tuple(tensor.shape), tensor.stride())
    if key not in workspace:
        workspace[key] = tensor.unbind(0)
    return workspace[key]


def _chunk_products(transmat: torch.Tensor, frame: torch.Tensor, layout: Layout, every: int = 1,
                    workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Row-normalized products ``P_c = M_{cL} ... M_{cL+L-1}`` with ``M_t = A diag(b~_t)`` (identity at
    padded steps, ``diag(b~_0)`` at ``t = 0``) and their log row scales, ``P_c = diag(exp(logd_c)) P~_c``.

    Rows are normalized every ``every`` steps; the smallest row sum met is returned, so that a caller
    can redo the products normalizing every step should a row have come near underflow.
    """
    chunk, n_chunks, n, k = frame.shape
    tiny = _tiny(frame.dtype)
    eye = torch.eye(k, dtype=frame.dtype, device=frame.device)
    product = buffer(workspace, "product", (n_chunks, n, k, k), frame)
    torch.mul(transmat, frame[0].unsqueeze(-2), out=product)
    product[0] = torch.diag_embed(frame[0, 0])
    if not layout.full[0]:
        product.copy_(torch.where(layout.mask[0][..., None, None], product, eye))
    spare = buffer(workspace, "spare", product.shape, frame)
    frames = _steps(workspace, frame.unsqueeze(-2))
    keep = layout.mask[..., None, None]
    row_sums = []
    for step in range(1, chunk):
        if (step - 1) % every == 0:
            row_sums.append(product.sum(-1, keepdim=True))
            product.div_(row_sums[-1].clamp_min(tiny))
        nxt = torch.mm(product.view(-1, k), transmat, out=spare.view(-1, k)).view_as(product).mul_(frames[step])
        if not layout.full[step]:
            nxt = torch.where(keep[step], nxt, product)
        product, spare = nxt, product
    row_sums.append(product.sum(-1, keepdim=True))
    product.div_(row_sums[-1].clamp_min(tiny))
    sums = torch.stack(row_sums)
    smallest = float(sums.amin())
    log_scale = sums.clamp_min_(tiny).log_().sum(0).squeeze(-1)  # (C, N, K)
    return product, log_scale, smallest


def _combine_forward(startprob: torch.Tensor, products: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Normalized forward vectors at the end of every chunk, ``(C, N, K)``, chunk by chunk."""
    n_chunks, n, k = log_scale.shape
    lowest = torch.finfo(log_scale.dtype).min
    tiny = _tiny(log_scale.dtype)
    out = torch.empty_like(log_scale)
    alpha = startprob.expand(n, k)
    for c in range(n_chunks):
        weights = alpha.log() + log_scale[c]
        weights = (weights - weights.amax(-1, keepdim=True).clamp_min(lowest)).exp_()
        alpha = torch.bmm(weights.unsqueeze(1), products[c]).squeeze(1)
        torch.div(alpha, alpha.sum(-1, keepdim=True).clamp_min_(tiny), out=out[c])
        alpha = out[c]
    return out


def _combine_backward(products: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Backward vectors (scaled to max 1) at the end of every chunk, ``(C, N, K)``."""
    n_chunks, n, k = log_scale.shape
    lowest = torch.finfo(log_scale.dtype).min
    out = torch.empty_like(log_scale)
    out[-1] = 1.0
    for c in range(n_chunks - 1, 0, -1):
        beta = torch.bmm(products[c], out[c].unsqueeze(-1)).squeeze(-1)
        weights = beta.log_() + log_scale[c]
        torch.exp(weights - weights.amax(-1, keepdim=True).clamp_min(lowest), out=out[c - 1])
    return out


@dataclass
class Posteriors:
    """What one forward-backward pass gives.

    Attributes:
        log_likelihood: ``log p(x_n)`` per sequence, ``(N,)`` (nats).
        gamma: state posteriors ``(L, C, N, K)`` in the `Layout` (zero at padded steps), or ``None``.
        xi_sum: expected transition counts summed over sequences and steps ``(K, K)``, or ``None``.
    """

    log_likelihood: torch.Tensor
    gamma: torch.Tensor | None = None
    xi_sum: torch.Tensor | None = None


@torch.no_grad()
def forward_backward(startprob: torch.Tensor, transmat: torch.Tensor, log_frame: torch.Tensor, layout: Layout,
                     posteriors: bool = True, workspace: Workspace | None = None) -> Posteriors:
    """Scaled forward-backward over all sequences at once, with a log-space fallback.

    Emissions are rescaled per step (``b~_t = exp(log b_t - max_k log b_t(k))``), the forward vectors
    normalized per step and the backward vectors divided by the forward scale factors (Rabiner's
    scaling), so neither long sequences nor outliers underflow. With ``C > 1`` chunks the products of
    each chunk's ``A diag(b~_t)`` are computed in parallel, the chunk boundaries combined sequentially
    (row scales kept in log space), and the steps inside the chunks recovered in parallel. The rare
    sequence that the scaled arithmetic cannot represent (next to structural zeros: an observation
    only an unreachable state explains, or backward variables that overflow) is redone in log space.

    Args:
        startprob: ``(K,)``; transmat: ``(K, K)`` (rows: from-state).
        log_frame: emission log-probabilities ``(L, C, N, K)`` in ``layout``; overwritten.
        layout: the `Layout` of the sequences.
        posteriors: also compute state posteriors and expected transition counts.
        workspace: buffers reused between calls (``gamma`` is one of them: read it before the next call).

    Returns:
        `Posteriors`.
    """
    chunk, n_chunks, n, k = log_frame.shape
    mask = layout.mask
    if not posteriors and float(transmat.min()) < _tiny(log_frame.dtype) ** 0.3:
        # with (near-)structural zeros a path the scaled forward pass lost shows only in the backward pass
        return Posteriors(forward_backward(startprob, transmat, log_frame, layout, True, workspace).log_likelihood)
    shift = torch.amax(log_frame, -1, keepdim=True, out=buffer(workspace, "shift", (chunk, n_chunks, n, 1), log_frame))
    shift.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # all -inf: an impossible step
    frame = torch.exp(log_frame.sub_(shift), out=buffer(workspace, "frame", log_frame.shape, log_frame))
    if not layout.all_full:
        frame.masked_fill_(~mask.unsqueeze(-1), 1.0)
    if n_chunks > 1:
        # rows of a product shrink by at most min(A) per step (b~ has maximum 1): with a dense transition
        # matrix they need normalizing only every few steps; should one come near underflow, redo
        lowest, digits = float(transmat.min()), -math.log10(_tiny(frame.dtype))
        every = 1 if lowest <= 0 else int(min(8, max(1, 0.3 * digits // max(1.0, -math.log10(lowest)))))
        products, log_scale, smallest = _chunk_products(transmat, frame, layout, every, workspace)
        if every > 1 and not smallest > 10 ** (-0.6 * digits):
            products, log_scale, smallest = _chunk_products(transmat, frame, layout, 1, workspace)
        alpha_ends = _combine_forward(startprob, products, log_scale)
    flat = (-1, k)
    # u_t = (alpha_{t-1} A) * b~_t with alpha_{t-1} normalized; one product with [A | 1] gives both the
    # next prediction and the sum s_t of u_t, so each step is a product, a multiplication and a division
    extended = torch.cat([transmat, torch.ones(k, 1, dtype=frame.dtype, device=frame.device)], 1)
    work = buffer(workspace, "work", (chunk, n_chunks, n, k + 1), frame)
    alpha = buffer(workspace, "alpha", frame.shape, frame)
    predicted = torch.empty(n_chunks, n, k, dtype=frame.dtype, device=frame.device)
    predicted[0] = startprob
    if n_chunks > 1:
        predicted[1:] = (alpha_ends[:-1].reshape(flat) @ transmat).view(n_chunks - 1, n, k)
    torch.mul(predicted, frame[0], out=alpha[0])
    # per-step views made once: indexing inside the loop costs as much as the arithmetic
    alphas, frames = _steps(workspace, alpha.view(chunk, -1, k)), _steps(workspace, frame.view(chunk, -1, k))
    works = work.view(chunk, -1, k + 1)
    products_, predictions = _steps(workspace, works), _steps(workspace, works[..., :k])
    totals = _steps(workspace, works[..., k:])
    for step in range(1, chunk):
        torch.mm(alphas[step - 1], extended, out=products_[step])
        torch.mul(predictions[step], frames[step], out=alphas[step]).div_(totals[step])
    scale = buffer(workspace, "scale", (chunk, n_chunks, n, 1), frame)
    scale[:-1] = work[1:, ..., k:]
    torch.sum(alpha[-1], -1, keepdim=True, out=scale[-1])
    terms = torch.log(scale, out=buffer(workspace, "terms", scale.shape, frame)).add_(shift)
    if not layout.all_full:
        terms.masked_fill_(~mask.unsqueeze(-1), 0.0)
    log_likelihood = terms.sum((0, 1, 3))
    # s_t ~ 0: an observation that only (nearly) unreachable states explain; redone in log space
    representable = _tiny(frame.dtype) ** 0.9
    failed = _out_of_range(scale.squeeze(-1), mask, representable)
    if not posteriors:
        if bool(failed.any()):
            redo = failed.nonzero().squeeze(1)
            log_likelihood[redo] = _log_space(startprob, transmat, log_frame, shift, layout, redo, False)[0]
        return Posteriors(log_likelihood)
    alpha.div_(scale)
    if not layout.all_full:
        alpha.masked_fill_(~mask.unsqueeze(-1), 0.0)

    beta_ends = _combine_backward(products, log_scale) if n_chunks > 1 else None
    frame.div_(scale)  # b~_t / s_t: the backward recursion of the scaled algorithm
    beta = _backward(transmat, frame, beta_ends, layout, workspace)
    # G_t = sum_k alpha_t(k) beta_t(k) is the same at every step of a chunk (1 without chunks): one per
    # chunk; with chunks (boundary values of beta scaled to maximum one) it may be tiny
    first = torch.einsum("cnk,cnk->cn", alpha[0], beta[0]).masked_fill_(~mask[0], 1.0)
    failed |= _out_of_range(first, None, representable)
    if n_chunks > 1:
        beta.div_(first.unsqueeze(-1))
    # xi_t(i, j) = alpha_{t-1}(i) A_ij b~_t(j) beta_t(j) / (s_t G_t), summed over t >= 1
    weights = frame.mul_(beta)
    if not layout.all_full:
        weights.masked_fill_(~mask.unsqueeze(-1), 0.0)
    counts = _transition_counts(alpha, weights, failed)
    if not bool(counts.isfinite().all()):  # beta overflowed somewhere (and so did its successors' weights)
        failed |= ~weights.isfinite().all(-1).all(0).all(0)
        counts = _transition_counts(alpha, weights, failed)
    gamma = alpha.mul_(beta)
    xi_sum = transmat * counts
    redo = failed.nonzero().squeeze(1) if bool(failed.any()) else None
    if redo is not None:
        log_likelihood[redo], gamma[:, :, redo], extra = _log_space(startprob, transmat, log_frame, shift, layout,
                                                                    redo, True)
        xi_sum += extra
    return Posteriors(log_likelihood, gamma, xi_sum)


def _out_of_range(values: torch.Tensor, mask: torch.Tensor | None, low: float) -> torch.Tensor:
    """Per sequence (last dim), whether a real entry lies outside ``(low, inf)`` (nan included)."""
    smallest, largest = torch.aminmax(values if mask is None else values.masked_fill(~mask, 1.0))
    if float(smallest) > low and float(largest) < math.inf:  # one pass in the common case
        return torch.zeros(values.shape[-1], dtype=torch.bool, device=values.device)
    bad = ~((values > low) & (values < math.inf))
    bad = bad if mask is None else bad & mask
    return bad.reshape(-1, values.shape[-1]).any(0)


def _transition_counts(alpha: torch.Tensor, weights: torch.Tensor, failed: torch.Tensor) -> torch.Tensor:
    """``sum_t alpha_{t-1}^T weights_t`` over consecutive steps (within and across chunks), leaving out the
    ``failed`` sequences (zeroed in both)."""
    k = alpha.shape[-1]
    if bool(failed.any()):
        redo = failed.nonzero().squeeze(1)
        alpha.index_fill_(2, redo, 0.0)
        weights.index_fill_(2, redo, 0.0)
    counts = alpha[:-1].reshape(-1, k).T @ weights[1:].reshape(-1, k)
    if alpha.shape[1] > 1:
        counts += alpha[-1, :-1].reshape(-1, k).T @ weights[0, 1:].reshape(-1, k)
    return counts


def _log_space(startprob: torch.Tensor, transmat: torch.Tensor, shifted: torch.Tensor, shift: torch.Tensor,
               layout: Layout, sequences: torch.Tensor, posteriors: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Forward-backward in log space (hmmlearn's ``implementation="log"``) for some ``sequences``.

    ``shifted + shift`` are the emission log-probabilities in the layout. Returns the log-likelihoods
    ``(B,)``, the posteriors in the layout ``(L, C, B, K)`` and the expected transition counts ``(K, K)``.
    """
    chunk, n_chunks, _, k = shifted.shape
    steps = chunk * n_chunks

    def time_major(value: torch.Tensor) -> torch.Tensor:  # (L, C, B, ...) -> (T, B, ...)
        return value.index_select(2, sequences).transpose(0, 1).reshape(steps, -1, *value.shape[3:])

    log_frame, mask = time_major(shifted) + time_major(shift), time_major(layout.mask.unsqueeze(-1))
    log_start, log_trans = startprob.log(), transmat.log()
    log_alpha = torch.empty_like(log_frame)
    log_alpha[0] = log_start + log_frame[0]
    for t in range(1, steps):
        new = torch.logsumexp(log_alpha[t - 1].unsqueeze(-1) + log_trans, -2) + log_frame[t]
        log_alpha[t] = torch.where(mask[t], new, log_alpha[t - 1])
    log_likelihood = torch.logsumexp(log_alpha[-1], -1)
    if not posteriors:
        return log_likelihood, None, None
    log_beta = torch.zeros_like(log_frame)
    xi = torch.zeros_like(transmat)
    for t in range(steps - 1, 0, -1):
        following = log_frame[t] + log_beta[t]
        new = torch.logsumexp(log_trans + following.unsqueeze(-2), -1)
        log_beta[t - 1] = torch.where(mask[t], new, log_beta[t])
        following = (following - log_likelihood.unsqueeze(-1)).masked_fill_(~mask[t], -math.inf)
        xi += (log_alpha[t - 1].unsqueeze(-1) + log_trans + following.unsqueeze(-2)).exp_().sum(0)
    log_gamma = log_alpha + log_beta
    gamma = (log_gamma - torch.logsumexp(log_gamma, -1, keepdim=True)).exp_().masked_fill_(~mask, 0.0)
    gamma = gamma.view(n_chunks, chunk, -1, k).transpose(0, 1)
    return log_likelihood, gamma, xi


def _backward(transmat: torch.Tensor, frame: torch.Tensor, ends: torch.Tensor | None, layout: Layout,
              workspace: Workspace | None = None) -> torch.Tensor:
    """Backward vectors ``beta_{t-1} = A (b~_t / s_t * beta_t)`` inside the chunks, from their values at
    the chunk ends (ones without chunks)."""
    chunk, n_chunks, n, k = frame.shape
    beta = buffer(workspace, "beta", frame.shape, frame)
    if ends is None:
        beta[-1] = 1.0
    else:
        beta[-1] = ends
    transposed = transmat.T.contiguous()
    weighted = torch.empty(n_chunks * n, k, dtype=frame.dtype, device=frame.device)
    betas, frames = _steps(workspace, beta.view(chunk, -1, k)), _steps(workspace, frame.view(chunk, -1, k))
    keep = layout.mask.view(chunk, -1, 1)
    for step in range(chunk - 1, 0, -1):
        torch.mul(frames[step], betas[step], out=weighted)
        previous = torch.mm(weighted, transposed, out=betas[step - 1])
        if not layout.full[step]:
            betas[step - 1].copy_(torch.where(keep[step], previous, betas[step]))
    return beta


@torch.no_grad()
def viterbi(log_startprob: torch.Tensor, log_transmat: torch.Tensor, log_frame: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Most probable state paths of padded sequences (time-major).

    Args:
        log_startprob: ``(K,)``; log_transmat: ``(K, K)``.
        log_frame: emission log-probabilities ``(T, N, K)``.
        mask: ``(T, N)`` real steps (each sequence's steps come first).

    Returns:
        ``(log_prob, path)``: the joint log-probability of each best path ``(N,)`` and the paths
        ``(T, N)`` (at padded steps the last real state is repeated). Ties go to the lowest state,
        as in hmmlearn.
    """
    steps, n, k = log_frame.shape
    identity = torch.arange(k, device=log_frame.device).expand(n, k)
    delta = log_startprob + log_frame[0]
    pointers = torch.empty(steps, n, k, dtype=torch.long, device=log_frame.device)
    pointers[0] = identity
    for t in range(1, steps):
        candidates = delta.unsqueeze(-1) + log_transmat  # [n, from, to]
        best = candidates.argmax(-2)
        new = candidates.gather(-2, best.unsqueeze(-2)).squeeze(-2) + log_frame[t]
        keep = mask[t].unsqueeze(-1)
        delta = torch.where(keep, new, delta)
        pointers[t] = torch.where(keep, best, identity)
    state = delta.argmax(-1)
    log_prob = delta.gather(-1, state.unsqueeze(-1)).squeeze(-1)
    path = torch.empty(steps, n, dtype=torch.long, device=log_frame.device)
    path[-1] = state
    for t in range(steps - 1, 0, -1):
        state = pointers[t].gather(-1, state.unsqueeze(-1)).squeeze(-1)
        path[t - 1] = state
    return log_prob, path


def forward_log_likelihood(log_startprob: torch.Tensor, log_transmat: torch.Tensor, log_frame: torch.Tensor,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable ``log p(x_n)`` for many parameter sets at once (scaled forward pass).

    Args:
        log_startprob: ``(..., K)``; log_transmat: ``(..., K, K)``.
        log_frame: emission log-probabilities ``(..., N, T, K)``.
        mask: ``(N, T)`` real steps, or ``None`` (all real).

    Returns:
        ``(..., N)`` log-likelihoods (nats).
    """
    tiny = _tiny(log_frame.dtype)
    shift = log_frame.amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    frame = (log_frame - shift).exp()
    transmat = log_transmat.exp().unsqueeze(-3)  # (..., 1, K, K)
    alpha = log_startprob.exp().unsqueeze(-2) * frame[..., 0, :]
    total = alpha.sum(-1, keepdim=True)
    log_likelihood = total.squeeze(-1).log() + shift[..., 0, 0]
    alpha = alpha / total.clamp_min(tiny)
    for t in range(1, frame.shape[-2]):
        new = (alpha.unsqueeze(-2) @ transmat).squeeze(-2) * frame[..., t, :]
        total = new.sum(-1, keepdim=True)
        term = total.squeeze(-1).log() + shift[..., t, 0]
        new = new / total.clamp_min(tiny)
        if mask is None:
            log_likelihood = log_likelihood + term
            alpha = new
        else:
            keep = mask[:, t]
            log_likelihood = log_likelihood + torch.where(keep, term, torch.zeros_like(term))
            alpha = torch.where(keep.unsqueeze(-1), new, alpha)
    return log_likelihood


# ----------------------------------------------------------------- emissions (hmmlearn's formulas)
