import time, numpy as np, torch, json, sys
torch.set_num_threads(1)
from clipwb.world import World
from clipwb.models import load_model
from clipwb.steering.experiments import concept_data, evaluate, train_concept_map, sweep_t, neutral_t
from clipwb.steering.linear import LinearMapConfig
lm = load_model("tiny"); w = World()
tr = concept_data(lm, w, 768, "val"); te = concept_data(lm, w, 768, "test")
for spec in sys.argv[1:]:
    concept, kw = json.loads(spec)
    fam, log = train_concept_map(tr, concept, LinearMapConfig(**kw))
    print(concept, kw, "reflects", fam.reflects, "last", {k: round(v,3) for k,v in log[-1].items()})
    for r in sweep_t(te, fam, [0, 0.5, 1, 1.5, 2, 2.5, 3]):
        print("  ", {k: round(v,3) for k,v in r.items() if k in ("t","object_top1","typo_top1","attack_success","gender_top1","occupation_top1","faint_occupation_top1","occupation_gap","stereotype_error_rate","max_skew_at_k")}, flush=True)
