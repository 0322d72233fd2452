"""The ViT tower (tiny-vit): its config through open_clip and the Hugging Face layout, the reading analysis (class
token per layer, class-token attention, typographic attention score) and Dyslexify's class-token head ablation."""
import numpy as np
import pytest
import torch

from clipwb.defences.heads import ClassTokenAblation, Head, ablate, attention_heads
from clipwb.evaluation.reading import (box_patch_mask, read_vit, top_reading_heads, typographic_attention_score,
                                       vit_blocks, vit_grid)
from clipwb.models import load_model, register_configs, save_model


@pytest.fixture(scope="module")
def vit():
    import open_clip

    register_configs()
    torch.manual_seed(0)
    m = open_clip.create_model("clipwb-tiny-vit").eval()
    with torch.no_grad():  # random init leaves attention almost uniform: sharpen it so that heads differ
        for b in vit_blocks(m):
            b.attn.in_proj_weight.mul_(4)
    return m


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_vit_config_flops_and_round_trips(vit, tmp_path):
    from torch.utils.flop_counter import FlopCounterMode

    assert vit_grid(vit) == (8, 8) and len(vit_blocks(vit)) == 6 and vit_blocks(vit)[0].attn.num_heads == 8
    with FlopCounterMode(display=False) as fc:
        vit.encode_image(torch.zeros(1, 3, 64, 64))
    assert 1.2e8 < fc.get_total_flops() < 1.9e8  # about the conv tower's 145 MFLOP per image
    from clipwb.models.inputs import image_flops

    with torch.no_grad():  # eval + no_grad takes MultiheadAttention's fused path, which the counter misses
        assert image_flops(vit.eval()) == fc.get_total_flops() and not vit.training
    x = torch.from_numpy(_images(4)).permute(0, 3, 1, 2).float() / 255
    ref = vit.encode_image(x)
    w = save_model(vit, tmp_path / "hf", "clipwb-tiny-vit")
    for spec in (f"local-dir:{tmp_path / 'hf'}", f"clipwb-tiny-vit:{w}", str(w)):
        lm = load_model(spec, device="cpu")
        assert torch.allclose(lm.model.encode_image(x), ref, atol=1e-5), spec


def test_tiny_vit_spec_names_the_pretrain_command(tmp_path, monkeypatch):
    from clipwb.models import loading

    monkeypatch.setattr(loading, "INDEX_FILE", tmp_path / "index.json")
    with pytest.raises(loading.WeightsNotCachedError, match="pretrain --ship"):
        load_model("tiny-vit")
    assert loading.parse_spec("tiny-vit") == ("tiny", "clipwb-tiny-vit", None)


def test_read_vit_states_are_the_class_token(vit):
    out = read_vit(vit, _images(6), batch_size=4)
    assert out["states"].shape == (7, 6, 128) and out["attention"].shape == (6, 6, 8, 65)
    assert np.allclose(out["attention"].sum(-1), 1, atol=1e-5)
    x = torch.from_numpy(_images(6)).permute(0, 3, 1, 2).float() / 255
    from clipwb.models.inputs import images_to_tensor

    with torch.no_grad():
        emb = vit.encode_image(images_to_tensor(_images(6), vit))
        last = vit.visual.ln_post(torch.from_numpy(out["states"][-1])) @ vit.visual.proj
    assert torch.allclose(last, emb, atol=1e-4)
    assert not np.allclose(out["attention"][0], out["attention"][0].mean(-1, keepdims=True))
    del x


def test_read_vit_refuses_the_conv_tower():
    import open_clip

    register_configs()
    with pytest.raises(TypeError, match="not an open_clip ViT"):
        read_vit(open_clip.create_model("clipwb-tiny"), _images(2))


def test_box_patch_mask_and_attention_score():
    mask = box_patch_mask([(8, 16, 16, 8), (0, 0, 4, 4)], 64, (8, 8))
    assert mask.shape == (2, 64)
    assert sorted(np.flatnonzero(mask[0])) == [17, 18]  # row 2, columns 1-2
    assert mask[1].sum() == 1 and mask[1][0]  # a quarter of patch 0 is covered
    L, N, H, P = 2, 3, 4, 64
    text = np.zeros((N, P), bool)
    text[:, [10, 11, 20]] = True
    att = np.zeros((L, N, H, 1 + P))
    att[:, :, 0, 1 + 10] = 0.5  # head 0 looks only at the text
    att[:, :, 0, 1 + 20] = 0.5
    att[:, :, 1, 1 + 40] = 1.0  # head 1 never does
    att[:, :, 2, 0] = 1.0  # head 2 looks at the class token
    att[:, :, 3, 1:] = 1 / P  # head 3 is uniform over the patches
    s = typographic_attention_score(att, text)
    assert np.allclose(s[:, 0], 1) and np.allclose(s[:, 1], 0) and np.allclose(s[:, 2], 0)
    assert np.allclose(s[:, 3], 3 / P)
    assert top_reading_heads(s, 1)[0] == {"layer": 0, "head": 0, "score": 1.0}
    with pytest.raises(ValueError, match="does not fit"):
        typographic_attention_score(att, text[:, :10])


def _attn_inputs(vit, n=3):
    blk = vit_blocks(vit)[3]
    x = torch.randn(n, 65, 128)
    return blk.attn, x


def test_class_token_ablation_changes_only_the_heads_class_token_contribution(vit):
    attn, x = _attn_inputs(vit)
    with torch.no_grad():
        base = attn(x, x, x, need_weights=False)[0]
        h = attn.register_forward_hook(ClassTokenAblation([2, 5]))
        abl = attn(x, x, x, need_weights=False)[0]
        h.remove()
        assert torch.equal(abl[:, 1:], base[:, 1:])  # the patches' outputs are untouched
        assert not torch.allclose(abl[:, 0], base[:, 0], atol=1e-4)
        w = attn.out_proj.weight
        saved = w.clone()
        for k in (2, 5):  # zeroing the whole heads removes the same contribution at the class token
            w[:, k * 16:(k + 1) * 16] = 0
        zeroed = attn(x, x, x, need_weights=False)[0]
        assert torch.allclose(abl[:, 0], zeroed[:, 0], atol=1e-5)
        # a head whose weights are already zero: ablating it changes nothing
        h = attn.register_forward_hook(ClassTokenAblation([2]))
        again = attn(x, x, x, need_weights=False)[0]
        h.remove()
        assert torch.allclose(again, zeroed, atol=1e-6)
        w.copy_(saved)


def test_ablate_a_vit_head_through_the_model(vit):
    heads = attention_heads(vit)
    assert len(heads) == 48 and heads[0].module == "transformer.resblocks.0.attn"
    x = torch.from_numpy(_images(4)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        base = vit.encode_image(x)
        one = ablate(vit, [Head("transformer.resblocks.4.attn", 3, 16)])
        assert not torch.allclose(one.encode_image(x), base, atol=1e-4)
        assert torch.equal(vit.encode_image(x), base)  # the original keeps its heads
        for p, q in zip(one.parameters(), vit.parameters()):
            assert torch.equal(p, q)  # class-token ablation changes no weight ...
        from clipwb.cache import fingerprint

        assert fingerprint(one) != fingerprint(vit)  # ... but the run cache tells the two apart
        assert fingerprint(one) == fingerprint(ablate(vit, [Head("transformer.resblocks.4.attn", 3, 16)]))
        # head 3 already zero: the ablation removes nothing more than zeroing it does
        import copy

        zero = copy.deepcopy(vit)
        dict(zero.visual.named_modules())["transformer.resblocks.4.attn"].out_proj.weight[:, 48:64] = 0
        both = ablate(zero, [Head("transformer.resblocks.4.attn", 3, 16)])
        assert torch.allclose(both.encode_image(x), zero.encode_image(x), atol=1e-5)


def test_the_shipped_tiny_vit_loads_and_runs_on_the_command_line():
    import json as _json

    from clipwb.cli import main
    from clipwb.models import TINY_MODELS

    lm = load_model("tiny-vit")
    assert lm.name == TINY_MODELS["tiny-vit"] and lm.weights.endswith(".safetensors") and "pretrain_log" in lm.info
    assert len(vit_blocks(lm.model)) == 6
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["eval", "--model", "tiny-vit", "--attack", "typographic", "--n", "32", "--no-progress"]) == 0
    out = _json.loads(buf.getvalue().strip().splitlines()[-1])
    assert out["n"] == 32 and 0 <= out["top1"] <= 1 and 0 <= out["attack_success"] <= 1


def test_head_ranking_scores_every_vit_head_and_none_for_the_conv_tower(vit, tiny):
    from clipwb.evaluation.reading import read_vit
    from clipwb.experiments.reading import _reading_split, head_ranking
    from clipwb.world import World

    w = World(seed=0)
    rank = head_ranking(vit, w, n=12, cache=False)
    heads = attention_heads(vit)
    assert list(rank) == [h.name for h in heads] and all(0.0 <= v <= 1.0 for v in rank.values())
    # the score of layer l, head h is that head's mean class-token attention mass on the text box's patches
    val = _reading_split(w, 12, "val")
    att = read_vit(vit, val["images"])["attention"]
    mask = box_patch_mask(val["boxes"], 64, vit_grid(vit))
    expect = typographic_attention_score(att, mask)
    layer, head = 3, 5
    assert rank[f"transformer.resblocks.{layer}.attn#{head}"] == pytest.approx(float(expect[layer, head]))
    assert head_ranking(tiny.model, w, n=4, cache=False) is None


def test_head_ablation_tries_heads_in_the_given_ranking(tmp_path):
    """compare_defences(head_scores=): the greedy search tries the heads in the given order, and the ranking is part
    of the cache key (another ranking is another result)."""
    import open_clip

    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.experiments.defences import compare_defences
    from clipwb.world import World

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
           "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    save_model(open_clip.CLIP(**cfg), tmp_path / "vit", "clipwb-test-vit", model_cfg=cfg)
    lm = load_model(f"local-dir:{tmp_path / 'vit'}", "cpu")
    classes, sets, _ = attack_arrays("world", world=World(image_size=32), n_train=8, n_test=8, n_val=16,
                                     cfg=AttackSetsConfig(k=1, seed=0), root=tmp_path / "sets")
    names = [h.name for h in attention_heads(lm.model)]
    kw = dict(only=["zero_shot", "head_ablation"], select_n=16, progress=False, clean_tolerance=1.0)
    for order in (names, names[::-1]):
        scores = {n: float(len(order) - i) for i, n in enumerate(order)}
        det = compare_defences(lm, classes, sets, head_scores=scores, **kw).details["head_ablation"]
        tried = [r.get("added") or r.get("no_gain") or r.get("rejected") for r in det["log"][1:]]
        assert tried == order[:len(tried)] and tried and det["ranking"] == "given" and det["scores"] == scores


def test_the_vit_cpu_levers_benchmark_times_both_matmul_modes_and_restores_fp32(vit):
    """benchmarks/vit_cpu_levers.py's matmul lever on the ViT: both modes timed, and full fp32 restored after."""
    from conftest import load_benchmark

    import copy
    from types import SimpleNamespace

    mod = load_benchmark("vit_cpu_levers")
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"  # whatever came before, the lever leaves full fp32
    r = mod.matmul_lever(SimpleNamespace(model=copy.deepcopy(vit)), batch=4, repeats=2)
    assert {k: len(v) for k, v in r["seconds_each_repeat"].items()} == {"ieee": 2, "bf16": 2}
    assert all(v > 0 for v in r["seconds"].values()) and r["ratio"] > 0 and r["batch"] == 4
    assert torch.backends.mkldnn.matmul.fp32_precision == "ieee" == torch.backends.mkldnn.conv.fp32_precision
