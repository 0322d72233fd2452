"""Matplotlib figures of the workbench. Every function returns the Figure and, given ``save``, also writes a
PNG there (parent folders created), so notebooks display it and reports/ keeps it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline", "widget",
                                            "ipympl", "module://ipympl.backend_nbagg"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _finish_panels(fig, axes, ylabel: str, save):
    """A row of panels: y label and legend on the first, tight layout, saved."""
    first = np.atleast_1d(axes)[0]
    first.set_ylabel(ylabel)
    first.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save)


def _save(fig, save):
    if save:
        save = Path(save)
        save.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=110, bbox_inches="tight")
    return fig


def image_grid(images: np.ndarray, titles=None, ncol: int = 8, scale: float = 1.3, save=None, suptitle=None):
    """A grid of uint8 images (n, H, W, 3) with optional per-image titles."""
    n = len(images)
    nrow = max(1, int(np.ceil(n / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * scale, nrow * scale * (1.18 if titles else 1.0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return _save(fig, save)


def manifest_stats(records: list[dict], keys=("kind", "class_name", "background", "color", "text_font",
                                              "occupation"), save=None):
    """Bar charts of how often each value of each manifest field occurs (None values left out)."""
    keys = [k for k in keys if any(r.get(k) is not None for r in records)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        cnt = Counter(str(r[k]) for r in records if r.get(k) is not None)
        names = sorted(cnt)
        ax.bar(range(len(names)), [cnt[v] for v in names], color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
        ax.set_title(k)
    fig.tight_layout()
    return _save(fig, save)


def pretrain_curves(log: dict, save=None):
    """Loss and logit scale per step, and held-out zero-shot accuracies at each evaluation."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    steps = np.asarray(log["step"])
    loss = np.asarray(log["loss"])
    axes[0].plot(steps, loss, lw=0.5, alpha=0.4, color="tab:blue")
    k = max(1, len(loss) // 50)
    if len(loss) > k:
        axes[0].plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), color="tab:blue")
    axes[0].set(title="contrastive loss (ClipLoss)", xlabel="step")
    axes[1].plot(steps, log["logit_scale"], color="tab:orange")
    axes[1].set(title="logit scale exp(s)", xlabel="step")
    ev = log.get("eval", [])
    if ev:
        x = [e["step"] for e in ev]
        for key, lab in [("zero_shot_clean_top1", "clean objects"), ("zero_shot_typo_top1", "typographic (true)"),
                         ("attack_success", "typographic (written)"), ("text_read_top1", "text alone"),
                         ("gender_top1", "gender"), ("occupation_top1", "occupation")]:
            axes[2].plot(x, [e[key] for e in ev], marker="o", ms=3, label=lab)
        axes[2].set(title="zero-shot top-1 (val)", xlabel="step", ylim=(0, 1))
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save)


def confusion_matrix(true, pred, classes, title="zero-shot confusion", save=None, normalize: bool = True):
    from sklearn.metrics import confusion_matrix as sk_cm

    cm = sk_cm(true, pred, labels=list(range(len(classes)))).astype(float)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(classes)), classes, rotation=70, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, save)


def accuracy_bars(values: dict[str, float], title: str = "", ylabel: str = "top-1", save=None, ref=None):
    """Bars for named fractions; ``ref`` draws a dashed reference line (e.g. a target)."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(values), 3.4))
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color=plt.cm.tab10(np.arange(len(names)) % 10))
    for b, n in zip(bars, names):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, f"{values[n]:.2f}", ha="center", fontsize=8)
    if ref is not None:
        ax.axhline(ref, ls="--", color="gray")
    ax.set(ylim=(0, 1.08), ylabel=ylabel, title=title)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    return _save(fig, save)


def _yerr(ci, v):
    """A [low, high] interval as matplotlib's asymmetric error (2, 1), or None."""
    if ci is None or v is None or not np.isfinite(v):
        return None
    return np.array([[max(0.0, v - ci[0])], [max(0.0, ci[1] - v)]])


def grouped_bars(table: dict[str, dict[str, float]], title: str = "", ylabel: str = "top-1", save=None,
                 errors: dict[str, dict[str, list]] | None = None):
    """Grouped bars: ``table[group][metric]`` (e.g. one group per dataset, one bar per metric); ``errors[group]
    [metric]`` = [low, high] draws each bar's 95 % interval."""
    groups = list(table)
    metrics = list(dict.fromkeys(m for g in groups for m in table[g]))
    width = 0.8 / max(1, len(metrics))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(groups), 3.6))
    x = np.arange(len(groups))
    for j, m in enumerate(metrics):
        vals = [table[g].get(m, np.nan) for g in groups]
        bars = ax.bar(x + (j - (len(metrics) - 1) / 2) * width, vals, width, label=m)
        for b, v, g in zip(bars, vals, groups):
            err = _yerr((errors or {}).get(g, {}).get(m), v)
            if err is not None:
                ax.errorbar(b.get_x() + b.get_width() / 2, v, yerr=err, color="black", lw=0.8, capsize=2)
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v + (err[1, 0] if err is not None else 0) + 0.01,
                        f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set(ylim=(0, 1.1), ylabel=ylabel, title=title)
    ax.legend(fontsize=7, ncol=len(metrics), loc="upper center")
    fig.tight_layout()
    return _save(fig, save)


def clean_vs_attacked(clean: np.ndarray, typo: np.ndarray, titles=None, ncol: int = 8, save=None, suptitle=None):
    """Pairs of images: each clean image above its attacked version."""
    n = min(len(clean), len(typo), ncol)
    imgs = np.concatenate([clean[:n], typo[:n]])
    t = (["clean"] * n + list(titles[:n])) if titles is not None else None
    return image_grid(imgs, titles=t, ncol=n, save=save, suptitle=suptitle)


def typo_manifest_stats(rows: list[dict], classes, save=None):
    """Statistics of a typographic manifest: fonts, fill and stroke colours, text sizes (px), written words."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    font = Counter(r["text_font"].replace(".ttf", "") for r in rows)
    axes[0].barh(list(font), list(font.values()))
    axes[0].set(title="font")
    fill, stroke = Counter(r["text_fill"] for r in rows), Counter(r["text_stroke"] for r in rows)
    names = sorted(set(fill) | set(stroke))
    x = np.arange(len(names))
    axes[1].bar(x - 0.2, [fill[n] for n in names], 0.4, label="fill")
    axes[1].bar(x + 0.2, [stroke[n] for n in names], 0.4, label="stroke")
    axes[1].set_xticks(x, names, rotation=60, fontsize=7)
    axes[1].set(title="colours")
    axes[1].legend(fontsize=7)
    sizes = np.array([int(r["text_size"]) for r in rows])
    axes[2].hist(sizes, bins=np.arange(sizes.min(), sizes.max() + 2) - 0.5)
    axes[2].set(title="text size (px)")
    written = Counter(int(r["written_label"]) for r in rows)
    axes[3].bar(range(len(classes)), [written[i] for i in range(len(classes))])
    axes[3].set_xticks(range(len(classes)), classes, rotation=70, fontsize=7)
    axes[3].set(title="written word")
    fig.tight_layout()
    return _save(fig, save)


def po_curves(logs: dict[str, list[dict]], save=None):
    """Loss, preference accuracy (h > 0), mean margin h and KL per step, one line per method."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for name, log in logs.items():
        steps = [r["step"] for r in log]
        for ax, key in zip(axes, ("loss", "pref_acc", "margin", "kl")):
            vals = np.array([r.get(key, np.nan) for r in log], dtype=float)
            if np.isfinite(vals).any():
                ax.plot(steps, vals, label=name)
    for ax, title in zip(axes, ("loss", "preference accuracy (h > 0)", "margin h (nats)", "KL(ref || policy), clean")):
        ax.set(title=title, xlabel="step")
    axes[0].set_yscale("symlog", linthresh=1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, save)


def tradeoff(points: dict[str, dict[str, dict]], reference: dict, x: str = "clean_top1", y: str = "typo_top1",
             save=None):
    """Clean vs typographic top-1: the reference model and, per method, raw (o) and averaged (s) weights."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.scatter([reference[x]], [reference[y]], marker="*", s=180, color="black", label="pretrained", zorder=3)
    for i, (name, res) in enumerate(points.items()):
        c = plt.cm.tab10(i % 10)
        for kind, marker in (("raw", "o"), ("avg", "s")):
            if kind in res:
                r = res[kind]
                ax.errorbar([r[x]], [r[y]], xerr=_yerr(r.get(f"{x}_ci"), r[x]), yerr=_yerr(r.get(f"{y}_ci"), r[y]),
                            color=c, marker=marker, ms=6, lw=0.8, capsize=2, label=f"{name} ({kind})")
    ax.set(xlabel=x.replace("_", " "), ylabel=y.replace("_", " "), title="robustness vs clean accuracy")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, save)


def defence_pareto(results: dict[str, dict], curves: dict[str, list[dict]] | None = None, x: str = "clean_top1",
                   y: str = "typo_top1", save=None):
    """Clean vs typographic top-1, one marker per defence (the zero-shot model a star) with its 95 % intervals
    (``<x>_ci``, ``<y>_ci``), and each curve of ``curves`` (rows along a strength, e.g. PAINT's alpha) as a line
    through the strengths that carry ``x`` and ``y``;
    the Pareto front of the markers dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, (name, rows) in enumerate((curves or {}).items()):
        measured = [r for r in rows if x in r and y in r]  # strengths measured on the test sets
        gaps = len(measured) < len(rows)  # a straight segment there is not the path: dotted, and said so
        ax.plot([r[x] for r in measured], [r[y] for r in measured], color=plt.cm.tab20(2 * (i % 10) + 1), lw=1.2,
                ls=":" if gaps else "-", marker=".", ms=4, zorder=1,
                label=f"{name} curve" + (" (tested strengths only)" if gaps else ""))
    pts = sorted(((r[x], r[y], n) for n, r in results.items()), reverse=True)
    front, best = [], -np.inf
    for px, py, _ in pts:  # highest clean first: a point is on the front if no point with more clean beats its typo
        if py > best:
            front.append((px, py))
            best = py
    if len(front) > 1:
        ax.plot(*zip(*front), ls="--", color="grey", lw=0.8, zorder=0, label="Pareto front")
    for i, (name, r) in enumerate(results.items()):
        star = name == "zero_shot"
        color = "black" if star else plt.cm.tab20(2 * (i % 10))
        ax.errorbar([r[x]], [r[y]], xerr=_yerr(r.get(f"{x}_ci"), r[x]), yerr=_yerr(r.get(f"{y}_ci"), r[y]),
                    color=color, lw=0.7, capsize=2, zorder=2, fmt="none")
        ax.scatter([r[x]], [r[y]], s=180 if star else 55, marker="*" if star else "o", color=color, zorder=3,
                   label=name)
    ax.set(xlabel=x.replace("_", " "), ylabel=y.replace("_", " "), title="defences: robustness vs clean accuracy")
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, save)


def sweep_plot(values, results: list[dict], param: str, keys=("clean_top1", "typo_top1", "typo_heldout_top1",
                                                               "kl_drift"), save=None, title: str = ""):
    """Metrics against one swept parameter (log-x when it spans more than a decade)."""
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    for k in keys:
        ax.plot(values, [r.get(k, np.nan) for r in results], marker="o", label=k)
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_xscale("log")
    ax.set(xlabel=param, title=title or f"sweep over {param}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, save)


def embedding_views(views: dict, colorings: dict, method: str = "pca", fit_labels=None, save=None, seed: int = 0,
                    names: dict | None = None):
    """Rows = embedding sets (e.g. before / after), columns = colourings (class, written word, gender, ...).
    ``views``: name -> (n, d) array (the same images in every view); ``colorings``: name -> int labels (n,);
    the projection (PCA, LDA fitted on ``fit_labels``, or t-SNE) is fitted on the first view and applied to all
    (t-SNE is fitted per view), so that moves between views are visible."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.manifold import TSNE

    first = np.asarray(next(iter(views.values())))
    if method == "pca":
        proj = PCA(n_components=2, random_state=seed).fit(first).transform
    elif method == "lda":
        if fit_labels is None:
            raise ValueError("LDA needs fit_labels (the concept to separate)")
        proj = LinearDiscriminantAnalysis(n_components=2).fit(first, fit_labels).transform
    elif method == "tsne":
        proj = None
    else:
        raise ValueError(f"method must be pca, lda or tsne, got {method!r}")
    fig, axes = plt.subplots(len(views), len(colorings), figsize=(3.4 * len(colorings), 3.2 * len(views)),
                             squeeze=False)
    for i, (vname, X) in enumerate(views.items()):
        X = np.asarray(X)
        Z = proj(X) if proj is not None else TSNE(n_components=2, random_state=seed, init="pca").fit_transform(X)
        for j, (cname, lab) in enumerate(colorings.items()):
            ax = axes[i, j]
            lab = np.asarray(lab)
            for k in np.unique(lab):
                label = (names or {}).get(cname, {}).get(int(k), str(k)) if names else str(k)
                ax.scatter(*Z[lab == k].T, s=4, alpha=0.5, label=label)
            ax.set(title=f"{vname}: {cname} ({method.upper()})", xticks=[], yticks=[],
                   xlabel=f"{method.upper()} 1", ylabel=f"{method.upper()} 2")
            many = len(np.unique(lab)) > 6
            ax.legend(fontsize=5 if many else 6, markerscale=2, ncol=2 if many else 1, title=f"colour: {cname}",
                      title_fontsize=6)
    fig.tight_layout()
    return _save(fig, save)


def method_summary(rows: list[dict], metric: str = "linear_probe_top1", by: str = "noise_share", title: str = "",
                   save=None, ref: float | None = None):
    """Bars with std error bars: one group per method, one bar per value of ``by`` (e.g. clean / noisy), from
    ``experiments.gca.summarise`` rows (``row[metric] = {"mean", "std"}``)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    settings = list(dict.fromkeys(r[by] for r in rows))
    width = 0.8 / max(1, len(settings))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(methods), 3.6))
    x = np.arange(len(methods))
    for j, st in enumerate(settings):
        cell = {r["method"]: r.get(metric) for r in rows if r[by] == st}
        means = [cell[m]["mean"] if cell.get(m) else np.nan for m in methods]
        stds = [cell[m]["std"] if cell.get(m) else 0 for m in methods]
        bars = ax.bar(x + (j - (len(settings) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
                      label=f"{by} = {st}")
        for b, v in zip(bars, means):
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    if ref is not None:
        ax.axhline(ref, color="gray", ls=":", lw=1, label="chance")
    ax.set_xticks(x, methods, fontsize=8)
    ax.set(ylabel=metric, title=title or metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save)


def sinkhorn_benchmark(rows: list[dict], n: int = 512, save=None):
    """Speed-ups of our Sinkhorn over each POT solver against n (one line per eps), from
    benchmarks/results/sinkhorn.json."""
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    fig, axes = plt.subplots(1, len(solvers), figsize=(3.2 * len(solvers), 3.2), sharey=False)
    for ax, sv in zip(np.atleast_1d(axes), solvers):
        for eps in sorted({r["eps"] for r in rows}):
            pts = sorted((r["n"], r["speedup"]) for r in rows if r["solver"] == sv and r["eps"] == eps)
            ax.plot(*zip(*pts), marker="o", label=f"eps {eps}")
        ax.axhline(1.0, color="gray", lw=1, ls=":")
        ax.set(xscale="log", yscale="log", title=sv, xlabel="n")
        ax.set_xticks(sorted({r["n"] for r in rows}), [str(v) for v in sorted({r["n"] for r in rows})])
    np.atleast_1d(axes)[0].set_ylabel("speed-up (POT time / ours)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save)


def mmcl_robustness(rows: list[dict], methods=("mmcl_closed_form", "mmcl_trained", "unimodal", "pca"), save=None):
    """sin Theta to the true subspace against p_n, one panel per (noise kind, n), mean ± std over seeds."""
    panels = sorted({(r["heteroskedastic"], r["n"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.3), sharey=True)
    for ax, (h, n) in zip(np.atleast_1d(axes), panels):
        sub = [r for r in rows if r["heteroskedastic"] == h and r["n"] == n]
        ps = sorted({r["p_n"] for r in sub})
        for m in methods:
            vals = [[r[m] for r in sub if r["p_n"] == p and m in r] for p in ps]
            if not all(vals):
                continue
            mu, sd = np.array([np.mean(v) for v in vals]), np.array([np.std(v) for v in vals])
            ax.errorbar(ps, mu, yerr=sd, marker="o", capsize=3, label=m)
        ax.set(title=f"n = {n}, {'heteroskedastic' if h else 'homoskedastic'}", xlabel="mismatched share p_n")
        ax.grid(alpha=0.3)
    return _finish_panels(fig, axes, "||sin Theta(P_r(G1), U1*)||_F", save)


def mmcl_unpaired(summary: list[dict], paper: dict | None = None,
                  keys=("unpaired", "unpaired_minibatch", "control", "oracle"), save=None):
    """Fig. 2 analogue: sin Theta against N/n per n (mean ± std band over seeds), with the paper's end points."""
    ns = sorted({r["n"] for r in summary})
    fig, axes = plt.subplots(1, len(ns), figsize=(3.5 * len(ns), 3.3), sharey=False)
    for ax, n in zip(np.atleast_1d(axes), ns):
        sub = sorted((r for r in summary if r["n"] == n), key=lambda r: r["N_over_n"])
        x = [r["N_over_n"] for r in sub]
        for k in keys:
            mu = np.array([r[k] for r in sub])
            sd = np.array([r.get(f"{k}_std", 0.0) for r in sub])
            ax.plot(x, mu, marker="o", ms=3, label=k)
            ax.fill_between(x, mu - sd, mu + sd, alpha=0.15)
        if paper and n in paper:
            ax.plot([0, 15], paper[n], "k--", lw=1, marker="x", label="paper (trained cosine)")
        ax.set(title=f"n = {n}", xlabel="N / n")
        ax.grid(alpha=0.3)
    return _finish_panels(fig, axes, "sin Theta", save)


def reading_probes(curves: dict[str, dict], save=None):
    """Per-layer class-token probe top-1 for the object and the written word (``experiments.reading``), one line per
    model of ``curves`` (name -> analysis), with 95 % intervals as bands; layer 0 is the input of the first block."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for i, (name, a) in enumerate(curves.items()):
        for key, ls, label in (("probe_object", "-", "object"), ("probe_word", "--", "written word")):
            p = a[key]
            x = np.arange(len(p["top1"]))
            lo, hi = np.array(p["ci"]).T
            ax.plot(x, p["top1"], ls=ls, marker="o", ms=3, color=plt.cm.tab10(i), label=f"{name}: {label}")
            ax.fill_between(x, lo, hi, color=plt.cm.tab10(i), alpha=0.15)
    ax.set(xlabel="layer (class token after block)", ylabel="probe top-1 on test", ylim=(0, 1.02),
           title="what the class token holds, layer by layer")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, save)


def head_heatmaps(scores: dict[str, list], save=None, title: str = "typographic attention score"):
    """One layer x head heat map per model (name -> score as ``experiments.reading``), on a common colour scale,
    each cell's score written in it."""
    mats = {n: np.asarray(s, dtype=float) for n, s in scores.items()}
    vmax = max(float(m.max()) for m in mats.values())
    fig, axes = plt.subplots(1, len(mats), figsize=(0.6 + 3.4 * len(mats), 3.4), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax, aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < vmax / 2 else "k")
        ax.set(xlabel="head", ylabel="layer", title=name, xticks=range(m.shape[1]), yticks=range(m.shape[0]))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="attention mass on the text")
    fig.suptitle(title, fontsize=10)
    return _save(fig, save)


def attention_overlays(images: np.ndarray, maps: dict[str, np.ndarray], heads: list[dict], save=None):
    """Rows: images; columns: the image, then per model of ``maps`` (name -> (n, n_heads, rows, cols) as
    ``experiments.reading.attention_examples``) each head's class-token attention drawn over the image."""
    n, names = len(images), list(maps)
    ncol = 1 + len(names) * len(heads)
    fig, axes = plt.subplots(n, ncol, figsize=(1.25 * ncol, 1.3 * n + 0.4), squeeze=False)
    S = images.shape[1]
    for i in range(n):
        axes[i, 0].imshow(images[i])
        c = 1
        for name in names:
            for j, h in enumerate(heads):
                a = maps[name][i, j]
                axes[i, c].imshow(images[i])
                axes[i, c].imshow(a / max(a.max(), 1e-9), cmap="inferno", alpha=0.6, extent=(0, S, S, 0),
                                  interpolation="nearest")
                if i == 0:
                    axes[i, c].set_title(f"{name}\nL{h['layer']} H{h['head']}", fontsize=7)
                c += 1
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, save)


def head_effects(rows: list[dict], tolerance: float | None = None, save=None, title: str = "each head ablated alone"):
    """Clean cost against typographic gain (points) of single-head ablations (``defences.heads.head_effects`` rows),
    each head labelled L<layer>.H<head>; a dashed line at the clean tolerance of the greedy search."""
    import re

    fig, ax = plt.subplots(figsize=(5.2, 4))
    x = [100 * r["clean_cost"] for r in rows]
    y = [100 * r["typo_gain"] for r in rows]
    ax.scatter(x, y, c=[r.get("score", 0) for r in rows], cmap="viridis")
    for r, xi, yi in zip(rows, x, y):
        m = re.search(r"(\d+)\D*#(\d+)$", r["head"])
        ax.annotate(f"L{m[1]}.H{m[2]}" if m else r["head"], (xi, yi), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    if tolerance is not None:
        ax.axvline(100 * tolerance, ls="--", c="grey", lw=1, label=f"clean tolerance ({100 * tolerance:.0f} pt)")
        ax.legend(fontsize=8)
    ax.axhline(0, c="k", lw=0.5)
    ax.set(xlabel="clean top-1 cost (points)", ylabel="typographic top-1 gain (points)", title=title)
    fig.tight_layout()
    _save(fig, save)
    return fig

