import os
import json
import time

import numpy as np
import open_clip
import pytest
import torch

from clipwb.models.inputs import images_to_tensor
from clipwb.models import (ModelSpecError, WeightsNotCachedError, load_model, parse_spec, save_model,
                           save_state_dict, tiny_weights_path)
from clipwb.models.loading import WEIGHTS_DIR, tiny_model_config
from clipwb.training.pretrain import pretrain_config
from clipwb.world import World


@pytest.mark.parametrize("spec, kind", [
    ("tiny", "tiny"), ("ViT-B-32:openai", "tag"), ("ViT-B-32:/ckpt/a.pt", "file"), ("/ckpt/model.safetensors", "file"),
    ("local-dir:/some/dir", "local-dir"), ("RN50:openai", "tag"),
])
def test_parse_spec_kinds(spec, kind):
    assert parse_spec(spec)[0] == kind


@pytest.mark.parametrize("spec", ["", "   ", "resnet", "NoSuchModel:openai", "ViT-B-32:no_such_tag",
                                  "hf-hub:timm/vit_base_patch32_clip_224.openai", "local-dir:/no/such/dir"])
def test_bad_specs_fail_clearly(spec):
    with pytest.raises(ModelSpecError):
        load_model(spec, "cpu")


def _init_chain(name: str):
    """The weights keys the default pretraining of ``name`` continues from (``PretrainConfig.init``), newest first,
    read from each weights file's JSON log."""
    init = pretrain_config("full", model_name=name).init
    while init:
        yield init
        log = tiny_weights_path(init, name=name)[0].with_suffix(".json")
        init = json.loads(log.read_text())["config"].get("init", "")


def test_default_tiny_weights_ship_with_the_package(tiny):
    from clipwb.models import default_tiny_key, tiny_weights_key
    from clipwb.training.pretrain import PretrainConfig, pretrain_config

    path, exists = tiny_weights_path()
    assert exists and path.parent == WEIGHTS_DIR
    # the index's default is the weights of the default pretraining config (a changed default must re-ship)
    assert default_tiny_key() == tiny_weights_key(PretrainConfig())
    from clipwb.models import TINY_MODELS

    vit_path, vit_exists = tiny_weights_path(name=TINY_MODELS["tiny-vit"])
    assert vit_exists and default_tiny_key(TINY_MODELS["tiny-vit"]) == tiny_weights_key(
        pretrain_config("full", model_name=TINY_MODELS["tiny-vit"]))
    # only the default weights ship, and the weights a default continues from (``PretrainConfig.init``), down the chain
    expected = {path.stem, vit_path.stem}
    for name in (TINY_MODELS["tiny"], TINY_MODELS["tiny-vit"]):
        for init in _init_chain(name):
            init_path, init_exists = tiny_weights_path(init, name=name)
            assert init_exists and init_path.parent == WEIGHTS_DIR, f"{name}'s init weights {init} do not ship"
            expected.add(init_path.stem)
    shipped = {p.stem for p in WEIGHTS_DIR.glob("*.safetensors")}
    assert shipped == expected, "only the default weights and their init chain ship (orphaned files in weights/?)"
    assert tiny.weights == str(path) and not tiny.model.training
    assert path.with_suffix(".json").is_file(), "the pretraining log ships beside the weights"


def test_the_stage_yamls_reproduce_the_shipped_vit_init_chain():
    """scripts/pretrain/tiny-vit-stage{1,2}.yaml, given to `pretrain --model tiny-vit --config`, name the weights the
    shipped default continues from (the keys are config hashes: a changed field gives another key)."""
    from pathlib import Path

    from clipwb.config import load_yaml
    from clipwb.models import TINY_MODELS, tiny_weights_key

    name = TINY_MODELS["tiny-vit"]
    chain = list(_init_chain(name))
    scripts = Path(__file__).resolve().parents[1] / "scripts" / "pretrain"
    keys = [tiny_weights_key(load_yaml(pretrain_config("full", model_name=name), scripts / f"tiny-vit-stage{i}.yaml"))
            for i in (1, 2)]
    assert keys == chain[::-1] and len(set(keys)) == 2


def test_fast_tensor_path_equals_open_clip_preprocess(tiny):
    img, _ = World().sample(3, "test", "object")
    a = tiny.preprocess(img).unsqueeze(0)
    b = images_to_tensor(np.asarray(img)[None], tiny.model)
    assert torch.allclose(a, b, atol=1e-5)


def test_tokenizer_context_length_matches_config(tiny):
    from clipwb.models import tiny_model_config

    ctx = tiny_model_config()["text_cfg"]["context_length"]
    assert tiny.tokenizer(["a photo of a star."]).shape == (1, ctx)


def test_saved_model_loads_unchanged_in_open_clip_and_clipwb(tiny, tmp_path):
    x = images_to_tensor(World().generate(4, "test").images, tiny.model)
    t = tiny.tokenizer(["a star.", "a moon."])
    with torch.no_grad():
        ref_i, ref_t = tiny.model.encode_image(x), tiny.model.encode_text(t)
    weights = save_model(tiny.model, tmp_path / "ft", tiny.name)
    # open_clip itself, both ways
    m1, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'ft'}")
    m2, _, _ = open_clip.create_model_and_transforms(tiny.name, pretrained=str(weights))
    # clipwb specs: local-dir, bare file with its config beside it, NAME:path, a torch .pt checkpoint
    pt = save_state_dict(tiny.model, tmp_path / "ckpt.pt")
    loaded = [load_model(s, "cpu").model for s in
              (f"local-dir:{tmp_path / 'ft'}", str(weights), f"{tiny.name}:{weights}", f"{tiny.name}:{pt}")]
    for m in [m1, m2] + loaded:
        m.eval()
        with torch.no_grad():
            assert torch.equal(m.encode_image(x), ref_i)
            assert torch.equal(m.encode_text(t), ref_t)


def test_pt_checkpoint_loads_with_weights_only(tiny, tmp_path):
    pt = save_state_dict(tiny.model, tmp_path / "ckpt.pt")
    sd = torch.load(pt, weights_only=True)
    assert set(sd) == set(tiny.model.state_dict())


def test_bare_checkpoint_without_config_asks_for_the_architecture(tiny, tmp_path):
    pt = save_state_dict(tiny.model, tmp_path / "x.pt")
    with pytest.raises(ModelSpecError, match="which architecture"):
        load_model(str(pt), "cpu")
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model(f"{tiny.name}:{tmp_path / 'missing.pt'}", "cpu")


def test_uncached_openai_weights_fail_in_under_a_second(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotCachedError) as err:
        load_model("ViT-B-32:openai", "cpu", cache=str(tmp_path / "empty"))
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert "not in the local cache" in msg and "create_model_and_transforms('ViT-B-32', pretrained='openai')" in msg


def _fake_tag(monkeypatch, tag, cfg):
    from open_clip import pretrained

    table = dict(pretrained._PRETRAINED["clipwb-tiny"]) if "clipwb-tiny" in pretrained._PRETRAINED else {}
    table[tag] = pretrained._pcfg(**cfg) if hasattr(pretrained, "_pcfg") else cfg
    monkeypatch.setitem(pretrained._PRETRAINED, "clipwb-tiny", table)


def test_name_tag_resolves_from_a_local_hf_cache(tiny, tmp_path, monkeypatch):
    """A NAME:TAG whose weights sit in a Hugging Face cache layout loads without any network access."""
    _fake_tag(monkeypatch, "fakehub", {"hf_hub": "clipwb/tiny-test/"})
    snap = tmp_path / "hub" / "models--clipwb--tiny-test" / "snapshots" / "0123abcd"
    save_state_dict(tiny.model, snap / "open_clip_model.safetensors")
    (tmp_path / "hub" / "models--clipwb--tiny-test" / "refs").mkdir()
    (tmp_path / "hub" / "models--clipwb--tiny-test" / "refs" / "main").write_text("0123abcd")
    lm = load_model("clipwb-tiny:fakehub", "cpu", cache=str(tmp_path / "hub"))
    assert lm.weights.endswith("open_clip_model.safetensors")
    for a, b in zip(lm.model.state_dict().values(), tiny.model.state_dict().values()):
        assert torch.equal(a, b)


def test_name_tag_resolves_from_the_open_clip_url_cache(tiny, tmp_path, monkeypatch):
    _fake_tag(monkeypatch, "fakeurl", {"url": "https://example.invalid/weights/tiny-test.pt"})
    save_state_dict(tiny.model, tmp_path / "urlcache" / "tiny-test.pt")
    lm = load_model("clipwb-tiny:fakeurl", "cpu", cache=str(tmp_path / "urlcache"))
    assert lm.weights == str(tmp_path / "urlcache" / "tiny-test.pt")


def test_loading_never_trains_and_ensure_tiny_weights_trains_once(tmp_path, monkeypatch):
    import clipwb.training.pretrain as pt
    from clipwb.models import tiny_weights_key

    cfg = pretrain_config("quick")
    cache = tmp_path / "cache"
    path, exists = tiny_weights_path(tiny_weights_key(cfg), cache)
    assert not exists
    # loading a config whose weights do not exist is an error naming the command that makes them, at once
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: pytest.fail("loading trained"))
    t0 = time.time()
    with pytest.raises(WeightsNotCachedError, match="python -m clipwb pretrain"):
        load_model("tiny", "cpu", cache=str(cache), pretrain_cfg=cfg)
    assert time.time() - t0 < 1.0
    monkeypatch.undo()
    assert pt.ensure_tiny_weights(cfg, cache, progress=False) == path and path.is_file()
    log = json.loads(path.with_suffix(".json").read_text())
    assert log["config"]["steps"] == cfg.steps and "final" in log
    assert load_model("tiny", "cpu", cache=str(cache), pretrain_cfg=cfg).weights == str(path)
    # second call: finds them, does not retrain
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: pytest.fail("retrained although cached"))
    assert pt.ensure_tiny_weights(cfg, cache) == path


def test_fine_tuned_models_are_written_in_the_hf_hub_layout_and_load_back_through_the_hub(tiny, tmp_path):
    """train_po's raw/ and avg/ folders are open_clip's Hugging Face hub layout: open_clip loads them from the
    folder (local-dir:) and, placed in a Hugging Face cache as a hub repository would be downloaded, by
    'hf-hub:<user>/<repo>' offline, with outputs equal to the trained model's."""
    import json
    import shutil
    import subprocess
    import sys

    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.training.po_trainer import POConfig, train_po

    classes, data, _ = attack_arrays("world", world=World(), n_train=16, n_test=8, cfg=AttackSetsConfig(k=1),
                                     root=tmp_path / "sets", progress=False)
    cfg = POConfig(method="kto", lr=1e-3, batch_size=8, epochs=1, device="cpu", precision="fp32")
    res = train_po(tiny.model, tiny.tokenizer, classes, data["train"], cfg, out_dir=tmp_path / "run", progress=False,
                   model_name=tiny.name)
    folder = tmp_path / "run" / "avg"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
    conf = json.loads((folder / "open_clip_config.json").read_text())
    assert conf["model_cfg"] == tiny_model_config()
    assert {"size", "mean", "std"} <= set(conf["preprocess_cfg"])
    card = (folder / "README.md").read_text()
    assert "library_name: open_clip" in card and "kto" in card
    x = images_to_tensor(World().generate(3, "test").images, tiny.model)
    prompts = ["a photo of a star.", "a photo of a moon."]
    m, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    m.eval()
    trained = res.avg_model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in m.state_dict().items()) and m.state_dict().keys() == trained.keys()
    assert torch.equal(tok(prompts), tiny.tokenizer(prompts))
    with torch.no_grad():
        ref_i, ref_t = m.encode_image(x), m.encode_text(tok(prompts))
        # the trained object itself runs frozen parameters (requires_grad=False), which takes torch's fused attention
        # path for the text tower: equal to float rounding, not bit for bit
        assert torch.allclose(res.avg_model.encode_image(x), ref_i, atol=1e-5)
        assert torch.allclose(res.avg_model.encode_text(tok(prompts)), ref_t, atol=1e-5)
    # as the hub would have it: <cache>/models--clipwb--tiny-kto/snapshots/<commit>/ + refs/main
    repo = tmp_path / "hf" / "hub" / "models--clipwb--tiny-kto"
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    torch.save({"x": x, "tokens": tok(prompts)}, tmp_path / "inputs.pt")
    code = ("import sys, torch, open_clip\n"
            "m, _, _ = open_clip.create_model_and_transforms('hf-hub:clipwb/tiny-kto')\n"
            "tok = open_clip.get_tokenizer('hf-hub:clipwb/tiny-kto')\n"
            "d = torch.load(sys.argv[1], weights_only=True)\n"
            "m.eval()\n"
            "with torch.no_grad():\n"
            "    torch.save({'i': m.encode_image(d['x']), 't': m.encode_text(tok(['a photo of a star.', "
            "'a photo of a moon.']))}, sys.argv[2])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(out["i"], ref_i) and torch.equal(out["t"], ref_t)


def test_evaluation_batches_depend_on_the_tower_and_not_the_features(tiny):
    """encode_images' default batch: 64 images for a transformer tower on CPU, 256 otherwise; the features are
    the same at any batch size up to float rounding."""
    from clipwb.models.inputs import encode_images, eval_batch, is_transformer_tower

    vit = open_clip.create_model("clipwb-tiny-vit").eval()
    assert is_transformer_tower(vit) and not is_transformer_tower(tiny.model)
    assert eval_batch(vit) == 64 and eval_batch(tiny.model) == 256
    imgs = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    for m in (vit, tiny.model):
        torch.testing.assert_close(encode_images(m, imgs, batch_size=7), encode_images(m, imgs), rtol=1e-5,
                                   atol=1e-5)
