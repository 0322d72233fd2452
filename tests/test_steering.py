import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipwb.steering import LinearMapConfig, StrengthFamily, steer, train_linear_map


def _random_near_identity(d=6, seed=0, eps=0.3):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return np.eye(d) + eps * A / np.linalg.norm(A, 2)


def test_strength_family_anchors_and_inverse():
    W = _random_near_identity()
    fam = StrengthFamily(W)
    assert np.array_equal(fam.at(0), np.eye(6)) and np.array_equal(fam.at(1), W)
    # the formula itself (not only the shortcuts) meets the anchors
    assert np.allclose(fam.at(1e-12), np.eye(6), atol=1e-9) and np.allclose(fam.at(1 - 1e-12), W, atol=1e-9)
    U, S, Vt = np.linalg.svd(W)
    Q, P = U @ Vt, Vt.T @ np.diag(S) @ Vt
    assert np.allclose(Q @ P, W) and np.allclose(fam.at(-1), np.linalg.inv(Q) @ (2 * np.eye(6) - P), atol=1e-9)
    # a pure rotation: a one-parameter group, W_s W_t = W_{s+t}, W_-1 = W^-1
    R, _ = np.linalg.qr(_random_near_identity(seed=1))
    R *= np.sign(np.diag(R))
    f = StrengthFamily(R)
    assert np.allclose(f.at(0.3) @ f.at(0.7), R, atol=1e-9) and np.allclose(f.at(-1.0), R.T, atol=1e-9)
    # a pure stretch: the factors move linearly, I + t (P - I)
    D = np.diag([0.5, 1, 2, 3, 1.5, 0.8])
    assert np.allclose(StrengthFamily(D).at(2.5), np.eye(6) + 2.5 * (D - np.eye(6)), atol=1e-9)


def test_a_reflection_passes_through_the_neutral_projection():
    d = np.zeros(5)
    d[1] = 1
    H = np.eye(5) - 2 * np.outer(d, d)  # reverses direction 1
    f = StrengthFamily(H)
    assert f.reflects and np.array_equal(f.at(1), H)
    assert np.allclose(f.at(0.5), np.eye(5) - np.outer(d, d), atol=1e-9)  # projected out: neutral
    assert np.allclose(f.at(0.25) @ d, 0.5 * d, atol=1e-9) and np.allclose(f.at(1.5) @ d, -2 * d, atol=1e-9)


def test_strength_family_bad_maps():
    with pytest.raises(ValueError, match="square"):
        StrengthFamily(np.ones((2, 3)))
    # a singular map is allowed: the stretch is interpolated linearly, W_t = (1 - t) I for W = 0
    assert np.allclose(StrengthFamily(np.zeros((3, 3))).at(0.25), 0.75 * np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        StrengthFamily(np.full((3, 3), np.nan))


def test_trained_map_moves_the_preference_monotonically_in_t_and_keeps_the_other_concept():
    """A toy embedding: coordinate 0 carries concept A (two classes), coordinate 1 concept B. Training prefers the
    opposite A class; B's predictions are kept."""
    rng = np.random.default_rng(0)
    n, d = 400, 8
    a = rng.integers(0, 2, n)
    b = rng.integers(0, 2, n)
    f = rng.normal(scale=0.3, size=(n, d))
    f[:, 0] += np.where(a == 1, 1.0, -1.0)
    f[:, 1] += np.where(b == 1, 1.0, -1.0)
    f = F.normalize(torch.tensor(f), dim=-1)
    text_a = torch.zeros(2, d, dtype=torch.float64)
    text_a[0, 0], text_a[1, 0] = -1, 1
    text_b = torch.zeros(2, d, dtype=torch.float64)
    text_b[0, 1], text_b[1, 1] = -1, 1
    W, log = train_linear_map(f, text_a, 1 - a, a, scale=10.0, keep=[(f, text_b)],
                              cfg=LinearMapConfig(steps=200, lr=0.02, lam=5.0, mu=0.1, nu=0.0))
    assert log[-1]["pref_acc"] > 0.9
    fam = StrengthFamily(W)
    acc_a, acc_b = [], []
    for t in np.linspace(-0.5, 1.5, 9):
        g = steer(f, fam.at(t))
        acc_a.append(float(((g @ text_a.T).argmax(-1).numpy() == a).mean()))
        acc_b.append(float(((g @ text_b.T).argmax(-1).numpy() == b).mean()))
    assert acc_a[2] > 0.95 and acc_a[-1] < 0.1  # t = 0: the original reading; t = 1.5: reversed
    assert all(x >= y - 0.02 for x, y in zip(acc_a, acc_a[1:])), acc_a  # monotone (within noise)
    assert min(acc_b) > max(acc_b) - 0.05, acc_b
    assert torch.equal(steer(f, fam.at(0)), f)


def test_symmetric_maps_move_linearly_in_t_even_with_several_flipped_directions():
    rng = np.random.default_rng(2)
    V, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    W = V @ np.diag([1.0, 1.2, 0.7, -0.8, -1.0, 0.9]) @ V.T  # two flipped directions, |-1| = |1| degenerate
    fam = StrengthFamily(W)
    assert fam.reflects and np.allclose(fam.log_Q, 0, atol=1e-9)
    for t in (-0.5, 0.3, 0.5, 1.7, 2.0):
        assert np.allclose(fam.at(t), np.eye(6) + t * (W - np.eye(6)), atol=1e-9)


def test_symmetric_training_gives_a_symmetric_map():
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(64, 5, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(2, 5, generator=g, dtype=torch.float64), dim=-1)
    y = (f @ text.T).argmax(-1).numpy()
    W, _ = train_linear_map(f, text, 1 - y, y, 10.0, cfg=LinearMapConfig(steps=30, symmetric=True))
    assert torch.allclose(W, W.T) and not torch.allclose(W, torch.eye(5, dtype=W.dtype))
