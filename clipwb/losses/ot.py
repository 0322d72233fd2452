"""Optimal-transport contrastive losses (Chen et al., "Your contrastive learning problem is secretly a distribution
alignment problem", NeurIPS 2024), starting with the solver: a batched log-domain Sinkhorn for square and
rectangular kernels, balanced and unbalanced, differentiable through its unrolled iterations.

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
import torch.nn.functional as F


# The "scaled" path works with E = exp(log K - r), r_i = max_j log K_ij, and exp-domain scalings; it is exact while
# the scalings stay normal floats, which holds when |r| and every column's -log max_i E_ij stay within a bound per
# dtype (cosines / eps give |r| <= 1 / eps and -log max_i E_ij <= 2 / eps; float32 covers eps >= 0.05).
_SCALED_BOUND = {torch.float64: (300.0, 300.0), torch.float32: (25.0, 45.0)}


def _scaled_ok(r: torch.Tensor, e: torch.Tensor) -> bool:
    bound = _SCALED_BOUND.get(e.dtype)
    if bound is None:  # half precision: the log-sum-exp path
        return False
    col_max = e.detach().amax(-2)
    ok = (r.detach().abs().amax() <= bound[0]) & (col_max.amin() >= math.exp(-bound[1]))
    return bool(ok)  # one host read, before the loop


def _sinkhorn(log_k, log_a, log_b, half_steps, rho, eps, row_first, detach, init, impl):
    """The shared solver: (log u, log v, (E, u~, v) on the scaled path else None)."""
    if half_steps < 1:
        raise ValueError(f"half_steps must be >= 1, got {half_steps}")
    if impl not in ("auto", "scaled", "lse"):
        raise ValueError(f"impl must be 'auto', 'scaled' or 'lse', got {impl!r}")
    n, m = log_k.shape[-2:]
    if log_a is None:
        log_a = torch.full(log_k.shape[:-1], -math.log(n), dtype=log_k.dtype, device=log_k.device)
    if log_b is None:
        log_b = torch.full(log_k.shape[:-2] + (m,), -math.log(m), dtype=log_k.dtype, device=log_k.device)
    kappa = 1.0 if rho is None else rho / (rho + eps)
    u0, v0 = (-math.log(n), -math.log(m)) if init == "uniform" else (0.0, 0.0)
    k = log_k.detach() if detach else log_k
    row = row_first
    scaled = impl != "lse"
    if scaled:
        r = k.amax(-1, keepdim=True)  # (..., n, 1)
        e = (k - r).exp_()
        scaled = impl == "scaled" or _scaled_ok(r, e)
    if scaled:
        r = r.squeeze(-1)
        if k.dim() == 2:  # matrix-vector products on 1-D scalings
            mv, mtv = (lambda x: torch.mv(e, x)), (lambda x: torch.mv(e.T, x))
        else:
            mv = lambda x: (e @ x.unsqueeze(-1)).squeeze(-1)  # noqa: E731
            mtv = lambda x: (x.unsqueeze(-2) @ e).squeeze(-2)  # noqa: E731
        a, b = log_a.exp(), log_b.exp()
        if kappa != 1.0:
            a = a * torch.exp(r * ((1.0 - kappa) / kappa))  # u~ = (a e^{(1-kappa) r / kappa} / E v)^kappa
        u = torch.exp(r + u0)  # u~ = e^r u
        v = torch.full_like(b, math.exp(v0))
        for _ in range(half_steps):
            if row:
                u = a / mv(v)
                u = u if kappa == 1.0 else u.pow(kappa)
            else:
                v = b / mtv(u)
                v = v if kappa == 1.0 else v.pow(kappa)
            row = not row
        if impl == "auto" and not bool((torch.isfinite(u) & (u > 0)).all() & (torch.isfinite(v) & (v > 0)).all()):
            # the kernel was fine but the scalings left the normal range during the loop (tiny eps, or masses far
            # from balance with rho = inf): one host read after the loop, then the log-domain path from scratch
            return _sinkhorn(log_k, log_a, log_b, half_steps, rho, eps, row_first, detach, init, "lse")
        log_u, log_v, state = u.log() - r, v.log(), (e, u, v)
    else:
        log_u = torch.zeros_like(log_a) + u0
        log_v = torch.zeros_like(log_b) + v0
        for _ in range(half_steps):
            if row:
                log_u = kappa * (log_a - torch.logsumexp(k + log_v.unsqueeze(-2), dim=-1))
            else:
                log_v = kappa * (log_b - torch.logsumexp(k + log_u.unsqueeze(-1), dim=-2))
            row = not row
        state = None
    if detach:
        log_u, log_v = log_u.detach(), log_v.detach()
    return log_u, log_v, state


def sinkhorn_log(log_k: torch.Tensor, log_a: torch.Tensor | None = None, log_b: torch.Tensor | None = None,
                 half_steps: int = 20, rho: float | None = None, eps: float = 1.0, row_first: bool = True,
                 detach: bool = False, init: str = "ones", return_scalings: bool = False, impl: str = "auto"):
    """log P after ``half_steps`` alternating marginal projections (row first unless ``row_first=False``);
    with ``return_scalings`` also (log u, log v).

    ``log_k`` (..., n, m); ``log_a`` (..., n) and ``log_b`` (..., m) default to uniform marginals. ``rho`` (with
    the kernel's ``eps``) makes the projections unbalanced. ``detach`` stops gradients through the scalings (the
    plan still depends on log_k). ``init="uniform"`` starts from u = 1/n, v = 1/m (POT's balanced solver, and the
authors' GCA-UOT code), else u = v = 1; a balanced plan does not depend on it, an unbalanced one does.

    ``impl`` picks how the projections are computed; both give the same plan (tested to 1e-10 in float64):

    - ``"lse"``: ``torch.logsumexp`` over the n x m matrix at every half-step (an exp over the matrix each time);
    - ``"scaled"``: the kernel's log is shifted once per row, E = exp(log K - r) with r_i = max_j log K_ij, and the
      scalings are kept in the exp domain relative to that shift (u~ = e^r u), so that each half-step is one
      matrix-vector product and one division, u~ = (a / E v)^kappa e^{(1 - kappa) r}, v = (b / E^T u~)^kappa:
      log-domain stabilisation absorbed into the kernel before the loop (Schmitzer 2019), the loop as cheap as
      POT's default solver, and a backward pass of matrix products;
    - ``"auto"`` (default): ``"scaled"`` when it is exact, i.e. the row maxima |r| and every column's
      -log max_i E_ij are within 300 (float64), or 25 and 45 (float32: cosines / eps with eps >= 0.05); else
      ``"lse"``. The check is one host read before the loop; nothing in the loop synchronises. The scalings can
      still leave the normal range during the loop (eps 1e-5, or unbalanced masses 1 vs 50 with rho = inf, as in
      POT's own tests): ``auto`` checks them once after the loop and then solves again on the ``lse`` path, so
      it never returns a non-finite plan where ``lse`` gives a finite one."""
    log_u, log_v, _ = _sinkhorn(log_k, log_a, log_b, half_steps, rho, eps, row_first, detach, init, impl)
    log_p = (log_k + log_u.unsqueeze(-1)).add_(log_v.unsqueeze(-2))
    return (log_p, log_u, log_v) if return_scalings else log_p


def sinkhorn_plan(log_k: torch.Tensor, log_a: torch.Tensor | None = None, log_b: torch.Tensor | None = None,
                  half_steps: int = 20, rho: float | None = None, eps: float = 1.0, row_first: bool = True,
                  detach: bool = False, init: str = "ones", impl: str = "auto") -> torch.Tensor:
    """The plan P itself (what POT's solvers return): ``sinkhorn_log(...).exp()`` with the same arguments, formed
    on the scaled path as diag(u~) E diag(v) without another exp over the matrix."""
    log_u, log_v, state = _sinkhorn(log_k, log_a, log_b, half_steps, rho, eps, row_first, detach, init, impl)
    if state is None or (detach and log_k.requires_grad):
        return (log_k + log_u.unsqueeze(-1)).add_(log_v.unsqueeze(-2)).exp_()
    e, u, v = state
    if e.requires_grad or u.requires_grad or v.requires_grad:
        return e * u.unsqueeze(-1) * v.unsqueeze(-2)
    return e.mul_(u.unsqueeze(-1)).mul_(v.unsqueeze(-2))  # e is the solver's own buffer: reuse it


def ince_loss(s: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE as one row projection: KL(P_tgt || P^(1/2)) up to constants = cross-entropy of the rows of s
    against the positives (the diagonal, or ``target`` indices)."""
    return gca_ince_loss(s, n_iters=0, target=target)  # zero full iterations: the single row projection


def gca_ince_loss(s: torch.Tensor, n_iters: int = 10, rho: float | None = None, eps: float = 1.0,
                  detach: bool = False, target: torch.Tensor | None = None) -> torch.Tensor:
    """GCA-INCE: the same cross-entropy on the plan after ``n_iters`` full Sinkhorn iterations (ending with a row
    projection, so that rows are distributions as in InfoNCE); unbalanced with ``rho``; ``n_iters=0`` is INCE."""
    n = s.shape[-2]
    logp = sinkhorn_log(s, half_steps=2 * n_iters + 1, rho=rho, eps=eps, detach=detach) + math.log(n)
    idx = torch.arange(n, device=s.device) if target is None else target
    return -logp.gather(-1, idx.view(-1, 1)).mean()


# -- similarity matrices ----------------------------------------------------------------------------------------
def two_view_logits(z1: torch.Tensor, z2: torch.Tensor, eps: float = 0.5, self_pairs: str = "mask",
                    clamp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR-style 2N x 2N similarities s = cos / eps of the views [z1; z2] and the positive of each row
    (i <-> i + N). Self-pairs are masked with -inf (``self_pairs="mask"``, the clean choice) or, as the authors'
    code does (nerdslab/gca, ``compute_cost``), given the largest cost of the matrix (``"max_cost"``: the cost
    1 - cos of a self-pair is set to max_ij (1 - cos_ij), i.e. its cosine to the smallest cosine of the matrix,
    about an orthogonal pair, not cos = -1); ``clamp`` clamps cosines below at 1e-7 (the reference's quirk; off by
    default). With ``clamp=True, self_pairs="max_cost"`` the matrix is the authors' -Cost / eps up to the constant
    1 / eps, which the balanced losses (INCE, GCA-INCE, RINCE) do not see."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    cos = z @ z.T
    if clamp:
        cos = cos.clamp(min=1e-7)
    n2 = len(z)
    eye = torch.eye(n2, dtype=torch.bool, device=z.device)
    if self_pairs == "mask":
        cos = cos.masked_fill(eye, float("-inf"))
    elif self_pairs == "max_cost":
        # the diagonal (cos = 1, cost 0) never holds the maximum cost, so the minimum over the whole matrix is the
        # minimum over the other pairs (differentiable, as the authors' Cost.max())
        cos = torch.where(eye, cos.min(), cos)
    else:
        raise ValueError(f"self_pairs must be 'mask' or 'max_cost', got {self_pairs!r}")
    n = n2 // 2
    pos = torch.cat([torch.arange(n, n2), torch.arange(0, n)]).to(z.device)
    return cos / eps, pos


def target_plan(pos: torch.Tensor, groups: torch.Tensor | None = None, alpha: float = 0.0, beta: float = 0.0,
                n_cols: int | None = None) -> torch.Tensor:
    """P_tgt (rows normalised): 1 on each row's positive, ``alpha`` on other pairs of the same group (label or
    domain), ``beta`` across groups; identity-like when alpha = beta = 0."""
    n = len(pos)
    m = n_cols or n
    t = torch.zeros(n, m, dtype=torch.float64, device=pos.device)
    if groups is not None and (alpha or beta):
        gr = groups[:n].view(-1, 1)
        gc = groups[:m].view(1, -1)
        t = torch.where(gr == gc, torch.full_like(t, alpha), torch.full_like(t, beta))
        if n == m:
            t.fill_diagonal_(0.0)
    t[torch.arange(n), pos] = 1.0
    return t / t.sum(-1, keepdim=True)


# -- losses ---------------------------------------------------------------------------------------------------
GCA_METHODS = ("ince", "rince", "gca-ince", "gca-rince", "gca-uot")

def _rince_exp(exponents: torch.Tensor, q: float, what: str) -> torch.Tensor:
    """exp(exponents) for the RINCE terms, or a clear error where it would overflow to inf (and the loss to NaN):
    those terms grow like exp(q * cos / eps). One host read per call (the RINCE family only)."""
    # room for the mean over the terms
    limit = math.log(torch.finfo(exponents.dtype).max) - 1.0 - math.log(max(exponents.numel(), 1))
    top = float(exponents.detach().max())
    if not top <= limit:  # also catches NaN
        raise ValueError(
            f"{what}: the RINCE term exp(q * s) overflows {exponents.dtype} (largest exponent {top:.4g} > {limit:.1f}):"
            f" its scores s = cos / eps must stay below {limit:.0f} / q = {limit / q:.4g}. Use a larger eps (with "
            f"cosines, eps >= {q / limit:.3g}), L2-normalised embeddings, a smaller q, or float64")
    return exponents.exp()


def _ce(log_p_rows: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    safe = torch.where(tgt > 0, log_p_rows, torch.zeros_like(log_p_rows))
    return -(tgt.to(log_p_rows.dtype) * safe).sum(-1).mean()


UOT_FORMS = ("paper", "reference")


def gca_loss(s: torch.Tensor, pos: torch.Tensor | None = None, method: str = "gca-ince", n_iters: int = 10,
             eps: float = 0.5, rho: float = 0.2, q: float = 0.98, lam: float = 0.01, r1: float = 1.0,
             r2: float = 0.02, target: torch.Tensor | None = None, detach: bool = False,
             uot_ce: str = "rows", uot_form: str = "paper") -> torch.Tensor:
    """The GCA family on a similarity matrix ``s`` (n x m, already divided by eps; -inf entries are masked):

    - ``ince``: cross-entropy of the row-normalised kernel (one row projection) against P_tgt;
    - ``gca-ince``: the same after ``n_iters`` Sinkhorn iterations (rows projected last);
    - ``rince`` (Chuang et al. 2022): mean_i -(e^{s_i+})^q / q + (lam sum_j e^{s_ij})^q / q;
    - ``gca-rince``: -(1/q)(P_ii+ / u_i)^q + (1/q)(lam a_i / u_i)^q with the t-step plan P = diag(u) K diag(v) and
      row marginal a = 1/n (the paper's formula; at t = 0, P_i+/u_i = e^{s_i+} and a_i/u_i = sum_j e^{s_ij}, so
      it reduces to RINCE exactly: tested);
    - ``gca-uot``: r1 * CE + r2 * RINCE-term(P) on the unbalanced plan (KL marginals of strength rho). The CE is
      taken on the plan's rows renormalised to distributions (``uot_ce="rows"``, default): KL(P_tgt || P(.|i)),
      the unbalanced scalings reweighting the negatives. ``uot_ce="plan"`` takes -log(n P_i+) on the raw plan,
      the spec's literal formula; with rho / (rho + eps) small the raw plan is barely normalised and -log P_i+
      tends to -s_i+ (alignment alone, no repulsion).
    ``uot_form="reference"`` is GCA-UOT as the authors' code computes it (nerdslab/gca, ``gca_uot``): kernel
    exp((cos - 1) / eps) (the shift by -1/eps changes an unbalanced plan; a balanced one absorbs it), ``n_iters``
    full iterations ending with a column step, the CE on the rows of that plan, and the RINCE term
    -(P_i+ / u_i)^q / q + (lam / u_{i+})^q / q with u from the last row step, lam without the marginal 1/n, and
    the *partner's* u (their ``(P_tgt / u).sum(1)`` broadcasts u over columns); tested against a number their
    code produces. ``"paper"`` (default) is the formula above.
    Defaults are the authors' (config/simclr_cifar10.yaml): q 0.98, lam 0.01, r1 1, r2 0.02, rho 0.2, 10
    iterations; eps 0.5.
    ``pos`` gives each row's positive column (default: the diagonal); ``target`` a full target plan instead."""
    n, m = s.shape[-2:]
    pos = torch.arange(n, device=s.device) if pos is None else pos
    tgt = target if target is not None else target_plan(pos, n_cols=m)
    if method == "rince":
        e_pos = s.gather(-1, pos.view(-1, 1)).squeeze(-1)
        total = torch.logsumexp(s, dim=-1)
        ex = _rince_exp(torch.stack([q * e_pos, (math.log(lam) + total) * q]), q, "rince")
        return (-ex[0] / q + ex[1] / q).mean()
    if method in ("ince", "gca-ince"):
        steps = 1 if method == "ince" else 2 * n_iters + 1
        log_p = sinkhorn_log(s, half_steps=steps, detach=detach) + math.log(n)
        return _ce(log_p, tgt)
    if method == "gca-uot" and uot_form == "reference":
        if n_iters < 1:
            raise ValueError("uot_form='reference' needs n_iters >= 1 (full Sinkhorn iterations)")
        k = s - 1.0 / eps  # the authors' kernel exp(-(1 - cos) / eps)
        log_p, log_u, log_v = sinkhorn_log(k, half_steps=2 * n_iters, rho=rho, eps=eps, detach=detach,
                                           init="uniform", return_scalings=True)  # u = v = 1/n, as they start
        ce = _ce(log_p - torch.logsumexp(log_p, dim=-1, keepdim=True), tgt)
        if r2 == 0:
            return r1 * ce
        log_pos = k.gather(-1, pos.view(-1, 1)).squeeze(-1) + log_v[..., pos]  # log(P_i+ / u_i)
        log_tot = math.log(lam) - log_u[..., pos]
        ex = _rince_exp(torch.stack([q * log_pos, q * log_tot]), q, method)
        return r1 * ce + r2 * (-ex[0] / q + ex[1] / q).mean()
    if uot_form not in UOT_FORMS:
        raise ValueError(f"uot_form must be one of {UOT_FORMS}, got {uot_form!r}")
    if method in ("gca-rince", "gca-uot"):
        unb = method == "gca-uot"
        log_p, log_u, _ = sinkhorn_log(s, half_steps=2 * n_iters + 1, rho=rho if unb else None, eps=eps,
                                       detach=detach, return_scalings=True)
        rince_term = 0.0
        if not unb or r2 != 0:
            log_pos = log_p.gather(-1, pos.view(-1, 1)).squeeze(-1) - log_u
            log_tot = math.log(lam) - math.log(n) - log_u
            ex = _rince_exp(torch.stack([q * log_pos, q * log_tot]), q, method)
            rince_term = (-ex[0] / q + ex[1] / q).mean()
        if not unb:
            return rince_term
        if uot_ce == "rows":
            log_rows = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        elif uot_ce == "plan":
            log_rows = log_p + math.log(n)
        else:
            raise ValueError(f"uot_ce must be 'rows' or 'plan', got {uot_ce!r}")
        return r1 * _ce(log_rows, tgt) + r2 * rince_term
    raise ValueError(f"unknown method {method!r}; use one of {GCA_METHODS}")


def clip_gca_loss(img: torch.Tensor, txt: torch.Tensor, eps: float = 0.5, **kw) -> torch.Tensor:
    """Image-text (N x N) version, symmetric: the mean of the loss on s and on s^T."""
    s = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T / eps
    return 0.5 * (gca_loss(s, eps=eps, **kw) + gca_loss(s.T, eps=eps, **kw))
