import time, numpy as np, torch, json, sys
torch.set_num_threads(1)
from clipwb.world import World
from clipwb.models import load_model
from clipwb.steering.experiments import concept_data, evaluate, train_concept_map, sweep_t, neutral_t
from clipwb.steering.linear import LinearMapConfig
lm = load_model("tiny"); w = World()
t0=time.time()
tr = concept_data(lm, w, 768, "val"); te = concept_data(lm, w, 768, "test")
print("data", time.time()-t0)
base = evaluate(te); print("base", {k: round(v,3) for k,v in base.items() if not isinstance(v, dict)})
cfgs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
for concept in ["gender_reverse", "typographic", "mitigation"]:
    cfg = LinearMapConfig(**cfgs.get(concept, {}))
    t=time.time(); fam, log = train_concept_map(tr, concept, cfg); 
    print(concept, "train s %.1f" % (time.time()-t), "last", {k: round(v,3) for k,v in log[-1].items()})
    for r in sweep_t(te, fam, [0, 0.25, 0.5, 0.75, 1, 1.25]):
        print("  ", {k: round(v,3) for k,v in r.items() if k in ("t","object_top1","typo_top1","attack_success","gender_top1","occupation_top1","faint_occupation_top1","occupation_gap","stereotype_error_rate","max_skew_at_k")})
