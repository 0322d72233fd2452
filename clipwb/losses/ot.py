"""Optimal-transport contrastive losses (spec gca.md), starting with the solver: a batched log-domain Sinkhorn for
square and rectangular kernels, balanced and unbalanced, differentiable through its unrolled iterations.

Notation: log_k = log K (e.g. s = cos / eps, or -C / eps), row marginal a (n), column marginal b (m). The plan is
P = diag(u) K diag(v), kept in the log domain: log P = log u[:, None] + log_k + log v[None, :]. A *half-step*
is one marginal projection:

    row:     log u = kappa (log a - logsumexp_j(log_k + log v))
    column:  log v = kappa (log b - logsumexp_i(log_k + log u))

with kappa = 1 (balanced) or rho / (rho + eps) (unbalanced: KL marginal penalties of strength rho, the update of
POT's ``sinkhorn_unbalanced``; pass the same eps as the kernel's). One row half-step from v = 1 is InfoNCE's
softmax normalisation: log P = log a + log_softmax(log_k, dim=-1). The loop has no data-dependent control flow,
so it never synchronises with the host.
"""
from __future__ import annotations

import math

import torch


def sinkhorn_log(log_k: torch.Tensor, log_a: torch.Tensor | None = None, log_b: torch.Tensor | None = None,
                 half_steps: int = 20, rho: float | None = None, eps: float = 1.0, row_first: bool = True,
                 detach: bool = False, init: str = "ones") -> torch.Tensor:
    """log P after ``half_steps`` alternating marginal projections (row first unless ``row_first=False``).

    ``log_k`` (..., n, m); ``log_a`` (..., n) and ``log_b`` (..., m) default to uniform marginals. ``rho`` (with
    the kernel's ``eps``) makes the projections unbalanced. ``detach`` stops gradients through the scalings (the
    plan still depends on log_k). ``init="uniform"`` starts from u = 1/n (POT's balanced solver), else u = v = 1."""
    if half_steps < 1:
        raise ValueError(f"half_steps must be >= 1, got {half_steps}")
    n, m = log_k.shape[-2:]
    if log_a is None:
        log_a = torch.full(log_k.shape[:-1], -math.log(n), dtype=log_k.dtype, device=log_k.device)
    if log_b is None:
        log_b = torch.full(log_k.shape[:-2] + (m,), -math.log(m), dtype=log_k.dtype, device=log_k.device)
    kappa = 1.0 if rho is None else rho / (rho + eps)
    log_u = torch.zeros_like(log_a) - (math.log(n) if init == "uniform" else 0.0)
    log_v = torch.zeros_like(log_b)
    k = log_k.detach() if detach else log_k
    row = row_first
    for _ in range(half_steps):
        if row:
            log_u = kappa * (log_a - torch.logsumexp(k + log_v.unsqueeze(-2), dim=-1))
        else:
            log_v = kappa * (log_b - torch.logsumexp(k + log_u.unsqueeze(-1), dim=-2))
        row = not row
    if detach:
        log_u, log_v = log_u.detach(), log_v.detach()
    return log_u.unsqueeze(-1) + log_k + log_v.unsqueeze(-2)


def ince_loss(s: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE as one row projection: KL(P_tgt || P^(1/2)) up to constants = cross-entropy of the rows of s
    against the positives (the diagonal, or ``target`` indices)."""
    n = s.shape[-2]
    logp = sinkhorn_log(s, half_steps=1) + math.log(n)  # rows of P sum to 1/n: rescale to distributions
    idx = torch.arange(n, device=s.device) if target is None else target
    return -logp.gather(-1, idx.view(-1, 1)).mean()


def gca_ince_loss(s: torch.Tensor, n_iters: int = 10, rho: float | None = None, eps: float = 1.0,
                  detach: bool = False, target: torch.Tensor | None = None) -> torch.Tensor:
    """GCA-INCE: the same cross-entropy on the plan after ``n_iters`` full Sinkhorn iterations (ending with a row
    projection, so that rows are distributions as in InfoNCE); unbalanced with ``rho``."""
    n = s.shape[-2]
    logp = sinkhorn_log(s, half_steps=2 * n_iters + 1, rho=rho, eps=eps, detach=detach) + math.log(n)
    idx = torch.arange(n, device=s.device) if target is None else target
    return -logp.gather(-1, idx.view(-1, 1)).mean()
