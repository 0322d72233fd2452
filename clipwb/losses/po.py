"""Preference-optimisation losses for CLIP (Afzali et al., "Aligning Visual Contrastive Learning Models via
Preference Optimization", ICLR 2025), pure functions of log-probabilities.

CLIP is the policy: for an image x and C candidate class prompts T(c),

    pi_theta(c | x) = softmax_c( s * cos(I_theta(x), T(c)) ),   s = exp(logit_scale)

(``policy_logprobs``). A batch holds B typographic images x'_i with preferred class y_w (the true class) and
dispreferred class y_l (the written word), and the clean images x_i they came from (the regularisation set).
Every loss below takes log-probabilities (B, C) of the policy and of the frozen reference pi_ref and returns a
scalar; none does I/O or keeps state.

The methods are a registry (``PO_METHODS``, filled by ``@register_po_method``): each entry names its objective,
its reference beta and what it needs (reference log-probs, clean images); ``po_loss`` dispatches on it, and the
trainer, the command line, the notebooks and the defences driver read it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
    """IPO: L = mean_i (h_i - 1/(2 beta))^2; where the square overflows h's dtype (|h| > ~1e19 in float32) it is
    taken in float64, so that extreme log-ratios give a large finite loss instead of inf."""
    loss = ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    if not bool(torch.isfinite(loss)) and bool(torch.isfinite(h).all()):
        loss = ((h.double() - 1.0 / (2.0 * beta)) ** 2).mean()
    return loss


KTO_Z0 = ("exact", "mismatched")


def kto_reference_point(kind: str, policy_logp: torch.Tensor, ref_logp: torch.Tensor, y_w: torch.Tensor,
                        kl_clean: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 (detached), two estimates:

    - ``"exact"`` (default; the official PO-for-CLIP code): the exact KL(pi_ref || pi_theta) on the batch's clean
      images, summed over the C classes (``kl_clean``);
    - ``"mismatched"`` (the KTO paper, Ethayarajh et al. 2024, and TRL's ``KTOTrainer``): an estimate of
      KL(pi_theta || pi_ref) from mismatched pairs, z0 = max(0, mean_i [log pi_theta(y_{i-1}|x'_i) -
      log pi_ref(y_{i-1}|x'_i)]), each typographic image paired with the preferred class of the *previous* example
      of the batch (item 0 with the last one): TRL's ``_get_kl_dataset`` shifts the completions the same way,
      ``[y[-1]] + y[:-1]``, and ``kto_loss`` clamps the batch mean at 0 (tested against TRL's number)."""
    if kind == "exact":
        return kl_clean.detach()
    if kind == "mismatched":
        other = torch.roll(y_w, 1)
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


# -- the registry of methods -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class POBatch:
    """What a method's objective sees of one batch: log-probs (B, C) of the policy and the reference on the
    typographic images, the preferred (true) and dispreferred (written) classes, the exact KL(pi_ref || pi_theta)
    on the clean images (None for methods that do not need the clean images) and the options of ``po_loss``."""
    policy_logp: torch.Tensor
    ref_logp: torch.Tensor | None
    y_w: torch.Tensor
    y_l: torch.Tensor
    kl: torch.Tensor | None
    label_smoothing: float = 0.0
    reference_free: bool = False
    kto_z0: str = "exact"
    kl_reduce: Callable | None = None


@dataclass(frozen=True)
class POMethod:
    """One registered method: ``objective(batch: POBatch, beta) -> loss`` (the preference loss; ``po_loss`` adds
    ``lam * kl`` when the method uses the clean images), its reference beta, what it needs from the trainer and
    whether it is a baseline rather than a preference method."""
    name: str
    objective: Callable[[POBatch, float], torch.Tensor]
    default_beta: float
    needs_reference: bool = True  # log pi_ref of the typographic images
    needs_clean: bool = True  # the clean images (KL(pi_ref || pi_theta) regulariser)
    baseline: bool = False  # not a preference method (CE): left out of "the best PO method"
    description: str = ""


PO_METHODS: dict[str, POMethod] = {}


def register_po_method(name: str, *, default_beta: float, needs_reference: bool = True, needs_clean: bool = True,
                       baseline: bool = False, description: str = ""):
    """Decorator: register ``objective(batch, beta)`` as the PO method ``name``. The trainer, the CLI's
    ``--method`` choices, the notebooks' method lists, the defences driver and the tests read ``PO_METHODS``, so a
    new method is this one entry plus its loss function."""
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"a PO method name must be lower-case letters, digits and '_', got {name!r}")

    def register(objective):
        if name in PO_METHODS and PO_METHODS[name].objective is not objective:
            raise ValueError(f"PO method {name!r} is already registered; pick another name or unregister it first")
        PO_METHODS[name] = POMethod(name, objective, float(default_beta), needs_reference, needs_clean, baseline,
                                    description)
        return objective

    return register


def unregister_po_method(name: str) -> None:
    PO_METHODS.pop(name, None)


def po_methods(*, baseline: bool | None = None) -> tuple[str, ...]:
    """Registered method names, in registration order (``baseline=False``: the preference methods only)."""
    return tuple(m.name for m in PO_METHODS.values() if baseline is None or m.baseline == baseline)


def po_method(name: str) -> POMethod:
    if name not in PO_METHODS:
        raise ValueError(f"unknown PO method {name!r}; use one of {list(PO_METHODS)}")
    return PO_METHODS[name]


@register_po_method("dpo", default_beta=1.0, description="DPO (conservative with label_smoothing)")
def _dpo(b: POBatch, beta: float) -> torch.Tensor:
    h = preference_logratio(b.policy_logp, None if b.reference_free else b.ref_logp, b.y_w, b.y_l)
    return dpo_loss(h, beta, b.label_smoothing)


# IPO's reference beta 0.01 asks for a 50-nat target margin
@register_po_method("ipo", default_beta=0.01, description="IPO, squared distance to the margin 1/(2 beta)")
def _ipo(b: POBatch, beta: float) -> torch.Tensor:
    return ipo_loss(preference_logratio(b.policy_logp, b.ref_logp, b.y_w, b.y_l), beta)


@register_po_method("kto", default_beta=1.5, description="KTO, prospect-theoretic value around z0")
def _kto(b: POBatch, beta: float) -> torch.Tensor:
    r_w = _pick(b.policy_logp, b.y_w) - _pick(b.ref_logp, b.y_w)
    r_l = _pick(b.policy_logp, b.y_l) - _pick(b.ref_logp, b.y_l)
    z0 = kto_reference_point(b.kto_z0, b.policy_logp, b.ref_logp, b.y_w, b.kl)
    if b.kl_reduce is not None:
        z0 = b.kl_reduce(z0)
    return kto_loss(r_w, r_l, z0, beta)


@register_po_method("ce", default_beta=0.0, needs_reference=False, needs_clean=False, baseline=True,
                    description="cross-entropy fine-tuning on the typographic images (baseline)")
def _ce(b: POBatch, beta: float) -> torch.Tensor:
    return ce_loss(b.policy_logp, b.y_w)


def _check_finite(name: str, t: torch.Tensor | None) -> None:
    if t is not None and not bool(torch.isfinite(t).all()):
        bad = t[~torch.isfinite(t)]
        raise ValueError(f"{name} hold {bad.numel()} non-finite value(s) (e.g. {float(bad[0])}): a log-probability of "
                         f"-inf means a class the model gives probability 0, and a log-ratio against it is undefined; "
                         f"compute log-probs with policy_logprobs (a log_softmax of finite logits, float32) and check "
                         f"the model's logit_scale")


def po_loss(method: str, policy_logp: torch.Tensor, ref_logp: torch.Tensor | None, y_w: torch.Tensor,
            y_l: torch.Tensor, policy_logp_clean: torch.Tensor | None = None,
            ref_logp_clean: torch.Tensor | None = None, *, beta: float | None = None, lam: float = 0.0,
            label_smoothing: float = 0.0, reference_free: bool = False,
            kl_reduce=None, kto_z0: str = "exact") -> tuple[torch.Tensor, dict]:
    """One method's full objective: the registered preference loss + lam * kl (kl on the clean images, for the
    methods that need them; CE has none).

    Returns (loss, stats) with detached stats: ``pref_acc`` (share of h > 0), ``margin`` (mean h), ``reward_w``
    / ``reward_l`` (mean beta-scaled rewards), ``kl``. ``kl_reduce`` (e.g. an all-reduce mean across processes)
    is applied to KTO's reference point z0 so that data-parallel runs use the global batch's z0; ``kto_z0`` picks
    how z0 is estimated (``kto_reference_point``). Non-finite log-probs are refused with a clear error."""
    m = po_method(method)
    beta = m.default_beta if beta is None else beta
    _check_finite("the policy's log-probs", policy_logp)
    kl = None
    if m.needs_reference or m.needs_clean:
        if ref_logp is None or (m.needs_clean and (policy_logp_clean is None or ref_logp_clean is None)):
            raise ValueError(f"{method} needs reference log-probs and the clean images' log-probs")
        for name, t in (("the reference log-probs", ref_logp), ("the clean images' policy log-probs",
                                                                 policy_logp_clean),
                        ("the clean images' reference log-probs", ref_logp_clean)):
            _check_finite(name, t)
    if m.needs_clean:
        kl = kl_ref_policy(ref_logp_clean, policy_logp_clean)
    batch = POBatch(policy_logp, ref_logp, y_w, y_l, kl, label_smoothing, reference_free, kto_z0, kl_reduce)
    loss = m.objective(batch, beta)
    if kl is not None:
        loss = loss + lam * kl
    return loss, _po_stats(policy_logp, ref_logp, y_w, y_l, beta, kl)


@torch.no_grad()
def _po_stats(policy_logp, ref_logp, y_w, y_l, beta: float, kl) -> dict:
    stats = {}
    if ref_logp is not None:
        r_w = (_pick(policy_logp, y_w) - _pick(ref_logp, y_w)).float()
        r_l = (_pick(policy_logp, y_l) - _pick(ref_logp, y_l)).float()
        hh = r_w - r_l
        stats.update(reward_w=float(beta * r_w.mean()), reward_l=float(beta * r_l.mean()))
    else:
        hh = preference_logratio(policy_logp, None, y_w, y_l)
    stats.update(pref_acc=float((hh > 0).float().mean()), margin=float(hh.mean()),
                 kl=float(kl) if kl is not None else float("nan"))
    return stats
