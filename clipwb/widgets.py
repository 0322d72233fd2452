"""The concept-steering demo (notebook 04): a slider for the strength t, a choice of concept (written text /
gender) and of an example image, showing live the zero-shot probabilities of the steered embedding, its point
in a 2-D projection of the embeddings, and the concept's metrics at that t.

In JupyterLab ``steering_demo`` returns an ipywidgets box. Headless (papermill, or ``interactive=False``; the
report runner sets ``CLIPWB_HEADLESS=1``) it renders the same views as a static sweep over t instead and saves
them as PNG.
"""
from __future__ import annotations

import html
import os

import torch

from . import viz
from .experiments.concepts import ConceptData, evaluate
from .steering.linear import steer

CONCEPT_VIEWS = {
    # concept -> (set of images, text classes, label key, label names key, metric keys shown)
    "written text": ("typo", "objects", "class", "objects", ("object_top1", "typo_top1", "attack_success")),
    "gender": ("portraits", "genders", "gender", "genders", ("gender_top1", "occupation_top1", "object_top1")),
}


def headless() -> bool:
    return os.environ.get("CLIPWB_HEADLESS", "") == "1"


def probabilities(cd: ConceptData, concept: str, index: int, W_t) -> dict[str, float]:
    set_name, text_key, _, names_key, _ = CONCEPT_VIEWS[concept]
    f = steer(cd.feats[set_name][index:index + 1], W_t)
    p = torch.softmax(cd.scale * f @ cd.text[text_key].T, -1)[0].numpy()
    return dict(zip(cd.classes[names_key], p.tolist()))


def probs_html(probs: dict[str, float], top: int = 5) -> str:
    """Top classes as text bars; the element carries class ``clipwb-probs`` (the browser test reads it)."""
    rows = sorted(probs.items(), key=lambda kv: -kv[1])[:top]
    lines = "".join(f"<div><code>{html.escape(k):>12s} {v:6.3f}</code> "
                    f"<span style='display:inline-block;background:#4c72b0;height:0.8em;width:{int(200 * v)}px'>"
                    f"</span></div>" for k, v in rows)
    return f"<div class='clipwb-probs'>{lines}</div>"


def _projection(cd: ConceptData, concept: str):
    from sklearn.decomposition import PCA

    set_name = CONCEPT_VIEWS[concept][0]
    X = cd.feats[set_name].numpy()
    return PCA(n_components=2, random_state=0).fit(X)


def pca_panel(ax, pca, feats, labels, names, index: int, title: str, legend: bool = True) -> None:
    """One PCA panel: steered embeddings coloured by ``names[label]``, the example image as a black star, axes
    named by the principal components (and the variance they explain on the unsteered embeddings)."""
    Z = pca.transform(feats)
    for j, name in enumerate(names):
        ax.scatter(*Z[labels == j].T, s=4, alpha=0.4, label=name)
    ax.scatter(*Z[index], s=120, marker="*", color="black", label=f"image {index}")
    var = pca.explained_variance_ratio_
    ax.set(title=title, xlabel=f"PC 1 ({100 * var[0]:.0f} % var.)", ylabel=f"PC 2 ({100 * var[1]:.0f} % var.)",
           xticks=[], yticks=[])
    if legend:
        ax.legend(fontsize=6, markerscale=2, ncol=1 if len(names) <= 8 else 2, loc="center left",
                  bbox_to_anchor=(1.01, 0.5), title="colour: true " + ("class" if len(names) > 2 else "label"),
                  title_fontsize=6)


def steering_demo(cd: ConceptData, families: dict, t_range=(-1.0, 2.0), interactive: bool | None = None,
                  save_dir=None, ts=(-0.5, 0.0, 0.5, 1.0, 1.5)):
    """The demo: ``families`` maps a concept of ``CONCEPT_VIEWS`` to its ``StrengthFamily``."""
    unknown = set(families) - set(CONCEPT_VIEWS)
    if unknown:
        raise ValueError(f"unknown concepts {sorted(unknown)}; use {list(CONCEPT_VIEWS)}")
    if interactive is None:
        interactive = not headless()
    if not interactive:
        return static_sweep(cd, families, ts, save_dir)
    import ipywidgets as W
    import matplotlib.pyplot as plt

    concepts = list(families)
    slider = W.FloatSlider(value=0.0, min=t_range[0], max=t_range[1], step=0.05, description="t",
                           continuous_update=True, readout_format=".2f")
    concept = W.Dropdown(options=concepts, value=concepts[0], description="concept")
    example = W.Dropdown(options=list(range(min(len(cd.images.get("typo", [])) or 8, 16))), value=0,
                         description="image")
    probs_out, metrics_out = W.HTML(), W.HTML()
    plot_out = W.Output()
    cache = {}

    def refresh(*_):
        c, t, i = concept.value, float(slider.value), int(example.value)
        W_t = families[c].at(t)
        probs_out.value = probs_html(probabilities(cd, c, i, W_t))
        m = evaluate(cd, W_t)
        keys = CONCEPT_VIEWS[c][4]
        metrics_out.value = "<br>".join(f"{k}: <b>{m[k]:.3f}</b>" for k in keys)
        if c not in cache:
            cache[c] = _projection(cd, c)
        pca = cache[c]
        set_name, _, label_key, names_key, _ = CONCEPT_VIEWS[c]
        with plot_out:
            plot_out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
            img = cd.images[set_name][i]
            axes[0].imshow(img)
            axes[0].axis("off")
            axes[0].set_title(f"{c}, t = {t:.2f}")
            pca_panel(axes[1], pca, steer(cd.feats[set_name], W_t).numpy(), cd.labels[set_name][label_key],
                      cd.classes[names_key], i, "PCA of steered embeddings")
            fig.tight_layout()
            plt.show()

    for w in (slider, concept, example):
        w.observe(refresh, names="value")
    refresh()
    return W.VBox([W.HBox([concept, example]), slider, W.HBox([probs_out, metrics_out]), plot_out])


def static_sweep(cd: ConceptData, families: dict, ts, save_dir=None, index: int = 0) -> dict:
    """The headless version: per concept, the example's probabilities and the concept's metrics along t, and the
    PCA projection at each t (figures saved under ``save_dir``). Returns {concept: {t: probabilities}}."""
    import matplotlib.pyplot as plt

    out = {}
    for c, fam in families.items():
        set_name, _, label_key, names_key, keys = CONCEPT_VIEWS[c]
        probs = {float(t): probabilities(cd, c, index, fam.at(float(t))) for t in ts}
        pca = _projection(cd, c)
        fig, axes = plt.subplots(1, len(ts) + 1, figsize=(3.1 * (len(ts) + 1) + 1.2, 3.0))
        names = list(probs[float(ts[0])])
        top = sorted(names, key=lambda nm: -max(p[nm] for p in probs.values()))[:5]  # the classes that matter
        for name in top:
            axes[0].plot(list(probs), [p[name] for p in probs.values()], marker="o", ms=3, label=name)
        axes[0].set(title=f"{c}: image {index}", xlabel="t", ylabel="zero-shot probability", ylim=(0, 1))
        axes[0].legend(fontsize=6, title="class" if len(top) == len(names) else f"top {len(top)} classes",
                       title_fontsize=6)
        lab = cd.labels[set_name][label_key]
        for k, (ax, t) in enumerate(zip(axes[1:], ts)):
            pca_panel(ax, pca, steer(cd.feats[set_name], fam.at(float(t))).numpy(), lab, cd.classes[names_key],
                      index, f"PCA, t = {t:g}", legend=k == len(ts) - 1)
        fig.tight_layout()
        if save_dir is not None:
            viz._save(fig, os.path.join(save_dir, f"04_widget_sweep_{c.replace(' ', '_')}.png"))
        if not headless():
            plt.show()
        metrics = [evaluate(cd, fam.at(float(t))) for t in ts]
        out[c] = {"probabilities": probs, "metrics": [{"t": float(t), **{k: m[k] for k in keys}}
                                                      for t, m in zip(ts, metrics)]}
    return out


def demo_from_world(model: str = "tiny", n: int = 256, steps: int = 300, seed: int = 0, interactive: bool | None = None,
                    save_dir=None):
    """Everything the demo needs in one call: encode ``n`` images per set of the world's ``val`` split, train the
    written-text and gender maps (``steps`` each) and return ``steering_demo``."""
    from .models import load_model
    from .experiments.concepts import concept_data, train_concept_map
    from .steering.linear import LinearMapConfig
    from .world import World, WorldConfig

    lm = load_model(model)
    cd = concept_data(lm, World(WorldConfig(seed=seed)), n, "val")
    cfg = LinearMapConfig(steps=steps, seed=seed)
    fams = {"written text": train_concept_map(cd, "typographic", cfg)[0],
            "gender": train_concept_map(cd, "gender_reverse", cfg)[0]}
    return steering_demo(cd, fams, interactive=interactive, save_dir=save_dir)
