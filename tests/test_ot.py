"""The log-domain Sinkhorn against POT, and the INCE / GCA-INCE losses."""

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from clipwb.losses.ot import gca_ince_loss, ince_loss, sinkhorn_log, sinkhorn_plan


def _cost(n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(m, 8, generator=g, dtype=torch.float64), dim=-1)
    return 1 - x @ y.T


def _marg(n, seed):
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    return w / w.sum()


@pytest.mark.parametrize("impl", ["scaled", "lse"])
@pytest.mark.parametrize("n,m", [(12, 12), (9, 15)])
def test_balanced_plan_equals_pot(n, m, impl):
    C, eps = _cost(n, m), 0.1
    a, b = _marg(n, 1), _marg(m, 2)
    ref = ot.sinkhorn(a.numpy(), b.numpy(), C.numpy(), eps, numItermax=25, stopThr=0.0)
    P = sinkhorn_log(-C / eps, a.log(), b.log(), half_steps=50, row_first=False, init="uniform", impl=impl).exp()
    assert np.abs(P.numpy() - ref).max() < 1e-5
    conv = sinkhorn_log(-C / eps, a.log(), b.log(), half_steps=2000, impl=impl).exp()
    assert torch.allclose(conv.sum(1), a, atol=1e-8) and torch.allclose(conv.sum(0), b, atol=1e-8)


@pytest.mark.parametrize("impl", ["scaled", "lse"])
def test_unbalanced_plan_equals_pot(impl):
    n, m, eps, rho = 10, 14, 0.2, 0.5
    C, a, b = _cost(n, m, 3), _marg(n, 4), _marg(m, 5)
    ref = ot.unbalanced.sinkhorn_unbalanced(a.numpy(), b.numpy(), C.numpy(), eps, rho, numItermax=30, stopThr=0.0,
                                            reg_type="entropy")
    P = sinkhorn_log(-C / eps, a.log(), b.log(), half_steps=60, rho=rho, eps=eps, impl=impl).exp()
    assert np.abs(P.numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("rho", [None, 0.3])
def test_scaled_and_lse_paths_agree_in_values_and_gradients(rho):
    g = torch.Generator().manual_seed(7)
    k = (torch.randn(3, 20, 17, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    w = torch.randn(3, 20, 17, generator=g, dtype=torch.float64)
    out = {}
    for impl in ("scaled", "lse"):
        log_p, lu, lv = sinkhorn_log(k, half_steps=15, rho=rho, eps=0.4, impl=impl, return_scalings=True)
        (gk,) = torch.autograd.grad((log_p.exp() * w).sum(), k)
        out[impl] = (log_p.detach(), lu.detach(), lv.detach(), gk)
    for x, y in zip(out["scaled"], out["lse"]):
        assert torch.allclose(x, y, rtol=0, atol=1e-10)
    plan = sinkhorn_plan(k, half_steps=15, rho=rho, eps=0.4)
    assert torch.allclose(plan, out["lse"][0].exp(), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: sinkhorn_plan(x, half_steps=5, rho=rho, eps=0.4, impl="scaled"),
                                    (k[0, :4, :5].detach().clone().requires_grad_(True),))


def test_auto_path_falls_back_where_scaling_would_underflow_and_float32_matches_float64():
    g = torch.Generator().manual_seed(3)
    # a column whose kernel entries are all e^-800 below their row maxima: the scaled path cannot represent it
    k = torch.randn(8, 8, generator=g, dtype=torch.float64)
    k[:, 0] -= 800.0
    auto = sinkhorn_log(k, half_steps=30)
    assert torch.isfinite(auto).all()
    assert torch.allclose(auto, sinkhorn_log(k, half_steps=30, impl="lse"), atol=1e-10)
    assert not torch.isfinite(sinkhorn_log(k, half_steps=30, impl="scaled")).all()
    # float32 two-view similarities at eps = 0.05 (the smallest eps the float32 scaled path covers)
    x = F.normalize(torch.randn(256, 16, generator=g, dtype=torch.float64), dim=-1)
    s64 = (x @ x.T / 0.05).fill_diagonal_(float("-inf"))
    p64 = sinkhorn_plan(s64, half_steps=21, impl="lse")
    p32 = sinkhorn_plan(s64.float(), half_steps=21)
    assert (p32.double() - p64).abs().max() < 1e-5 * p64.max()
    with pytest.raises(ValueError, match="impl"):
        sinkhorn_log(k, impl="fast")


def _pot_stabilization_input():
    """POT's test_sinkhorn_stabilization: two 1-D Gaussians (centres 30 and 40, sd 10) on 100 bins, squared
    distances, eps 1e-5."""
    n = 100
    a1, a2 = ot.datasets.make_1D_gauss(n, m=30, s=10), ot.datasets.make_1D_gauss(n, m=40, s=10)
    x = np.arange(n, dtype=np.float64).reshape((n, 1))
    return torch.from_numpy(a1), torch.from_numpy(a2), torch.from_numpy(ot.dist(x, x)), 1e-5


def _pot_relaxation_input():
    """POT's test_unbalanced_relaxation_parameters with reg_m = inf: masses 1 and about 50, eps 1."""
    rng = np.random.RandomState(50)
    x = rng.randn(100, 2)
    a, b = ot.utils.unif(100), rng.rand(100, 2)[:, 0]
    return torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(ot.dist(x, x)), 1.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case,iters", [("stabilization", 200), ("relaxation", 250)])
def test_auto_never_returns_a_non_finite_plan_where_lse_is_finite(case, iters, dtype):
    a, b, M, eps = (_pot_stabilization_input if case == "stabilization" else _pot_relaxation_input)()
    k, la, lb = (-M / eps).to(dtype), a.log().to(dtype), b.log().to(dtype)
    kw = dict(half_steps=2 * iters, row_first=False, init="uniform")
    scaled = sinkhorn_log(k, la, lb, impl="scaled", **kw)
    lse = sinkhorn_log(k, la, lb, impl="lse", **kw)
    auto = sinkhorn_log(k, la, lb, **kw)
    assert not torch.isfinite(scaled).all()  # the input that used to come back as NaN from "auto"
    assert not torch.isnan(lse).any() and not torch.isnan(auto).any()
    assert torch.equal(auto, lse)
    assert torch.isfinite(sinkhorn_plan(k, la, lb, **kw)).all()
    if case == "stabilization" and dtype == torch.float64:
        # and it is POT's own log-domain solver's plan, iteration for iteration
        ref = ot.sinkhorn(a.numpy(), b.numpy(), M.numpy(), eps, method="sinkhorn_log", numItermax=iters,
                          stopThr=0.0)
        assert np.abs(auto.exp().numpy() - ref).max() < 1e-10


def test_half_step_ince_is_cross_entropy_and_iterations_do_not_increase_the_objective():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(16, 16, generator=g, dtype=torch.float64) * 3
    assert ince_loss(s).item() == pytest.approx(F.cross_entropy(s, torch.arange(16)).item(), abs=1e-12)
    for seed in range(5):
        s = torch.randn(32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
        vals = [gca_ince_loss(s, n_iters=k).item() for k in (0, 1, 2, 5, 10, 50)]
        assert vals[0] == pytest.approx(ince_loss(s).item())
        assert all(b <= a + 1e-9 for a, b in zip(vals, vals[1:])), vals


def test_finite_at_small_eps_batched_and_differentiable():
    n, eps = 1024, 0.05
    x = F.normalize(torch.randn(2, n, 16), dim=-1).requires_grad_(True)
    s = (x @ x.transpose(-1, -2)) / eps
    logp = sinkhorn_log(s, half_steps=20)
    assert torch.isfinite(logp).all()
    logp.diagonal(dim1=-2, dim2=-1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    small = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: sinkhorn_log(k, half_steps=6, rho=0.5, eps=0.3), (small,))
    with pytest.raises(ValueError, match="half_steps"):
        sinkhorn_log(small, half_steps=0)


def test_gca_family_special_cases_and_batches():
    from clipwb.losses.ot import clip_gca_loss, gca_loss, target_plan, two_view_logits

    g = torch.Generator().manual_seed(1)
    s = torch.randn(10, 10, generator=g, dtype=torch.float64) * 2
    assert gca_loss(s, method="ince").item() == pytest.approx(F.cross_entropy(s, torch.arange(10)).item())
    # GCA-RINCE with no Sinkhorn iteration is RINCE
    assert gca_loss(s, method="gca-rince", n_iters=0).item() == pytest.approx(gca_loss(s, method="rince").item())
    assert gca_loss(s, method="gca-rince", n_iters=5).item() != pytest.approx(gca_loss(s, method="rince").item())
    # two views: self-pairs masked, positives i <-> i + N, finite losses and gradients for every method
    z1 = torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 8, generator=g, dtype=torch.float64)
    s2, pos = two_view_logits(z1, z2, eps=0.5)
    assert torch.isinf(s2.diagonal()).all() and pos.tolist() == list(range(6, 12)) + list(range(6))
    for method in ("ince", "gca-ince", "rince", "gca-rince", "gca-uot"):
        loss = gca_loss(s2, pos, method=method)
        (gz,) = torch.autograd.grad(loss, z1, retain_graph=True)
        assert torch.isfinite(loss) and torch.isfinite(gz).all(), method
    # the reference's quirks are switches that change the result
    s_ref, _ = two_view_logits(z1, z2, self_pairs="max_cost", clamp=True)
    assert torch.isfinite(s_ref).all() and gca_loss(s_ref, pos).item() != pytest.approx(gca_loss(s2, pos).item())
    # target plans: rows are distributions, the positive weighs most
    groups = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    t = target_plan(torch.tensor([4, 5, 6, 7, 0, 1, 2, 3]), groups, alpha=0.3, beta=0.1)
    assert torch.allclose(t.sum(-1), torch.ones(8, dtype=t.dtype)) and (t.argmax(-1) == torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])).all()
    # CLIP batches: symmetric in image and text
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert clip_gca_loss(img, txt).item() == pytest.approx(clip_gca_loss(txt, img).item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        gca_loss(s, method="nce")


def _authors_inputs():
    g = torch.Generator().manual_seed(1234)
    return torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)


# Numbers produced by the authors' code (nerdslab/gca, gca_loss_cifar.py at commit 9f3a62f) on _authors_inputs()
# laid out as they expect (views interleaved: rows 2k, 2k+1), batch 6, epsilon 0.5, 10 iterations, lam 0.01,
# q 0.98, relax_items 0.2, r1 1. Their diagonal mask is a float32 identity, hence agreement to ~1e-9, not 1e-15.
AUTHORS = {"NT_Xent": 2.5484604655147005, "gca_ince": 2.5939250230812583, "gca_uot_r2_0.02": 2.5957786529440003,
           "gca_uot_r2_1": 2.5167101677953663}
# The same code at epsilon 0.2 (gca_uot, relax_items 0.2): where starting the scalings at 1 instead of their 1/n
# shows (1.6e-8 relative for r2 = 1 before clipwb started where they do; 6e-10 now, the float32 mask's floor).
AUTHORS_EPS02 = {0.02: 3.161451812039528, 1.0: 3.1646519469081897}


def test_the_reference_switches_reproduce_the_authors_losses():
    from clipwb.losses.ot import gca_loss, two_view_logits

    z1, z2 = _authors_inputs()
    s_max, pos = two_view_logits(z1, z2, eps=0.5, self_pairs="max_cost", clamp=True)
    s_mask, _ = two_view_logits(z1, z2, eps=0.5, self_pairs="mask", clamp=True)
    # hand-built: a self-pair costs the largest cost of the matrix, i.e. its cosine is the smallest clamped cosine
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    cos = (z @ z.T).clamp(min=1e-7)
    assert torch.allclose(s_max.diagonal(), torch.full((12,), float(cos.min()) / 0.5, dtype=torch.float64))
    rel = lambda a, b: abs(a - b) / abs(b)  # noqa: E731
    assert rel(gca_loss(s_mask, pos, method="ince").item(), AUTHORS["NT_Xent"]) < 1e-12
    assert rel(gca_loss(s_max, pos, method="gca-ince", n_iters=10, eps=0.5).item(), AUTHORS["gca_ince"]) < 1e-8
    for r2, key in ((0.02, "gca_uot_r2_0.02"), (1.0, "gca_uot_r2_1")):
        got = gca_loss(s_max, pos, method="gca-uot", n_iters=10, eps=0.5, rho=0.2, q=0.98, lam=0.01, r2=r2,
                       uot_form="reference").item()
        assert rel(got, AUTHORS[key]) < 1e-8, (key, got)
        paper = gca_loss(s_max, pos, method="gca-uot", n_iters=10, eps=0.5, rho=0.2, q=0.98, lam=0.01, r2=r2).item()
        assert rel(paper, AUTHORS[key]) > 1e-4  # the paper's formula is a different number, on purpose
    s02, _ = two_view_logits(z1, z2, eps=0.2, self_pairs="max_cost", clamp=True)
    for r2, want in AUTHORS_EPS02.items():
        got = gca_loss(s02, pos, method="gca-uot", n_iters=10, eps=0.2, rho=0.2, q=0.98, lam=0.01, r2=r2,
                       uot_form="reference").item()
        assert rel(got, want) < 3e-9, (r2, got)
    with pytest.raises(ValueError, match="uot_form"):
        gca_loss(s_max, pos, method="gca-uot", uot_form="authors")


def test_the_authors_defaults_are_the_defaults():
    import inspect

    from clipwb.losses.ot import gca_loss
    from clipwb.experiments.gca import GCAConfig

    d = {k: v.default for k, v in inspect.signature(gca_loss).parameters.items()}
    assert (d["q"], d["lam"], d["r1"], d["r2"], d["rho"], d["n_iters"]) == (0.98, 0.01, 1.0, 0.02, 0.2, 10)
    c = GCAConfig()
    assert (c.q, c.lam, c.r1, c.r2, c.rho, c.n_iters, c.eps) == (0.98, 0.01, 1.0, 0.02, 0.2, 10, 0.5)
