"""The PO losses against the spec's equations, computed independently (numpy / closed forms)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipwb.losses.po import (dpo_loss, ipo_loss, kl_ref_policy, kto_loss, po_loss, policy_logprobs,
                              preference_logratio)


def _logp(seed, b=6, c=5, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return F.log_softmax(scale * torch.randn(b, c, generator=g, dtype=torch.float64), -1)


Y_W = torch.tensor([0, 1, 2, 3, 4, 0])
Y_L = torch.tensor([1, 2, 3, 4, 0, 2])


def test_policy_logprobs_is_a_softmax_over_scaled_cosines():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(3, 8, generator=g)
    lp = policy_logprobs(img, txt, 100.0)
    cos = np.array([[np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for b in txt.numpy()] for a in img.numpy()])
    expect = 100 * cos - np.log(np.exp(100 * cos).sum(1, keepdims=True))
    assert np.allclose(lp.numpy(), expect, atol=1e-3)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(4))


def test_dpo_matches_the_equation_and_is_log2_at_the_reference():
    pol, ref = _logp(1), _logp(2)
    h = preference_logratio(pol, ref, Y_W, Y_L)
    hh = [(pol[i, Y_W[i]] - pol[i, Y_L[i]]) - (ref[i, Y_W[i]] - ref[i, Y_L[i]]) for i in range(6)]
    assert torch.allclose(h, torch.stack(hh))
    beta, eps = 0.7, 0.1
    expect = np.mean([-(1 - eps) * math.log(1 / (1 + math.exp(-beta * x))) - eps * math.log(1 / (1 + math.exp(beta * x)))
                      for x in h.tolist()])
    assert dpo_loss(h, beta, eps).item() == pytest.approx(expect, rel=1e-10)
    assert po_loss("dpo", ref, ref, Y_W, Y_L, ref, ref, lam=1.0)[0].item() == pytest.approx(math.log(2))
    # reference-free: the policy's own log-ratio only
    free, _ = po_loss("dpo", pol, ref, Y_W, Y_L, pol, ref, lam=0.0, reference_free=True)
    assert free.item() == pytest.approx(dpo_loss(preference_logratio(pol, None, Y_W, Y_L)).item())


def test_ipo_is_minimal_at_its_target_margin():
    beta = 0.05
    h = torch.tensor([1 / (2 * beta)] * 3, dtype=torch.float64)
    assert ipo_loss(h, beta).item() == 0
    assert ipo_loss(h + 2, beta).item() == pytest.approx(4.0)


def test_kto_equation_and_its_reference_point_gets_no_gradient():
    r_w = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    r_l = torch.tensor([0.2, 0.3], dtype=torch.float64)
    z0 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    loss = kto_loss(r_w, r_l, z0, beta=1.5)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expect = np.mean([1 - sig(1.5 * (0.5 - 0.1)), 1 - sig(1.5 * (-1.0 - 0.1)), 1 - sig(1.5 * (0.1 - 0.2)),
                      1 - sig(1.5 * (0.1 - 0.3))])
    assert loss.item() == pytest.approx(expect)
    loss.backward()
    assert z0.grad is None and r_w.grad is not None and (r_w.grad < 0).all()


def test_kl_is_kl_ref_to_policy_and_zero_at_the_reference():
    pol, ref = _logp(3), _logp(4)
    expect = F.kl_div(pol, ref, log_target=True, reduction="batchmean")  # sum ref * (log ref - log pol) / B
    assert kl_ref_policy(ref, pol).item() == pytest.approx(expect.item())
    assert kl_ref_policy(ref, ref).item() == 0
    assert kl_ref_policy(ref, pol).item() > 0


def test_ce_and_the_lambda_term():
    pol, ref, pc, rc = _logp(5), _logp(6), _logp(7), _logp(8)
    ce, stats = po_loss("ce", pol, ref, Y_W, Y_L, lam=5.0)
    assert ce.item() == pytest.approx(F.nll_loss(pol, Y_W).item()) and math.isnan(stats["kl"])
    for m in ("dpo", "ipo", "kto"):
        l0, _ = po_loss(m, pol, ref, Y_W, Y_L, pc, rc, lam=0.0)
        l2, s = po_loss(m, pol, ref, Y_W, Y_L, pc, rc, lam=2.0)
        assert l2.item() == pytest.approx(l0.item() + 2 * kl_ref_policy(rc, pc).item())
        assert s["kl"] == pytest.approx(kl_ref_policy(rc, pc).item())


def test_stats_and_bad_calls():
    pol, ref = _logp(9), _logp(10)
    _, s = po_loss("dpo", pol, ref, Y_W, Y_L, pol, ref)
    h = preference_logratio(pol, ref, Y_W, Y_L)
    assert s["pref_acc"] == pytest.approx((h > 0).double().mean().item()) and s["margin"] == pytest.approx(h.mean().item())
    with pytest.raises(ValueError, match="unknown PO method"):
        po_loss("ppo", pol, ref, Y_W, Y_L)
    with pytest.raises(ValueError, match="needs reference"):
        po_loss("ipo", pol, None, Y_W, Y_L)


def test_kto_reference_point_exact_or_from_mismatched_pairs():
    """z0 = the exact KL(pi_ref || pi_theta) on clean images (default, the official PO code) or the KTO paper's /
    TRL's estimate of KL(pi_theta || pi_ref) from mismatched pairs, max(0, mean_i [log pi(y_{i-1}|x_i) -
    log pi_ref(y_{i-1}|x_i)]) (TRL's pairing: completions shifted by one, [y[-1]] + y[:-1]); checked on
    hand-written log-probabilities."""
    from clipwb.losses.po import kto_reference_point

    pol = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=torch.float64))
    ref = torch.log(torch.tensor([[0.4, 0.4, 0.2], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]], dtype=torch.float64))
    y_w = torch.tensor([0, 1, 2])
    # mismatched (TRL's pairing): x_0 with the last example's class 2, x_1 with class 0, x_2 with class 1
    by_hand = (math.log(0.2 / 0.2) + math.log(0.1 / 0.2) + math.log(0.2 / 0.3)) / 3
    assert by_hand < 0
    assert kto_reference_point("mismatched", pol, ref, y_w, torch.tensor(0.7)).item() == 0.0  # clamped at 0
    flipped = kto_reference_point("mismatched", ref, pol, y_w, torch.tensor(0.7)).item()
    assert flipped == pytest.approx(-by_hand)
    assert kto_reference_point("exact", pol, ref, y_w, torch.tensor(0.7)).item() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="kto_z0"):
        kto_reference_point("trl", pol, ref, y_w, torch.tensor(0.7))
    # through po_loss: the two estimates give different KTO losses
    clean = _logp(5)
    a, _ = po_loss("kto", pol, ref, y_w, torch.tensor([1, 2, 0]), clean[:3], clean[:3] + 0.0, kto_z0="exact")
    b, _ = po_loss("kto", ref, pol, y_w, torch.tensor([1, 2, 0]), clean[:3], clean[:3], kto_z0="mismatched")
    assert torch.isfinite(a) and torch.isfinite(b)


def test_kto_mismatched_reference_point_follows_trl():
    """TRL 1.16 (trl/trainer/kto_trainer.py): the KL completions of a batch are the completions rotated by one,
    ``KL_completion_ids = [completion_ids[-1]] + completion_ids[:-1]`` (prompt i with completion i-1), then
    ``kl = (KL_logps - ref_KL_logps).mean().clamp(min=0)``, ``chosen_losses = 1 - sigmoid(beta (chosen_logratios -
    kl))``, ``rejected_losses = 1 - sigmoid(beta (kl - rejected_logratios))``, loss = mean of both (unit weights).
    Written here with TRL's list operations on the completions, and compared with po_loss(kto, kto_z0=mismatched)."""
    pol, ref = _logp(13), _logp(14)  # a batch where both pairings give a positive, different z0
    beta = 1.5
    y_w, y_l = Y_W.tolist(), Y_L.tolist()
    kl_completions = [y_w[-1]] + y_w[:-1]  # TRL's add_kl_completion_ids on the batch's completions
    kl_logps = torch.stack([pol[i, y] for i, y in enumerate(kl_completions)])
    ref_kl_logps = torch.stack([ref[i, y] for i, y in enumerate(kl_completions)])
    kl = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
    assert kl > 0  # the clamp is not what makes the two agree
    chosen = torch.stack([pol[i, y] - ref[i, y] for i, y in enumerate(y_w)])
    rejected = torch.stack([pol[i, y] - ref[i, y] for i, y in enumerate(y_l)])
    trl = torch.cat([1 - torch.sigmoid(beta * (chosen - kl)), 1 - torch.sigmoid(beta * (kl - rejected))]).mean()
    ours, _ = po_loss("kto", pol, ref, Y_W, Y_L, pol, ref, beta=beta, lam=0.0, kto_z0="mismatched")
    assert ours.item() == pytest.approx(trl.item(), rel=1e-12)
    # the other direction (prompt i with completion i+1) gives another number on this batch
    nxt = y_w[1:] + y_w[:1]
    kl_next = torch.stack([pol[i, y] - ref[i, y] for i, y in enumerate(nxt)]).mean().clamp(min=0)
    assert abs(kl_next.item() - kl.item()) > 1e-3


def test_extreme_or_non_finite_log_probs_stay_finite_or_are_refused():
    """IPO on log-ratios from logits of +-1e30 gives a large finite loss (its square is taken in float64 where float32
    overflows); a -inf (or NaN) log-prob, where a log-ratio is undefined, is refused by name for every method that
    reads it instead of returning NaN."""
    logits = torch.tensor([[1e30, -1e30, 0.0], [0.0, 1e30, -1e30]])
    pol = torch.log_softmax(logits, -1)
    ref = torch.log_softmax(torch.zeros(2, 3), -1)
    yw, yl = torch.tensor([0, 1]), torch.tensor([1, 2])
    for m in ("dpo", "ipo", "kto", "ce"):
        loss, _ = po_loss(m, pol, ref, yw, yl, ref, ref, lam=1.0)
        assert torch.isfinite(loss), m
    bad = ref.clone()
    bad[0, 1] = -math.inf
    for m in ("dpo", "ipo", "kto"):
        with pytest.raises(ValueError, match="reference log-probs hold 1 non-finite value"):
            po_loss(m, ref, bad, yw, yl, ref, ref)
        with pytest.raises(ValueError, match="clean images' reference log-probs"):
            po_loss(m, ref, ref, yw, yl, ref, bad)
    nan_pol = ref.clone()
    nan_pol[1, 0] = math.nan
    with pytest.raises(ValueError, match="policy's log-probs"):
        po_loss("ce", nan_pol, None, yw, yl)
