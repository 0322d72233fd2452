"""Builds notebooks/04_concept_steering.ipynb (run from the repo root)."""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# 04 · Concept steering with a linear map and its strength t

A d x d map W on the image embeddings, trained with the preference objective (DPO against the identity), KL terms
that keep the other concepts' predictions, a near-orthogonality penalty and a pull toward the identity
(`clipwb.steering.linear`). From its SVD, `StrengthFamily` builds W_t = exp(t log Q) · V diag(1 + t(σ − 1)) Vᵀ
(Q = U Vᵀ the rotation part, σ the singular values, signed when W reflects a concept):

- t = 0 gives I and t = 1 gives W, exactly (the code returns them as such, so the anchors are bit-exact);
- t > 1 continues the rotation and the stretch, t < 0 undoes them;
- a concept that W *reverses* (σ = −1 on its direction) passes through σ = 0 at t = 1/2: projected out, the
  neutral point between the original and the reversed reading."""),
code('''profile = "full"
out_dir = "../reports"
model = "tiny"
seed = 0
n = None              # images per set (None: profile default)
ts = None             # the t sweep (None: profile default)
map_steps = None''', metadata={"tags": ["parameters"]}),
code('''import time
import pandas as pd

from clipwb import reports, viz
from clipwb.config import check_profile
from clipwb.models import load_model
from clipwb.steering.experiments import concept_data, evaluate, neutral_t, sweep_t, train_concept_map
from clipwb.steering.linear import LinearMapConfig
from clipwb.widgets import steering_demo
from clipwb.world import World, WorldConfig

NAME = "04_concept_steering"
check_profile(profile)
t0 = time.time()
P = {"quick": dict(n=96, steps=60, ts=[0, 0.5, 1, 1.5]), "full": dict(n=1536, steps=800, ts=[0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5])}[profile]
n, ts, map_steps = n or P["n"], ts or P["ts"], map_steps or P["steps"]
lm = load_model(model, progress=True)
world = World(WorldConfig(seed=seed))
train_cd = concept_data(lm, world, n, "val")
test_cd = concept_data(lm, world, n, "test")
cfg = LinearMapConfig(steps=map_steps, lr=0.02, lam=5.0, nu=0.1, seed=seed)'''),
md("## The gender map: original → neutral → reversed"),
code('''gender_fam, gender_log = train_concept_map(train_cd, "gender_reverse", cfg, progress=True)
gender_rows = sweep_t(test_cd, gender_fam, ts)
viz.sweep_plot(ts, gender_rows, "t", keys=("gender_top1", "occupation_top1", "object_top1", "occupation_gap"),
               save=reports.figure_path(out_dir, "04_gender_sweep"), title="gender map along t")
pd.DataFrame(gender_rows).round(3)'''),
md("## The typographic map: robustness against clean accuracy along t"),
code('''typo_fam, typo_log = train_concept_map(train_cd, "typographic", cfg, progress=True)
typo_rows = sweep_t(test_cd, typo_fam, ts)
viz.sweep_plot(ts, typo_rows, "t", keys=("object_top1", "typo_top1", "attack_success"),
               save=reports.figure_path(out_dir, "04_typo_sweep"), title="typographic map along t")
pd.DataFrame(typo_rows)[["t", "object_top1", "typo_top1", "attack_success"]].round(3)'''),
md("""## The demo

In JupyterLab this is a live widget (slider for t, concept, example image). Headless (the report run) it renders
the same views as a static sweep."""),
code('''demo = steering_demo(test_cd, {"written text": typo_fam, "gender": gender_fam},
                     save_dir=str(reports.figure_path(out_dir, "04_widget").parent))
demo if not isinstance(demo, dict) else None'''),
code('''t_neutral = neutral_t(gender_rows)
metrics = {"gender_sweep": [{k: r[k] for k in ("t", "gender_top1", "occupation_top1", "object_top1", "occupation_gap")} for r in gender_rows],
           "typo_sweep": [{"t": r["t"], "clean_top1": r["object_top1"], "typo_top1": r["typo_top1"]} for r in typo_rows],
           "gender_neutral_t": t_neutral, "gender_top1_t0": gender_rows[0]["gender_top1"],
           "gender_top1_neutral": min(r["gender_top1"] for r in gender_rows if r["t"] == t_neutral),
           "gender_top1_min": min(r["gender_top1"] for r in gender_rows),
           "model": model, "n": n, "profile": profile, "seed": seed, "notebook_seconds": time.time() - t0}
reports.write_metrics(out_dir, NAME, metrics)
{k: v for k, v in metrics.items() if not isinstance(v, list)}'''),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                               "language_info": {"name": "python"}})
nbf.write(nb, "notebooks/04_concept_steering.ipynb")
