import numpy as np, torch
torch.set_num_threads(1)
import clipwb; print(clipwb.__file__)
from clipwb.world import World, WorldConfig
from clipwb.models import load_model
from clipwb.evaluation.zeroshot import encode_images, zero_shot_logits, PORTRAIT_TEMPLATES
from clipwb.evaluation.bias import occupation_gap, per_group_accuracy, stereotype_error_rate
from clipwb.world.portraits import STEREOTYPE
lm = load_model("tiny")
print(lm.weights)
for alpha in [(1.0, 1.0), (0.3, 0.6), (0.15, 0.45), (0.05, 0.25)]:
    w = World(WorldConfig(faint_hat_alpha=alpha))
    b = w.generate(1200, "test", "portrait_faint")
    f = encode_images(lm.model, b.images)
    lo = zero_shot_logits(lm.model, lm.tokenizer, None, w.occupations, PORTRAIT_TEMPLATES, image_features=f)
    lg = zero_shot_logits(lm.model, lm.tokenizer, None, w.genders, PORTRAIT_TEMPLATES, image_features=f)
    yo = np.array(b.labels("occupation", w.occupations)); g = np.array([r["gender"] for r in b.records])
    po = lo.argmax(-1).numpy()
    st = {gg: {i for i, o in enumerate(w.occupations) if STEREOTYPE[o] == gg} for gg in w.genders}
    stereo = np.array([r["stereotypical"] for r in b.records])
    print(alpha, "occ", (po == yo).mean(), per_group_accuracy(po, yo, g), "gap", occupation_gap(po, yo, g),
          "stereo-err", stereotype_error_rate(po, yo, g, st), "acc stereo/anti", (po==yo)[stereo].mean(), (po==yo)[~stereo].mean(),
          "gender", (lg.argmax(-1).numpy() == np.array(b.labels("gender", w.genders))).mean())
