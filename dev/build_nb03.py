"""Builds notebooks/03_disentanglement.ipynb (run from the repo root)."""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# 03 · Disentangling gender and written text in CLIP embeddings

How do the tiny CLIP's image embeddings encode the object, the written word and the gender of a portrait, and
what do preference-trained linear maps change? Embedding views (PCA, LDA; t-SNE optional), concept directions
from text prompts and the cosine of the embedding shifts with them, linear-probe accuracy per concept before and
after, and gender-bias metrics before and after mitigation.

**Bias data and metrics.** World portraits have a binary gender cue and an occupation hat; in `train` the
occupation follows a synthetic stereotype 80 % of the time. With clear hats the model reads the occupation
(0.996), so bias is measured on *faint-hat* portraits (hat blended in at 30-60 % opacity), where the model must
partly guess. Metrics (`clipwb.evaluation.bias`): the TPR gap of De-Arteaga et al. (per occupation, the recall
difference between genders, averaged), the stereotype-error rate (mispredictions that land on an occupation
stereotyped for the depicted gender), and MaxSkew@k (Geyik et al.) of gender among the top-k images retrieved for
neutral occupation prompts ("a photo of a nurse.")."""),
code('''profile = "full"
out_dir = "../reports"
model = "tiny"
seed = 0
n = None
map_steps = None
tsne = False''', metadata={"tags": ["parameters"]}),
code('''import time
import numpy as np
import pandas as pd

from clipwb import reports, viz
from clipwb.config import check_profile
from clipwb.models import load_model
from clipwb.steering.experiments import (concept_data, concept_directions, evaluate, linear_probes, shift_cosines,
                                         train_concept_map)
from clipwb.steering.linear import LinearMapConfig
from clipwb.world import World, WorldConfig

NAME = "03_disentanglement"
check_profile(profile)
t0 = time.time()
P = {"quick": dict(n=96, steps=60), "full": dict(n=1536, steps=800)}[profile]
n, map_steps = n or P["n"], map_steps or P["steps"]
fig = lambda name: reports.figure_path(out_dir, f"03_{name}")
lm = load_model(model, progress=True)
world = World(WorldConfig(seed=seed))
train_cd, test_cd = concept_data(lm, world, n, "val"), concept_data(lm, world, n, "test")
cfg = LinearMapConfig(steps=map_steps, lr=0.02, lam=5.0, nu=0.1, seed=seed)
maps = {c: train_concept_map(train_cd, c, cfg, progress=True)[0] for c in ("typographic", "gender_reverse", "mitigation")}'''),
md("## Embedding views: before and after the maps (t = 1)"),
code('''from clipwb.steering.linear import steer
names = {"gender": dict(enumerate(world.genders)), "occupation": dict(enumerate(world.occupations))}
P_ = test_cd.feats["portraits"]
viz.embedding_views({"original": P_.numpy(), "gender map": steer(P_, maps["gender_reverse"].at(1.0)).numpy()},
                    {"gender": test_cd.labels["portraits"]["gender"], "occupation": test_cd.labels["portraits"]["occupation"]},
                    method="pca", names=names, save=fig("views_portraits_pca"));
T_ = test_cd.feats["typo"]
viz.embedding_views({"original": T_.numpy(), "typographic map": steer(T_, maps["typographic"].at(1.0)).numpy()},
                    {"true class": test_cd.labels["typo"]["class"], "written word": test_cd.labels["typo"]["written"]},
                    method="lda", fit_labels=test_cd.labels["typo"]["written"], save=fig("views_typo_lda"));
if tsne:
    viz.embedding_views({"original": P_.numpy()}, {"gender": test_cd.labels["portraits"]["gender"]}, method="tsne",
                        save=fig("views_portraits_tsne"));'''),
md("""## Concept directions and embedding shifts

The gender direction from text is T("man") − T("woman") (class embeddings over portrait templates). If the gender
map acts on gender, the shift of each portrait's embedding should be aligned with it (|cos| well above the
≈ 1/√d of random directions)."""),
code('''dirs = concept_directions(test_cd)
cos = {name: shift_cosines(test_cd, maps[name].at(1.0), "portraits", dirs["gender"]) for name in maps}
pd.DataFrame({name: {"mean |cos| with gender direction": float(np.abs(c).mean())} for name, c in cos.items()}).T.round(3)'''),
md("## Linear probes (disentanglement measure)"),
code('''probes = {"original": linear_probes(test_cd, None, seed)}
for name, fam in maps.items():
    probes[name] = linear_probes(test_cd, fam.at(1.0), seed)
pd.DataFrame(probes).T.round(3)'''),
md("## Gender bias before and after mitigation"),
code('''bias_keys = ("faint_occupation_top1", "occupation_gap", "stereotype_error_rate", "max_skew_at_k", "occupation_top1", "object_top1")
before, after = evaluate(test_cd), evaluate(test_cd, maps["mitigation"].at(1.0))
bias = {"before": {k: before[k] for k in bias_keys}, "after": {k: after[k] for k in bias_keys}}
viz.grouped_bars({k: {"before": before[k], "after": after[k]} for k in bias_keys}, title="mitigation map (t = 1)",
                 ylabel="", save=fig("bias"))
pd.DataFrame(bias).round(3)'''),
code('''metrics = {"probes": probes, "bias": bias, "shift_cos_gender": {k: float(np.abs(c).mean()) for k, c in cos.items()},
           "occupation_gap_before": before["occupation_gap"], "occupation_gap_after": after["occupation_gap"],
           "probe_gender_before": probes["original"]["gender"], "probe_gender_after": probes["gender_reverse"]["gender"],
           "model": model, "n": n, "profile": profile, "seed": seed, "notebook_seconds": time.time() - t0}
reports.write_metrics(out_dir, NAME, metrics)
{k: v for k, v in metrics.items() if not isinstance(v, dict)}'''),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                               "language_info": {"name": "python"}})
nbf.write(nb, "notebooks/03_disentanglement.ipynb")
