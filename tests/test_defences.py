"""The defences of notebook 07: PAINT interpolation, Defense-Prefix, the forget-to-spell projection, attention-head
ablation, the selection rule and the side-by-side driver."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from clipwb.defences import heads as H
from clipwb.defences.interpolation import interpolate, select_strength
from clipwb.defences.prefix import (PrefixConfig, prefix_text_features, prefixed_prompts, token_embedding,
                                    train_prefix)
from clipwb.defences.projection import ProjectionConfig, train_projection
from clipwb.evaluation.classifier import model_classifier
from clipwb.evaluation.typographic import classifier_eval, po_eval
from clipwb.evaluation.zeroshot import class_text_features
from clipwb.models.inputs import encode_images
from clipwb.world import World

CLASSES = World().classes


@pytest.fixture(scope="module")
def pairs(tiny):
    w = World()
    b = w.generate(64, "val", "typographic")
    clean = w.generate(64, "val", "object")  # the same objects without the word: index-aligned with b
    return {"typo": b.images, "clean": clean.images, "true": np.array(b.labels("class_name", w.classes)),
            "written": np.array(b.labels("text", w.classes))}


def _perturbed(model, seed=1, eps=0.05):
    import copy

    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.visual.parameters():
            p.add_(eps * torch.randn(p.shape, generator=g))
    return m


def test_interpolation_ends_are_the_two_models_and_the_middle_is_paints_formula(tiny):
    ft = _perturbed(tiny.model)
    for a, want in ((0.0, tiny.model), (1.0, ft)):
        got = interpolate(tiny.model, ft, a).state_dict()
        assert all(torch.equal(got[k], v) for k, v in want.state_dict().items())
    mid = interpolate(tiny.model, ft, 0.3).state_dict()
    sd0, sd1 = tiny.model.state_dict(), ft.state_dict()
    # PAINT's patching code: theta = {key: (1 - alpha) * theta_0[key] + alpha * theta_1[key]}
    for k in sd0:
        if sd0[k].is_floating_point():
            assert torch.allclose(mid[k], (1 - 0.3) * sd0[k] + 0.3 * sd1[k], atol=1e-6), k
    assert torch.equal(tiny.model.state_dict()["logit_scale"], sd0["logit_scale"])  # inputs untouched


def test_interpolation_refuses_other_architectures_and_alphas(tiny):
    import open_clip

    other = open_clip.create_model("RN50", pretrained=None)
    with pytest.raises(ValueError, match="same architecture"):
        interpolate(tiny.model, other, 0.5)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        interpolate(tiny.model, tiny.model, 1.5)


def test_selection_keeps_the_clean_floor_and_prefers_small_strengths():
    rows = [{"alpha": 0.0, "clean_top1": 0.90, "typo_top1": 0.40}, {"alpha": 0.5, "clean_top1": 0.895, "typo_top1": 0.6},
            {"alpha": 0.75, "clean_top1": 0.895, "typo_top1": 0.6}, {"alpha": 1.0, "clean_top1": 0.8, "typo_top1": 0.8}]
    assert select_strength(rows, 0.89)["alpha"] == 0.5  # 1.0 breaks the floor; 0.5 wins the tie with 0.75
    assert select_strength(rows, 0.95)["alpha"] == 0.0  # nothing keeps the floor: the smallest strength
    assert select_strength([{"t": 1, "clean_top1": 1, "typo_top1": 1}], 0, key="t")["t"] == 1


def test_prefix_injection_is_exact_and_differentiable(tiny):
    emb = token_embedding(tiny.model)
    star = emb.weight[int(tiny.tokenizer(["*"])[0][1])].detach()
    templates = ("a photo of a {}.",)
    with torch.no_grad():
        plain = class_text_features(tiny.model, tiny.tokenizer, [f"* {c}" for c in CLASSES[:3]], templates)
        injected = prefix_text_features(tiny.model, tiny.tokenizer, CLASSES[:3], star, templates)
    assert torch.allclose(plain, injected, atol=1e-6)  # the placeholder's own embedding: the plain prompt
    v = star.clone().requires_grad_(True)
    prefix_text_features(tiny.model, tiny.tokenizer, CLASSES[:3], v, templates).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert prefixed_prompts(["cat"], ("a {}.",)) == ["a * cat."]


def test_defense_prefix_learns_on_frozen_towers(tiny, pairs):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    flags = [p.requires_grad for p in tiny.model.parameters()]
    fc, ft = encode_images(tiny.model, pairs["clean"]), encode_images(tiny.model, pairs["typo"])
    res = train_prefix(tiny.model, tiny.tokenizer, CLASSES, fc, ft, pairs["true"],
                       PrefixConfig(lr=0.1, batch_size=16, epochs=6, seed=0))
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in before.items())  # both towers frozen
    assert [p.requires_grad for p in tiny.model.parameters()] == flags
    first, last = res.log[0], res.log[-1]
    assert len(res.log) == 6 * 4 and last["defence"] < first["defence"]
    assert res.vector.shape == (token_embedding(tiny.model).weight.shape[1],)
    # on its training images the [DP] prompts read the attacked images better than the plain prompts
    clf = res.classifier(tiny.model, tiny.tokenizer, CLASSES)
    base = model_classifier(tiny.model, tiny.tokenizer, CLASSES)
    acc = lambda c: float((c.cosines(pairs["typo"]).argmax(-1).numpy() == pairs["true"]).mean())  # noqa: E731
    assert acc(clf) > acc(base)
    with pytest.raises(ValueError, match="as many clean and attacked"):
        train_prefix(tiny.model, tiny.tokenizer, CLASSES, fc[:3], ft, pairs["true"])


def test_prefix_needs_a_token_embedding():
    with pytest.raises(TypeError, match="token embedding"):
        token_embedding(torch.nn.Linear(2, 2))


def test_projection_learns_and_stays_near_orthogonal(tiny, pairs):
    fc, ft = encode_images(tiny.model, pairs["clean"]), encode_images(tiny.model, pairs["typo"])
    text = class_text_features(tiny.model, tiny.tokenizer, CLASSES)
    res = train_projection(fc, ft, pairs["true"], text, float(tiny.model.logit_scale.detach().exp()),
                           ProjectionConfig(batch_size=16, epochs=8, lr=1e-2))
    assert res.W.shape == (fc.shape[1], fc.shape[1] // 2)
    assert res.log[-1]["ce"] < res.log[0]["ce"]
    assert res.log[-1]["ortho"] < 0.5
    clf = res.classifier(model_classifier(tiny.model, tiny.tokenizer, CLASSES))
    assert clf.text.shape == (len(CLASSES), fc.shape[1] // 2)
    assert torch.allclose(clf.text.norm(dim=-1), torch.ones(len(CLASSES)))


def test_heads_of_the_tiny_conv_tower_are_its_pooling_heads(tiny):
    heads = H.attention_heads(tiny.model)
    pool = tiny.model.visual.attnpool
    assert len(heads) == pool.num_heads and {h.module for h in heads} == {"attnpool"}
    ab = H.ablate(tiny.model, heads[:2])
    w, w0 = ab.visual.attnpool.c_proj.weight, pool.c_proj.weight
    d = heads[0].head_dim
    assert (w[:, :2 * d] == 0).all() and torch.equal(w[:, 2 * d:], w0[:, 2 * d:])
    assert (w0[:, :2 * d] != 0).any()  # the input model is untouched


def _random_vit(tmp_path):
    """A randomly initialised small open_clip ViT, written to a local dir in open_clip's format and loaded back."""
    import open_clip

    from clipwb.models import load_model
    from clipwb.models.loading import save_model

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
           "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    model = open_clip.CLIP(**cfg)
    save_model(model, tmp_path / "vit", "clipwb-test-vit", model_cfg=cfg)
    return load_model(f"local-dir:{tmp_path / 'vit'}", "cpu")


def test_head_ablation_on_a_random_vit_from_a_local_dir(tmp_path):
    lm = _random_vit(tmp_path)
    heads = H.attention_heads(lm.model)
    blocks = lm.model.visual.transformer.resblocks
    assert len(heads) == sum(b.attn.num_heads for b in blocks) == 2 * blocks[0].attn.num_heads
    w = World(image_size=32)
    b = w.generate(24, "val", "typographic")
    c = w.generate(24, "val", "object")
    text = class_text_features(lm.model, lm.tokenizer, w.classes)
    res = H.greedy_ablation(lm.model, text, b.images, b.labels("class_name", w.classes), b.labels("text", w.classes),
                            c.images, c.labels("class_name", w.classes), tolerance=0.05)
    assert set(res.scores) == {h.name for h in heads}
    base = res.log[0]["clean_top1"]
    assert all(r["clean_top1"] >= base - 0.05 for r in res.log if "added" in r)  # the tolerance held
    assert [r["added"] for r in res.log if "added" in r] == [h.name for h in res.heads]
    if res.heads:  # the chosen heads are the top-scoring ones, in order
        order = sorted(res.scores, key=lambda n: -res.scores[n])
        assert [h.name for h in res.heads] == order[:len(res.heads)]


def test_greedy_ablation_stops_at_or_skips_a_rejected_head(tmp_path):
    lm = _random_vit(tmp_path)
    w = World(image_size=32)
    b, c = w.generate(16, "val", "typographic"), w.generate(16, "val", "object")
    text = class_text_features(lm.model, lm.tokenizer, w.classes)
    args = (lm.model, text, b.images, b.labels("class_name", w.classes), b.labels("text", w.classes), c.images,
            c.labels("class_name", w.classes))
    names = [h.name for h in H.attention_heads(lm.model)]
    scores = {n: float(i + 1) for i, n in enumerate(names)}  # every head positive, the last one first
    # a tolerance no ablation can keep (clean top-1 would have to rise by 2): every head is rejected
    stop = H.greedy_ablation(*args, tolerance=-2.0, scores=scores)
    skip = H.greedy_ablation(*args, tolerance=-2.0, scores=scores, skip_rejected=True)
    assert stop.heads == [] and [r["rejected"] for r in stop.log[1:]] == [names[-1]]
    assert skip.heads == [] and [r["rejected"] for r in skip.log[1:]] == names[::-1]  # tried all, in score order
    # a tolerance every ablation keeps: all heads, in score order, either way
    keep = H.greedy_ablation(*args, tolerance=2.0, scores=scores, skip_rejected=True)
    assert [h.name for h in keep.heads] == names[::-1] and keep.scores is scores


def test_greedy_ablation_keeps_only_heads_that_raise_typographic_top1(tmp_path):
    """Dyslexify's keep rule: a head is kept only if typographic top-1 on the checking images rises by min_gain;
    after more than ``patience`` heads in a row that do not, the search ends."""
    lm = _random_vit(tmp_path)
    w = World(image_size=32)
    b, c = w.generate(16, "val", "typographic"), w.generate(16, "val", "object")
    text = class_text_features(lm.model, lm.tokenizer, w.classes)
    y = c.labels("class_name", w.classes)
    args = (lm.model, text, b.images, b.labels("class_name", w.classes), b.labels("text", w.classes), c.images, y)
    names = [h.name for h in H.attention_heads(lm.model)]
    scores = {n: float(i + 1) for i, n in enumerate(names)}
    with pytest.raises(ValueError, match="typo_val"):
        H.greedy_ablation(*args, scores=scores, min_gain=0.001)
    # no head can raise top-1 by 2: none kept, and the search ends after patience + 1 misses
    none = H.greedy_ablation(*args, tolerance=2.0, scores=scores, typo_val=b.images, min_gain=2.0, patience=2)
    assert none.heads == [] and [r["no_gain"] for r in none.log[1:]] == names[::-1][:3]
    # any change counts as a gain (min_gain -2): every head kept in score order, each row's typo top-1 measured
    every = H.greedy_ablation(*args, tolerance=2.0, scores=scores, typo_val=b.images, min_gain=-2.0)
    assert [h.name for h in every.heads] == names[::-1]
    byname = {h.name: h for h in H.attention_heads(lm.model)}
    last = every.log[-1]
    assert last["typo_top1"] == H._clean_top1(H.ablate(lm.model, [byname[n] for n in names[::-1]]), text,
                                                b.images, y)
    assert every.log[0]["typo_top1"] == H._clean_top1(lm.model, text, b.images, y)


def test_head_effects_measures_each_head_alone(tmp_path):
    lm = _random_vit(tmp_path)
    w = World(image_size=32)
    b, c = w.generate(16, "val", "typographic"), w.generate(16, "val", "object")
    text = class_text_features(lm.model, lm.tokenizer, w.classes)
    y = b.labels("class_name", w.classes)
    heads = H.attention_heads(lm.model)
    rows = H.head_effects(lm.model, text, [heads[0].name, heads[1].name], c.images, b.images, y)
    base = H._clean_top1(lm.model, text, c.images, y)
    assert [r["head"] for r in rows] == [heads[0].name, heads[1].name]
    assert all(r["clean_top1"] + r["clean_cost"] == pytest.approx(base) for r in rows)
    m = H.ablate(lm.model, [heads[1]])
    assert rows[1]["clean_top1"] == H._clean_top1(m, text, c.images, y)
    assert rows[1]["typo_gain"] == pytest.approx(H._clean_top1(m, text, b.images, y) - H._clean_top1(lm.model, text, b.images, y))
    with pytest.raises(ValueError, match="no attention heads named"):
        H.head_effects(lm.model, text, ["nope#0"], c.images, b.images, y)


def test_classifier_eval_of_a_model_is_po_eval(tiny, pairs):
    sets = {"test": {k: pairs[k] for k in ("clean", "typo", "true", "written")}}
    clf = model_classifier(tiny.model, tiny.tokenizer, CLASSES)
    assert classifier_eval(clf, sets, clf) == po_eval(tiny.model, tiny.tokenizer, CLASSES, sets, tiny.model)
    assert classifier_eval(clf, sets, clf)["kl_drift"] == 0.0


def test_an_evaluation_against_a_memoised_reference_encodes_each_array_once(tiny, pairs):
    """po_eval against ``memo_classifier`` (what RunContext passes) gives the numbers of po_eval against the model,
    and the evaluated model's clean images go through its tower once (top-1 and KL drift share the features), the
    reference's once for any number of evaluations."""
    import copy

    from clipwb.evaluation.classifier import memo_classifier

    sets = {"test": {k: pairs[k] for k in ("clean", "typo", "true", "written")}}
    other = copy.deepcopy(tiny.model)
    with torch.no_grad():
        other.visual.attnpool.c_proj.weight.mul_(1.1)  # a different model: a nonzero KL drift
    ref = memo_classifier(tiny.model, tiny.tokenizer, CLASSES)
    calls = []
    ref_encode = ref.encode
    ref.encode = lambda x: calls.append(("ref", id(x))) or ref_encode(x)
    plain = po_eval(other, tiny.tokenizer, CLASSES, sets, tiny.model)
    assert plain["kl_drift"] > 0
    assert po_eval(other, tiny.tokenizer, CLASSES, sets, ref) == plain
    assert po_eval(other, tiny.tokenizer, CLASSES, sets, ref) == plain
    assert len(calls) == 2 and len(ref_encode._memo) == 1  # asked twice, encoded once
    seen = []
    clf = model_classifier(other, tiny.tokenizer, CLASSES)
    enc = clf.encode
    clf.encode = lambda x: seen.append(id(x)) or enc(x)
    classifier_eval(clf, sets, ref)
    assert seen.count(id(sets["test"]["clean"])) == 1 and len(seen) == 2  # clean once, typographic once


@pytest.fixture(scope="module")
def quick_sets(tiny, tmp_path_factory):
    from clipwb.data.sets import AttackSetsConfig, attack_arrays

    classes, sets, _ = attack_arrays("world", world=World(), n_train=32, n_test=16,
                                     cfg=AttackSetsConfig(k=2, seed=0), root=tmp_path_factory.mktemp("sets"))
    return classes, sets


@pytest.mark.slow
def test_every_defence_side_by_side_and_cached(tiny, quick_sets, monkeypatch):
    from clipwb.experiments import defences as D

    classes, sets = quick_sets
    kw = dict(alphas=(0.5,), ts=(1.0,), select_n=32, progress=False)
    runs = D.compare_defences(tiny, classes, sets, "embedded", {"batch_size": 16, "epochs": 1}, **kw)
    table = runs.table()
    assert list(table) == list(D.defence_names())
    for d, r in table.items():
        assert set(r) == set(D.KEYS) and all(v is not None for v in r.values()), d
        assert 0 <= r["clean_top1"] <= 1 and r["kl_drift"] >= -1e-9 and r["train_seconds"] >= 0
    zs = table["zero_shot"]
    assert zs["reading_recovery"] == 0.0 and zs["presence_recovery"] == 0.0 and zs["kl_drift"] == 0.0
    assert zs["trainable_params"] == 0
    assert table["defense_prefix"]["trainable_params"] == token_embedding(tiny.model).weight.shape[1]
    assert table["head_ablation"]["trainable_params"] == 0
    assert runs.details["paint_ce"]["alpha"] in (0.0, 0.5, 1.0)
    assert [r["alpha"] for r in runs.curves["paint_ce"]] == [0.0, 0.5, 1.0]
    assert runs.curves["paint_ce"][0]["typo_top1"] == zs["typo_top1"]  # alpha 0 is the zero-shot model
    assert runs.curves["paint_ce"][-1]["typo_top1"] == table["ce"]["typo_top1"]  # alpha 1 is the fine-tune
    json.dumps(runs.results), json.dumps(runs.curves), json.dumps(runs.details)
    # the selection rule's floor travels with the runs: the zero-shot model's clean top-1 there, minus the tolerance
    assert runs.selection["n"] == 32 and runs.selection["split"] == ("val" if "val" in sets else "train")
    assert runs.selection["floor"] == pytest.approx(runs.curves["paint_ce"][0]["select_clean_top1"] - 0.01)
    verdict = D.verdict_rows(runs)  # one training seed: no spread over seeds to judge the choice's edge by
    assert verdict["selection_edges"]["paint_ce"]["near_edge"] is None
    assert all(r["selection_near_edge"] is None for r in verdict["rows"] if r["b"] in ("paint_ce", "steering"))
    json.dumps(verdict)
    # a second call reads every defence from the run cache: nothing trains
    for name in ("train_prefix", "train_projection", "train_linear_map", "greedy_ablation"):
        monkeypatch.setattr(D, name, lambda *a, **k: pytest.fail("retrained a cached defence"))
    import clipwb.experiments.context as C

    monkeypatch.setattr(C, "train_po", lambda *a, **k: pytest.fail("retrained a cached PO run"))
    again = D.compare_defences(tiny, classes, sets, "embedded", {"batch_size": 16, "epochs": 1}, **kw)
    assert again.table() == table
    with pytest.raises(ValueError, match="unknown defences"):
        D.compare_defences(tiny, classes, sets, only=("zero_shot", "magic"))


def test_the_validation_split_is_disjoint_and_chooses_strengths_whatever_the_test_images(tiny, tmp_path):
    from clipwb.data.builders import export_image_folder, read_manifest
    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.experiments import defences as D

    world = World()
    classes, sets, builds = attack_arrays("world", world=world, n_train=24, n_test=12, n_val=16,
                                          cfg=AttackSetsConfig(k=1, seed=0), root=tmp_path / "sets", progress=False)
    ids = {n: {r["source"] for r in read_manifest(b.out_dir)} for n, b in builds.items()}
    assert ids["val"] and not ids["val"] & ids["train"] and not ids["val"] & ids["test"]
    assert len(sets["val"]["typo"]) == 16 and "control" in sets["val"]
    # an image folder: validation sources are carved from the training ones and leave them
    imgs = world.generate(40, "train", "object")
    root = export_image_folder(imgs.images, imgs.labels("class_name", world.classes), world.classes, tmp_path / "f")
    _, fsets, fbuilds = attack_arrays(str(root), n_val=6, cfg=AttackSetsConfig(k=1, seed=0, word_frac=0.4),
                                      root=tmp_path / "fsets", progress=False)
    fids = {n: {r["source"] for r in read_manifest(b.out_dir)} for n, b in fbuilds.items()}
    assert len(fids["val"]) == 6 and not fids["val"] & fids["train"] and not fids["val"] & fids["test"]
    # the steering strength is chosen on val: other test images change the test metrics, never the choice
    kw = dict(only=("zero_shot", "steering"), ts=(1.0, 2.0), select_n=16, progress=False)
    a = D.compare_defences(tiny, classes, sets, "embedded", {"batch_size": 8, "epochs": 1}, **kw)
    other = {**sets, "test": {k: v[::-1][:8] if hasattr(v, "__len__") and len(v) == len(sets["test"]["true"])
                              else v for k, v in sets["test"].items()}}
    b = D.compare_defences(tiny, classes, other, "embedded", {"batch_size": 8, "epochs": 1}, **kw)
    assert a.details["steering"]["selected_on"] == "val"
    assert a.details["steering"]["t"] == b.details["steering"]["t"]
    sel = lambda runs: [(r["t"], r["select_clean_top1"], r["select_typo_top1"]) for r in runs.curves["steering"]]  # noqa: E731
    assert sel(a) == sel(b)
    assert a.results["zero_shot"]["typo_top1_ci"] != b.results["zero_shot"]["typo_top1_ci"]


def test_ablation_diagnosis_explains_the_search_on_the_shipped_vit(quick_sets, tmp_path, monkeypatch):
    from clipwb.experiments import defences as D
    from clipwb.models import load_model

    monkeypatch.setenv("CLIPWB_CACHE", str(tmp_path / "cache"))
    classes, sets = quick_sets
    lm = load_model("tiny-vit")
    names = [h.name for h in H.attention_heads(lm.model)]
    scores = {n: (len(names) - i) / 100 for i, n in enumerate(names)}  # the first head highest
    kw = dict(select_n=32, clean_tolerance=0.05, n_heads=4)
    d = D.ablation_diagnosis(lm, classes, sets, scores, **kw)
    assert [r["head"] for r in d["effects"]] == names[:4] and d["effects"][0]["score"] == scores[names[0]]
    base = d["skip"]["log"][0]["clean_top1"]
    assert all(r["clean_top1"] >= base - 0.05 for r in d["skip"]["log"] if "added" in r)
    assert d["skip"]["heads"] == [r["added"] for r in d["skip"]["log"] if "added" in r]
    v = {r["metric"]: r for r in d["skip"]["verdicts"]}
    assert set(v) == {"clean_top1", "typo_top1"}
    assert v["typo_top1"]["diff_pts"] == pytest.approx(100 * (d["skip"]["metrics"]["typo_top1"] -
                                                             D.DefenceContext(lm, classes, sets).reference["typo_top1"]), abs=0.051)
    assert D.ablation_diagnosis(lm, classes, sets, scores, **kw) == d  # cached


def test_paint_at_alpha_one_reuses_the_po_runs_own_evaluation_exactly(tiny, quick_sets, tmp_path, monkeypatch):
    from clipwb.experiments import defences as D

    monkeypatch.setenv("CLIPWB_CACHE", str(tmp_path / "cache"))
    classes, sets = quick_sets
    ctx = D.DefenceContext(tiny, classes, sets, "embedded", {"batch_size": 16, "epochs": 1},
                           setting=D.DefenceSetting(alphas=(0.5,), select_n=32), progress=False)
    ctx.po_run("dpo")  # trained (and evaluated) first
    calls, evaluate = [], ctx.evaluate
    monkeypatch.setattr(ctx, "evaluate", lambda clf, **kw: calls.append(clf) or evaluate(clf, **kw))
    fit = D.Paint("dpo").fit(ctx)
    # 0 is the zero-shot reference, 1 the run's own evaluation; 0.5 is evaluated on the test sets only if chosen
    assert len(calls) == (fit.details["alpha"] == 0.5)
    row = next(r for r in fit.curve if r["alpha"] == 1.0)
    fresh, _ = ctx.evaluate(model_classifier(ctx.po_weights("dpo"), tiny.tokenizer, ctx.classes, ctx.templates),
                            return_correct=True)
    assert {k: v for k, v in row.items() if k not in ("alpha", "train")} == fresh


def test_strength_rows_evaluates_only_the_chosen_strength_on_test_and_chooses_the_same(tiny, quick_sets, tmp_path,
                                                                                         monkeypatch):
    """test_all=False (PAINT's curve): the same selection scores and the same choice as evaluating every strength,
    the chosen row's test metrics and correctness equal, no test evaluation of a strength not chosen, and no
    classifier built twice."""
    from clipwb.defences.interpolation import interpolate
    from clipwb.experiments import defences as D

    monkeypatch.setenv("CLIPWB_CACHE", str(tmp_path / "cache"))
    classes, sets = quick_sets
    ctx = D.DefenceContext(tiny, classes, sets, "embedded", {"batch_size": 16, "epochs": 1},
                           setting=D.DefenceSetting(select_n=32), progress=False)
    ft = ctx.po_weights("dpo")
    at = lambda a: None if a == 0 else model_classifier(interpolate(tiny.model, ft, a), tiny.tokenizer,  # noqa: E731
                                                        ctx.classes, ctx.templates)
    alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
    full, i_full, c_full = D._strength_rows(ctx, "alpha", alphas, at)
    calls, evaluate = [], ctx.evaluate
    monkeypatch.setattr(ctx, "evaluate", lambda clf, **kw: calls.append(clf) or evaluate(clf, **kw))
    built = []  # each strength's classifier is built once, the chosen one too
    cut, i_cut, c_cut = D._strength_rows(ctx, "alpha", alphas, lambda a: built.append(a) or at(a), test_all=False)
    assert built == list(alphas)
    assert i_cut == i_full and [r["train"] for r in cut] == [r["train"] for r in full]
    assert cut[i_cut] == full[i_full] and set(c_cut) == set(c_full)
    assert all(np.array_equal(c_cut[k], c_full[k]) for k in c_full)
    assert len(calls) == (cut[i_cut]["alpha"] != 0.0)
    assert all("clean_top1" not in r for j, r in enumerate(cut) if j not in (0, i_cut))
    assert cut[0]["typo_top1"] == ctx.reference["typo_top1"]
    rows = [D._curve_row(r, ctx.reference) for r in cut]
    assert all("select_typo_top1" in r for r in rows) and ("reading_recovery" in rows[i_cut])
    mean = D._mean_curve([rows, rows])
    assert mean[0]["typo_top1"] == rows[0]["typo_top1"] and [r["alpha"] for r in mean] == list(alphas)


def test_pareto_draws_a_curve_through_its_tested_strengths_only_and_says_so(tmp_path):
    """A curve whose strengths in between were not evaluated on test (PAINT's) is drawn through the tested ones,
    dotted and labelled; a fully tested one (steering's) solid; the PNG is written."""
    from clipwb import viz

    res = {"zero_shot": {"clean_top1": 0.9, "typo_top1": 0.4}, "ce": {"clean_top1": 0.88, "typo_top1": 0.8}}
    curves = {"paint_ce": [{"alpha": 0.0, "clean_top1": 0.9, "typo_top1": 0.4}, {"alpha": 0.5, "select_typo_top1": 0.7},
                           {"alpha": 1.0, "clean_top1": 0.88, "typo_top1": 0.8}],
              "steering": [{"t": 0.0, "clean_top1": 0.9, "typo_top1": 0.4}, {"t": 1.0, "clean_top1": 0.89,
                                                                             "typo_top1": 0.5}]}
    fig = viz.defence_pareto(res, curves, save=tmp_path / "p.png")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    paint = lines["paint_ce curve (tested strengths only)"]
    assert list(paint.get_xdata()) == [0.9, 0.88] and paint.get_linestyle() == ":"
    assert lines["steering curve"].get_linestyle() == "-" and len(lines["steering curve"].get_xdata()) == 2
    assert (tmp_path / "p.png").stat().st_size > 0


def test_po_run_keys_carry_the_precision_the_trainer_resolves(tiny, quick_sets, tmp_path, monkeypatch):
    """precision="auto" is a per-machine, per-model choice: a PO run (and PAINT, which starts from its weights) is
    cached under what it resolved to, so a run trained in bf16 is never read back for one that would train in fp32
    (CLIPWB_PRECISION stands in for another machine's choice); an explicit precision keys the same as its
    resolution."""
    from clipwb.experiments import defences as D
    from clipwb.precision import resolve_precision

    monkeypatch.setenv("CLIPWB_CACHE", str(tmp_path / "cache"))
    classes, sets = quick_sets
    ctx = D.DefenceContext(tiny, classes, sets, "embedded", {"batch_size": 16, "epochs": 1},
                           setting=D.DefenceSetting(alphas=(0.5,), select_n=32), progress=False)
    cfg = ctx.method_config("dpo")
    assert cfg.precision == "auto"
    keys, paint = {}, {}
    for p in ("fp32", "bf16"):
        monkeypatch.setenv("CLIPWB_PRECISION", p)
        assert resolve_precision(cfg.precision, cfg.device, model=tiny.model).name == p
        keys[p], paint[p] = ctx.keys.run(cfg), D.Paint("dpo").key(ctx)
        assert keys[p][1] == {"precision": p, "channels_last": p == "bf16"}
        assert ctx.keys.config(cfg) == keys[p][:2] and paint[p][:2] == keys[p][:2]
    assert keys["fp32"] != keys["bf16"] and paint["fp32"] != paint["bf16"]
    assert keys["fp32"][2:] == keys["bf16"][2:] == ctx.keys.base  # the same model and data either way
    monkeypatch.delenv("CLIPWB_PRECISION")
    explicit = ctx.keys.config(dataclasses.replace(cfg, precision="fp32"))
    assert explicit[1] == keys["fp32"][1] and explicit[0]["precision"] == "fp32"


def test_a_choice_at_the_edge_of_the_clean_tolerance_marks_its_verdicts():
    """selection_edges: a strength within 2 seed-stds of the clean floor that was chosen, or that would have won had
    it kept the floor, marks the choice (and notebook 07's verdict rows against it) as at the edge; a choice whose
    strengths all sit far from the floor, or the zero-shot end, does not. The seeds' curves are averaged with the
    selection scores' spread (_mean_curve)."""
    from clipwb.experiments import defences as D

    def curve(cleans, typos):
        return [{"alpha": a, "select_clean_top1": c, "select_typo_top1": t}
                for a, c, t in zip((0.0, 0.5, 1.0), cleans, typos)]

    # three seeds: alpha 0.5 keeps the floor (0.89) by 0.4 points with a 0.3-point spread; alpha 1.0 misses it
    seeds = [curve((0.90, 0.893, 0.880), (0.40, 0.70, 0.80)), curve((0.90, 0.897, 0.882), (0.40, 0.71, 0.80)),
             curve((0.90, 0.892, 0.884), (0.40, 0.69, 0.81))]
    mean = D._mean_curve(seeds)
    assert mean[1]["select_clean_top1"] == pytest.approx(0.894)
    assert mean[1]["select_clean_top1_std"] == pytest.approx(np.std([0.893, 0.897, 0.892], ddof=1))
    assert mean[0]["select_clean_top1_std"] == 0.0
    runs = D.DefenceRuns(curves={"paint_ce": mean}, details={"paint_ce": {"alpha": [0.5, 0.5, 0.5]}},
                         selection={"split": "val", "n": 1024, "floor": 0.89})
    edge = D.selection_edges(runs)["paint_ce"]
    assert edge["chosen"] == 0.5 and edge["near_edge"] is True
    assert [r["margin_pts"] for r in edge["rows"]] == pytest.approx([1.0, 0.4, -0.8], abs=1e-6)
    # far from the floor (the same spread, every strength 3 points or more above it): not at the edge
    far = [curve((0.93, c + 0.04, c + 0.06), t) for c, t in ((0.893, (.4, .7, .8)), (0.897, (.4, .71, .8)),
                                                             (0.892, (.4, .69, .81)))]
    runs_far = D.DefenceRuns(curves={"paint_ce": D._mean_curve(far)}, details={"paint_ce": {"alpha": [1.0] * 3}},
                             selection={"n": 1024, "floor": 0.89})
    assert D.selection_edges(runs_far)["paint_ce"]["near_edge"] is False
    assert D.selection_edges(D.DefenceRuns(curves={"paint_ce": mean})) == {}  # no floor recorded: nothing to say
