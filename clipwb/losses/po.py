"""Preference-optimisation losses for CLIP (Afzali et al., "Aligning Visual Contrastive Learning Models via
Preference Optimization", ICLR 2025), pure functions of log-probabilities.

CLIP is the policy: for an image x and C candidate class prompts T(c),

    pi_theta(c | x) = softmax_c( s * cos(I_theta(x), T(c)) ),   s = exp(logit_scale)

(``policy_logprobs``). A batch holds B typographic images x'_i with preferred class y_w (the true class) and
dispreferred class y_l (the written word), and the clean images x_i they came from (the regularisation set).
Every loss below takes log-probabilities (B, C) of the policy and of the frozen reference pi_ref and returns a
scalar; none does I/O or keeps state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

METHODS = ("dpo", "ipo", "kto", "ce")
# beta per method as in the reference: DPO 1.0, IPO 0.01 (a 50-nat target margin), KTO 1.5
DEFAULT_BETA = {"dpo": 1.0, "ipo": 0.01, "kto": 1.5, "ce": 0.0}


def policy_logprobs(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
                    normalized: bool = False) -> torch.Tensor:
    """log pi(c|x) = log_softmax_c(s * cos(I(x), T(c))), (B, d) x (C, d) -> (B, C); ``logit_scale`` is s itself
    (already exponentiated)."""
    if not normalized:
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
    return F.log_softmax(logit_scale * image_features.float() @ text_features.float().T, dim=-1)


def _pick(logp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return logp.gather(-1, idx.view(-1, 1)).squeeze(-1)


def preference_logratio(policy_logp: torch.Tensor, ref_logp: torch.Tensor | None, y_w: torch.Tensor,
                        y_l: torch.Tensor) -> torch.Tensor:
    """h_i = [log pi_theta(y_w|x'_i) - log pi_theta(y_l|x'_i)] - [log pi_ref(y_w|x'_i) - log pi_ref(y_l|x'_i)];
    without a reference (``ref_logp=None``, reference-free DPO) only the first bracket."""
    h = _pick(policy_logp, y_w) - _pick(policy_logp, y_l)
    if ref_logp is not None:
        h = h - (_pick(ref_logp, y_w) - _pick(ref_logp, y_l))
    return h


def kl_ref_policy(ref_logp_clean: torch.Tensor, policy_logp_clean: torch.Tensor) -> torch.Tensor:
    """kl = mean_i sum_c pi_ref(c|x_i) [log pi_ref(c|x_i) - log pi_theta(c|x_i)], KL(pi_ref || pi_theta) on the
    clean images x_i."""
    return (ref_logp_clean.exp() * (ref_logp_clean - policy_logp_clean)).sum(-1).mean()


def dpo_loss(h: torch.Tensor, beta: float = 1.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (conservative DPO when eps = ``label_smoothing`` > 0):
    L = mean_i [ -(1 - eps) log sigmoid(beta h_i) - eps log sigmoid(-beta h_i) ]."""
    return (-(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)).mean()


def ipo_loss(h: torch.Tensor, beta: float = 0.01) -> torch.Tensor:
    """IPO: L = mean_i (h_i - 1/(2 beta))^2."""
    return ((h - 1.0 / (2.0 * beta)) ** 2).mean()


KTO_Z0 = ("exact", "mismatched")


def kto_reference_point(kind: str, policy_logp: torch.Tensor, ref_logp: torch.Tensor, y_w: torch.Tensor,
                        kl_clean: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 (detached), two estimates:

    - ``"exact"`` (default; the official PO-for-CLIP code): the exact KL(pi_ref || pi_theta) on the batch's clean
      images, summed over the C classes (``kl_clean``);
    - ``"mismatched"`` (the KTO paper, Ethayarajh et al. 2024, and TRL's ``kto_loss``): an estimate of
      KL(pi_theta || pi_ref) from mismatched pairs, z0 = max(0, mean_i [log pi_theta(y_{i+1}|x'_i) -
      log pi_ref(y_{i+1}|x'_i)]), each typographic image paired with the preferred class of the next example of
      the batch (TRL shifts the completions the same way)."""
    if kind == "exact":
        return kl_clean.detach()
    if kind == "mismatched":
        other = torch.roll(y_w, -1)
        return (_pick(policy_logp, other) - _pick(ref_logp, other)).mean().clamp(min=0).detach()
    raise ValueError(f"kto_z0 must be one of {KTO_Z0}, got {kind!r}")


def kto_loss(r_w: torch.Tensor, r_l: torch.Tensor, z0: torch.Tensor, beta: float = 1.5) -> torch.Tensor:
    """KTO: with rewards r_w = log pi_theta(y_w|x') - log pi_ref(y_w|x'), r_l likewise, and the reference point
    z0 (detached; ``kto_reference_point``), L = mean over the 2B terms [1 - sigmoid(beta (r_w - z0))] and
    [1 - sigmoid(beta (z0 - r_l))]."""
    z0 = z0.detach()
    return torch.cat([1 - torch.sigmoid(beta * (r_w - z0)), 1 - torch.sigmoid(beta * (z0 - r_l))]).mean()


def ce_loss(policy_logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The "standard fine-tuning" baseline: L = mean_i -log pi_theta(y_i|x'_i) on the typographic images."""
    return F.nll_loss(policy_logp, y)


def po_loss(method: str, policy_logp: torch.Tensor, ref_logp: torch.Tensor | None, y_w: torch.Tensor,
            y_l: torch.Tensor, policy_logp_clean: torch.Tensor | None = None,
            ref_logp_clean: torch.Tensor | None = None, *, beta: float | None = None, lam: float = 0.0,
            label_smoothing: float = 0.0, reference_free: bool = False,
            kl_reduce=None, kto_z0: str = "exact") -> tuple[torch.Tensor, dict]:
    """One method's full objective: the preference loss + lam * kl (kl on the clean images; CE has none).

    Returns (loss, stats) with detached stats: ``pref_acc`` (share of h > 0), ``margin`` (mean h), ``reward_w``
    / ``reward_l`` (mean beta-scaled rewards), ``kl``. ``kl_reduce`` (e.g. an all-reduce mean across processes)
    is applied to KTO's reference point z0 so that data-parallel runs use the global batch's z0; ``kto_z0`` picks
    how z0 is estimated (``kto_reference_point``)."""
    if method not in METHODS:
        raise ValueError(f"unknown PO method {method!r}; use one of {list(METHODS)}")
    beta = DEFAULT_BETA[method] if beta is None else beta
    stats = {}
    if method == "ce":
        loss = ce_loss(policy_logp, y_w)
        kl = None
    else:
        if ref_logp is None or policy_logp_clean is None or ref_logp_clean is None:
            raise ValueError(f"{method} needs reference log-probs and the clean images' log-probs")
        kl = kl_ref_policy(ref_logp_clean, policy_logp_clean)
        if method == "dpo":
            h = preference_logratio(policy_logp, None if reference_free else ref_logp, y_w, y_l)
            loss = dpo_loss(h, beta, label_smoothing)
        elif method == "ipo":
            h = preference_logratio(policy_logp, ref_logp, y_w, y_l)
            loss = ipo_loss(h, beta)
        else:
            r_w = _pick(policy_logp, y_w) - _pick(ref_logp, y_w)
            r_l = _pick(policy_logp, y_l) - _pick(ref_logp, y_l)
            z0 = kto_reference_point(kto_z0, policy_logp, ref_logp, y_w, kl)
            if kl_reduce is not None:
                z0 = kl_reduce(z0)
            loss = kto_loss(r_w, r_l, z0, beta)
            h = r_w - r_l
        loss = loss + lam * kl
    with torch.no_grad():
        if ref_logp is not None:
            r_w = (_pick(policy_logp, y_w) - _pick(ref_logp, y_w)).float()
            r_l = (_pick(policy_logp, y_l) - _pick(ref_logp, y_l)).float()
            hh = r_w - r_l
            stats.update(reward_w=float(beta * r_w.mean()), reward_l=float(beta * r_l.mean()))
        else:
            hh = preference_logratio(policy_logp, None, y_w, y_l)
        stats.update(pref_acc=float((hh > 0).float().mean()), margin=float(hh.mean()),
                     kl=float(kl) if kl is not None else float("nan"))
    return loss, stats
