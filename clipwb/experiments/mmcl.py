"""Notebook 06's experiments (Nakada et al., AISTATS 2023): robustness of MMCL vs the unimodal baseline and PCA,
unpaired data (Algorithm 1 with global and minibatch detection, the step-matched control and the oracle), and the
real-image experiments with scikit-learn's digits as one modality and the embedded world's shapes (class k <-> shape
k) as the other (MNIST <-> Fashion-MNIST from a local torchvision root when given).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cache import cached_json, fingerprint
from ..theory import mmcl as M
from .summary import seed_summary


# -- 2: robustness ------------------------------------------------------------------------------------------------
def _cached(kind: str, key: list, compute, cache: bool):
    """A grid's rows through the run cache (``clipwb.cache``): every grid is a pure function of its arguments."""
    return cached_json(f"mmcl-{kind}", key, compute, enabled=cache)


def robustness_grid(ns=(500, 5000), ps=(0.0, 0.5, 0.8), seeds=(0, 1, 2), heteroskedastic=(False, True),
                    train_n_max: int = 5000, train_steps: int = 300, progress: bool = True, cache: bool = True,
                    **model) -> list[dict]:
    """sin Theta to U1* per (noise kind, n, p_n, seed) for MMCL in closed form, MMCL trained (CLIP loss, gradient
    descent; only for n <= ``train_n_max``), the unimodal baseline and PCA; cached."""
    from ..parallel import pmap

    def cell(c):
        h, n, p, s = c
        d = M.spiked_pairs(n, p_mismatch=p, heteroskedastic=h, seed=s, **model)
        r = d.u1.shape[1]
        row = {"heteroskedastic": h, "n": n, "p_n": p, "seed": s,
               "mmcl_closed_form": M.sin_theta(M.mmcl_closed_form(d.x, d.y, r)[0], d.u1),
               "unimodal": M.sin_theta(M.unimodal_closed_form(d.x, r), d.u1),
               "pca": M.sin_theta(M.pca(d.x, r), d.u1)}
        if n <= train_n_max:
            res = M.train_mmcl(d.x, d.y, r, steps=train_steps, seed=s, batch=None if n <= 1000 else 1000)
            row["mmcl_trained"] = M.sin_theta(M.row_space(res["g1"].numpy(), r), d.u1)
        return row

    cells = [(h, n, p, s) for h in heteroskedastic for n in ns for p in ps for s in seeds]
    return _cached("robustness", [cells, train_n_max, train_steps, model],
                   lambda: pmap(cell, cells, progress=progress, desc="robustness"), cache)


# -- 3: unpaired data ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnpairedConfig:
    init_steps: int = 300
    extra_steps: int = 300
    batch: int = 256
    nu_pseudo: float = 1.5  # positive weight on pseudo-pairs (Algorithm 1 needs nu > 1)
    minibatch: int = 256  # the batch restriction of the authors' notebooks: candidates within minibatches this size
    tau: float = 1.0
    rho: float = 3.0
    lr: float = 0.3


def _unpaired_data(n: int, ratio: int, seed: int, **model):
    """The n pairs (the same for every N / n) and N = ratio x n unpaired items: (pairs, unpaired items in their
    true order, their y shuffled, partner) with partner[i] = the position in the shuffled y of x_u[i]'s partner."""
    d = M.spiked_pairs(n, seed=seed, **model)
    du = M.spiked_pairs(ratio * n, seed=10_000 + seed, **model)
    perm = np.random.default_rng([seed, 99]).permutation(ratio * n)  # shuffled y[k] is the partner of x_u[perm[k]]
    return d, du, du.y[perm], np.argsort(perm)


def unpaired_run(n: int, ratio: int, seed: int, cfg: UnpairedConfig = UnpairedConfig(), **model) -> dict:
    """One cell of Fig. 2: n pairs plus N = ratio x n unpaired items of each modality (their pairing hidden by a
    seeded shuffle). Returns sin Theta after (a) the initial model on n pairs, (b) the step-matched control (the
    same extra steps on the n pairs only), (c) Algorithm 1 with global detection, (d) with the minibatch shortcut,
    (e) the oracle (the unpaired items' true pairs), and both detection precisions."""
    N = ratio * n
    d, du, yu, partner = _unpaired_data(n, ratio, seed, **model)
    r = d.u1.shape[1]
    xp, yp = d.x, d.y
    kw = dict(tau=cfg.tau, rho=cfg.rho, lr=cfg.lr, batch=cfg.batch)
    st = lambda g: M.sin_theta(M.row_space(g.numpy(), r), d.u1)  # noqa: E731
    init = M.train_mmcl(xp, yp, r, steps=cfg.init_steps, seed=seed, **kw)
    g0 = (init["g1"], init["g2"])
    out = {"n": n, "N_over_n": ratio, "N": N, "seed": seed, "initial": st(init["g1"])}
    ctrl = M.train_mmcl(xp, yp, r, steps=cfg.extra_steps, seed=seed, init=g0, **kw)
    out["control"] = st(ctrl["g1"])
    if N == 0:
        out.update(unpaired=out["control"], unpaired_minibatch=out["control"], oracle=out["control"],
                   detection_precision=float("nan"), detection_precision_minibatch=float("nan"))
        return out
    ux, uy = du.x, du.y  # the unpaired items in their true order (x_u[i] <-> y_u[i]); yu is the shuffled y
    ii, jj = M.detect_pairs(*g0, ux, yu, n_keep=N)
    out["detection_precision"] = M.precision(ii, jj, partner)
    res = M.train_mmcl(xp, yp, r, steps=cfg.extra_steps, seed=seed, init=g0, pseudo=(ux[ii], yu[jj]),
                       nu_pseudo=cfg.nu_pseudo, **kw)
    out["unpaired"] = st(res["g1"])
    # the shortcut needs minibatches that hold both members of their true pairs: detect on the unshuffled items
    bi, bj = M.detect_pairs_batched(*g0, ux, uy, batch=cfg.minibatch, seed=seed)
    out["detection_precision_minibatch"] = M.precision(bi, bj)
    res = M.train_mmcl(xp, yp, r, steps=cfg.extra_steps, seed=seed, init=g0, pseudo=(ux[bi], uy[bj]),
                       nu_pseudo=cfg.nu_pseudo, **kw)
    out["unpaired_minibatch"] = st(res["g1"])
    res = M.train_mmcl(xp, yp, r, steps=cfg.extra_steps, seed=seed, init=g0, pseudo=(ux, uy),
                       nu_pseudo=cfg.nu_pseudo, **kw)
    out["oracle"] = st(res["g1"])
    return out


def unpaired_grid(ns=(100, 200, 500), ratios=(0, 3, 6, 9, 12, 15), seeds=(0, 1, 2),
                  cfg: UnpairedConfig = UnpairedConfig(), progress: bool = True, cache: bool = True,
                  **model) -> list[dict]:
    """``unpaired_run`` for every (n, N/n, seed), in parallel processes; cached."""
    from ..parallel import pmap

    cells = [(n, k, s) for n in ns for k in ratios for s in seeds]
    return _cached("unpaired", [cells, dataclasses.asdict(cfg), model],
                   lambda: pmap(lambda c: unpaired_run(*c, cfg, **model), cells, progress=progress, desc="unpaired"),
                   cache)


def algorithm3_run(n: int, ratio: int, seed: int, rounds: int = 3, n_val: int = 200, accept: float = 1.1,
                   cfg: UnpairedConfig = UnpairedConfig(), **model) -> dict:
    """Algorithm 3 on one Fig. 2 cell (the same n pairs and unpaired items as ``unpaired_run``), with ``n_val``
    extra held-out pairs for the anchor's acceptance test: sin Theta and detection precision per round."""
    d, du, yu, partner = _unpaired_data(n, ratio, seed, **model)
    dv = M.spiked_pairs(n_val, seed=20_000 + seed, **model)
    out = M.algorithm3(d.x, d.y, du.x, yu, dv.x, dv.y, d.u1.shape[1], rounds=rounds, accept=accept,
                       init_steps=cfg.init_steps, round_steps=cfg.extra_steps, nu_pseudo=cfg.nu_pseudo, seed=seed,
                       partner=partner, tau=cfg.tau, rho=cfg.rho, lr=cfg.lr, batch=cfg.batch)
    st = M.sin_theta(M.row_space(out["g1"].numpy(), d.u1.shape[1]), d.u1)
    return {"n": n, "N_over_n": ratio, "seed": seed, "sin_theta": st, "rounds": out["rounds"],
            "accepted_rounds": sum(r["accepted"] for r in out["rounds"][1:])}


def algorithm3_grid(ns=(100, 500), ratios=(3, 15), seeds=(0, 1, 2), accepts=(1.1, 1.0), rounds: int = 3,
                    cfg: UnpairedConfig = UnpairedConfig(), progress: bool = True, cache: bool = True,
                    **model) -> list[dict]:
    """``algorithm3_run`` for every (acceptance factor, n, N/n, seed), in parallel processes; cached."""
    from ..parallel import pmap

    cells = [(a, n, k, s) for a in accepts for n in ns for k in ratios for s in seeds]
    return _cached("algorithm3", [cells, rounds, dataclasses.asdict(cfg), model],
                   lambda: pmap(lambda c: {"accept": c[0], **algorithm3_run(c[1], c[2], c[3], rounds=rounds,
                                                                            accept=c[0], cfg=cfg, **model)},
                                cells, progress=progress, desc="algorithm 3"), cache)


def summarise_grid(rows: list[dict], keys=("initial", "control", "unpaired", "unpaired_minibatch", "oracle",
                                            "detection_precision", "detection_precision_minibatch"),
                   by=("n", "N_over_n")) -> list[dict]:
    """Mean and std over seeds per (n, N/n) (``experiments.summary``)."""
    out = []
    for key, _, stats in seed_summary(rows, lambda r: tuple(r[b] for b in by), keys):
        row = dict(zip(by, key))
        for k, (mu, sd) in stats.items():
            row[k], row[f"{k}_std"] = mu, sd
        out.append(row)
    return out


# -- 4: real images -----------------------------------------------------------------------------------------------
@dataclass
class TwoModalities:
    """Class-labelled items of two modalities (features standardised), split into train / test."""
    x_train: np.ndarray
    cx_train: np.ndarray
    y_train: np.ndarray
    cy_train: np.ndarray
    x_test: np.ndarray
    cx_test: np.ndarray
    y_test: np.ndarray
    cy_test: np.ndarray
    names: tuple[str, str]


def _standardise(a, b):
    mu, sd = a.mean(0), a.std(0) + 1e-6
    return (a - mu) / sd, (b - mu) / sd


def digits_and_shapes(n_shapes_per_class: int = 180, image_size: int = 16, seed: int = 0,
                      test_share: float = 0.25, world_settings: dict | None = None) -> TwoModalities:
    """scikit-learn's bundled digits (8 x 8, 10 classes) and the embedded world's object images of shape classes
    0-9 (grey, ``image_size`` px), class k <-> shape k; ``world_settings``: ``WorldConfig`` fields for the shapes
    (``SHAPES_WORLD``: whole objects; None: the default world's)."""
    from sklearn.datasets import load_digits

    from ..world import World, WorldConfig

    dg = load_digits()
    rng = np.random.default_rng(seed)
    xd, cd = dg.data / 16.0, dg.target
    world = World(WorldConfig(seed=seed, **(world_settings or {})))
    b = world.generate(16 * n_shapes_per_class, "test", "object")  # eval split: class = index mod 16
    keep = np.array([r["label"] < 10 for r in b.records])
    img = torch.from_numpy(b.images[keep]).permute(0, 3, 1, 2).float().mean(1, keepdim=True) / 255.0
    img = F.interpolate(img, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    xs, cs = img.flatten(1).numpy(), np.array([r["label"] for r in b.records])[keep]
    od, os_ = rng.permutation(len(xd)), rng.permutation(len(xs))
    td, ts = int(test_share * len(xd)), int(test_share * len(xs))
    x_tr, x_te = _standardise(xd[od[td:]], xd[od[:td]])
    y_tr, y_te = _standardise(xs[os_[ts:]], xs[os_[:ts]])
    return TwoModalities(x_tr, cd[od[td:]], y_tr, cs[os_[ts:]], x_te, cd[od[:td]], y_te, cs[os_[:ts]],
                         ("digits", "world shapes"))


def mnist_and_fashion(root: str | Path, n_train: int = 60000, seed: int = 0) -> TwoModalities:
    """MNIST <-> Fashion-MNIST (class k <-> class k) from a local torchvision root (``root/MNIST``,
    ``root/FashionMNIST``); never downloads."""
    from torchvision import datasets

    root = Path(root)
    if not ((root / "MNIST").is_dir() and (root / "FashionMNIST").is_dir()):
        raise FileNotFoundError(f"no MNIST/ and FashionMNIST/ under {root}: download them once elsewhere with "
                                f"torchvision.datasets.MNIST(root, download=True) (and FashionMNIST), then copy "
                                f"the folder here")
    out = []
    for cls in (datasets.MNIST, datasets.FashionMNIST):
        parts = []
        for train in (True, False):
            ds = cls(str(root), train=train, download=False)
            parts.append((ds.data.flatten(1).float().numpy()[:n_train] / 255.0, ds.targets.numpy()[:n_train]))
        out.append(parts)
    (mx, mc), (mxt, mct) = out[0]
    (fx, fc), (fxt, fct) = out[1]
    mx, mxt = _standardise(mx, mxt)
    fx, fxt = _standardise(fx, fxt)
    return TwoModalities(mx, mc, fx, fc, mxt, mct, fxt, fct, ("MNIST", "Fashion-MNIST"))


class _Encoder(nn.Module):
    def __init__(self, d_in: int, r: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, r))

    def forward(self, x):
        return F.normalize(self.net(x), dim=-1)


def train_pairs(x: np.ndarray, y: np.ndarray, adjacency: np.ndarray, r: int = 32, steps: int = 400,
                lr: float = 1e-3, tau: float = 0.1, seed: int = 0, pseudo: tuple | None = None,
                nu_pseudo: float = 1.5, init: tuple | None = None, batch: int = 512):
    """Two MLP encoders (cosine similarities / tau) trained with multi-positive InfoNCE on a bipartite adjacency
    (row i of ``x`` is positive with every column j of ``y`` where adjacency[i, j] > 0), symmetric. ``pseudo`` =
    (x_u, y_u) adds one-to-one pseudo-pairs whose positive logit is scaled by ``nu_pseudo`` (Algorithm 1's nu > 1).
    Returns (f, g) encoders."""
    torch.manual_seed(seed)
    f, g = init if init is not None else (_Encoder(x.shape[1], r), _Encoder(y.shape[1], r))
    opt = torch.optim.Adam(list(f.parameters()) + list(g.parameters()), lr=lr)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    a = torch.as_tensor(adjacency, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    if pseudo is not None:
        xu, yu = (torch.as_tensor(v, dtype=torch.float32) for v in pseudo)

    def multi_pos(s, t):
        loss = 0.0
        for logits, tgt in ((s, t), (s.T, t.T)):
            w = tgt.sum(1)
            ok = w > 0
            if ok.any():
                lp = torch.log_softmax(logits[ok], dim=1)
                loss = loss + 0.5 * (-(tgt[ok] / w[ok, None]) * lp).sum(1).mean()
        return loss

    for _ in range(steps):
        loss = multi_pos(f(xt) @ g(yt).T / tau, a)
        if pseudo is not None and len(xu):
            idx = torch.randperm(len(xu), generator=gen)[:batch]
            s = f(xu[idx]) @ g(yu[idx]).T / tau
            s = s + (nu_pseudo - 1) * torch.diag(s.diagonal())  # the positive logit scaled by nu
            loss = loss + multi_pos(s, torch.eye(len(idx)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return f, g


@torch.no_grad()
def cross_modal_accuracy(f, g, data: TwoModalities) -> float:
    """Classify each test item of modality 1 by the nearest class prototype (mean embedding) of modality 2's test
    items: the accuracy of the learned cross-modal correspondence."""
    zx = f(torch.as_tensor(data.x_test, dtype=torch.float32))
    zy = g(torch.as_tensor(data.y_test, dtype=torch.float32))
    classes = np.unique(data.cy_test)
    proto = F.normalize(torch.stack([zy[torch.as_tensor(data.cy_test == c)].mean(0) for c in classes]), dim=-1)
    pred = classes[(zx @ proto.T).argmax(1).numpy()]
    return float((pred == data.cx_test).mean())


def class_pairs(cx: np.ndarray, cy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One-to-one pairs: each item of modality 1 gets a random modality-2 item of its class (index array)."""
    by = {c: np.flatnonzero(cy == c) for c in np.unique(cy)}
    return np.array([rng.choice(by[c]) for c in cx])


def many_to_many(data: TwoModalities, n: int = 500, flip: float = 0.1, k: int | None = 10, seed: int = 0,
                 n_vectors: str = "k-1", **train) -> dict:
    """Sec. 5.1 / Table 1: n items of each modality, adjacency = same class, each entry flipped with probability
    ``flip``; train on it as is (k = None) or after co-clustering into k blocks (with ``n_vectors`` singular vectors,
    ``mmcl.spectral_cocluster``) and dropping inter-cluster edges."""
    rng = np.random.default_rng([seed, 5])
    ix, iy = rng.choice(len(data.x_train), n, replace=False), rng.choice(len(data.y_train), n, replace=False)
    a = (data.cx_train[ix][:, None] == data.cy_train[iy][None, :]).astype(float)
    noisy = np.abs(a - (rng.random(a.shape) < flip))
    cleaned = noisy if k is None else M.cocluster_clean(noisy, k, seed, n_vectors)[0]
    truth = a > 0
    kept = cleaned > 0
    f, g = train_pairs(data.x_train[ix], data.y_train[iy], cleaned, seed=seed, **train)
    return {"flip": flip, "k": k, "vectors": n_vectors if k else "-", "seed": seed,
            "accuracy": cross_modal_accuracy(f, g, data),
            "edge_precision": float(truth[kept].mean()) if kept.any() else float("nan"),
            "edge_recall": float(kept[truth].mean())}


def semi_supervised(data: TwoModalities, n: int = 200, N: int | None = None, seed: int = 0, steps: int = 400,
                    **train) -> dict:
    """Fig. 3 analogue: n one-to-one class pairs; N unpaired items of each modality. Paired-only model, then
    Algorithm 1 (global detection over all N x N, keep N, nu > 1) continued for the same number of steps, the
    step-matched control (paired only) and the oracle (unpaired items paired by class)."""
    rng = np.random.default_rng([seed, 6])
    ox = rng.permutation(len(data.x_train))
    N = min(N or len(ox) - n, len(ox) - n)
    px, ux = ox[:n], ox[n:n + N]
    py = class_pairs(data.cx_train[px], data.cy_train, rng)
    uy = rng.choice(len(data.y_train), N, replace=len(data.y_train) < N)
    eye = np.eye(n)
    f, g = train_pairs(data.x_train[px], data.y_train[py], eye, steps=steps, seed=seed, **train)
    out = {"n": n, "N": N, "seed": seed, "paired_only": cross_modal_accuracy(f, g, data)}
    snap = lambda m: {k: v.clone() for k, v in m.state_dict().items()}  # noqa: E731
    s_f, s_g = snap(f), snap(g)

    def restart():
        f2, g2 = _Encoder(data.x_train.shape[1], f.net[-1].out_features), _Encoder(data.y_train.shape[1],
                                                                                      g.net[-1].out_features)
        f2.load_state_dict(s_f)
        g2.load_state_dict(s_g)
        return f2, g2

    f2, g2 = train_pairs(data.x_train[px], data.y_train[py], eye, steps=steps, seed=seed + 1, init=restart(), **train)
    out["control"] = cross_modal_accuracy(f2, g2, data)
    with torch.no_grad():
        a = f(torch.as_tensor(data.x_train[ux], dtype=torch.float32))
        b = g(torch.as_tensor(data.y_train[uy], dtype=torch.float32))
    ident = (torch.eye(a.shape[1]), torch.eye(b.shape[1]))
    ii, jj = M.detect_pairs(ident[0].double(), ident[1].double(), a.double().numpy(), b.double().numpy(), n_keep=N)
    out["detection_precision"] = float((data.cx_train[ux][ii] == data.cy_train[uy][jj]).mean())
    f3, g3 = train_pairs(data.x_train[px], data.y_train[py], eye, steps=steps, seed=seed + 1, init=restart(),
                         pseudo=(data.x_train[ux][ii], data.y_train[uy][jj]), **train)
    out["with_unpaired"] = cross_modal_accuracy(f3, g3, data)
    oy = class_pairs(data.cx_train[ux], data.cy_train, rng)
    f4, g4 = train_pairs(data.x_train[px], data.y_train[py], eye, steps=steps, seed=seed + 1, init=restart(),
                         pseudo=(data.x_train[ux], data.y_train[oy]), **train)
    out["oracle"] = cross_modal_accuracy(f4, g4, data)
    return out


def chance(data: TwoModalities) -> float:
    return 1.0 / len(np.unique(data.cx_test))



def real_data_runs(data: TwoModalities, flips=(0.1, 0.2, 0.3), seeds=(0, 1), steps: int = 200, tau: float = 0.5,
                   cache: bool = True) -> dict:
    """Every run of Sec. 5.1 / Table 1 (``many_to_many`` with n = min(500, data size) per flip, without cleaning
    and with co-clustering into 10 blocks with k - 1 and log2 k singular vectors) and of Fig. 3
    (``semi_supervised`` with n = min(500, half the training items)) on one pair of modalities, per seed; returns
    {"table1": rows, "fig3": rows}, cached by the data's content and the arguments."""
    def run():
        n_m2m = min(500, len(data.x_train), len(data.y_train))
        table1 = [many_to_many(data, n_m2m, flip, k, s, n_vectors=vectors, steps=steps, tau=tau)
                  for flip in flips for k, vectors in ((None, "k-1"), (10, "k-1"), (10, "log2")) for s in seeds]
        fig3 = [semi_supervised(data, min(500, len(data.x_train) // 2), seed=s, steps=steps, tau=tau) for s in seeds]
        return {"table1": table1, "fig3": fig3}

    key = [fingerprint(dataclasses.asdict(data)), list(flips), list(seeds), steps, tau]
    return _cached("real", key, run, cache)


def real_data_tables(datasets: dict, flips=(0.1, 0.2, 0.3), seeds=(0, 1), steps: int = 200, tau: float = 0.5,
                     cache: bool = True) -> tuple[list[dict], list[dict]]:
    """``real_data_runs`` of every named pair of modalities (name -> ``TwoModalities``); returns the Table 1 and
    Fig. 3 rows of all of them, each with its ``data`` name."""
    runs = {name: real_data_runs(data, flips, seeds, steps=steps, tau=tau, cache=cache)
            for name, data in datasets.items()}
    return ([{"data": name, **r} for name, run in runs.items() for r in run["table1"]],
            [{"data": name, **r} for name, run in runs.items() for r in run["fig3"]])


def monotone_within_noise(summary: list[dict], key: str = "unpaired", by: str = "N_over_n") -> dict:
    """Per n of a ``summarise_grid`` summary: whether ``key`` falls monotonically in ``by`` within noise, i.e. no
    later point lies above an earlier one by more than the larger of their seed stds."""
    out = {}
    for n in sorted({r["n"] for r in summary}):
        sub = sorted((r for r in summary if r["n"] == n), key=lambda r: r[by])
        out[n] = all(b[key] <= a[key] + max(a[f"{key}_std"], b[f"{key}_std"])
                     for i, a in enumerate(sub) for b in sub[i + 1:])
    return out


def closed_form_table(robustness_rows: list[dict]) -> dict:
    """``<homo|hetero>_n<n>_p<p>`` -> seed means of the closed-form MMCL, unimodal and PCA sin Theta of a
    ``robustness_grid``."""
    keys = ("mmcl_closed_form", "unimodal", "pca")
    groups: dict = {}
    for r in robustness_rows:
        groups.setdefault((r["heteroskedastic"], r["n"], r["p_n"]), []).append(r)
    return {f"{'hetero' if h else 'homo'}_n{n}_p{p}": {k: float(np.mean([r[k] for r in rows])) for k in keys}
            for (h, n, p), rows in sorted(groups.items())}


# The world as Sec. 5.1's "shapes" modality needs it: whole objects (the pre-typographic object size; the
# typographic world's smaller objects halved the digits <-> shapes accuracy), no text (object images only)
SHAPES_WORLD = {"object_size": (0.22, 0.4)}


def table1_summary(rows: list[dict], key: str = "accuracy") -> list[dict]:
    """Table 1 rows (``real_data_tables``) summarised over seeds per (data, flip, cleaning): mean, std, every seed
    and the t-interval (``evaluation.stats.seed_summary``), and for each co-clustering row its gain over no
    cleaning on the same seeds with the t-interval of the paired differences and whether it excludes 0."""
    from ..evaluation.stats import seed_summary

    def group(r):
        return (r["data"], r["flip"], r.get("k") or 0, r["vectors"])

    groups: dict = {}
    for r in rows:
        groups.setdefault(group(r), {})[r["seed"]] = r[key]
    out = []
    for (data, flip, k, vectors), by_seed in sorted(groups.items(), key=lambda kv: str(kv[0])):
        s = seed_summary([by_seed[sd] for sd in sorted(by_seed)])
        row = {"data": data, "flip": flip, "k": k, "vectors": vectors, key: s["mean"], f"{key}_std": s["std"],
               f"{key}_seeds": s["values"], f"{key}_seed_ci": s["ci"]}
        base = groups.get((data, flip, 0, "-"))
        if k and base:
            common = sorted(set(base) & set(by_seed))
            d = seed_summary([by_seed[sd] - base[sd] for sd in common])
            row.update(gain=d["mean"], gain_ci=d["ci"],
                       gain_significant=bool(d["ci"] is not None and not d["ci"][0] <= 0 <= d["ci"][1]))
        out.append(row)
    return out
