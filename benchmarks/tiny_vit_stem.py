"""Issue 27's fourth lever for a ViT that reads: ``tiny-vit`` with a convolutional stem (Xiao et al. 2021, "Early
convolutions help transformers see better") in place of its 8x8 patchify convolution, pretrained with the shipped
curriculum and scored with the world's zero-shot suite every ``--eval-every`` steps, beside the plain ``tiny-vit``'s
curve (benchmarks/results/tiny_vit_patch8_pretrain_log.json) and the conv tower's (the shipped weights' log).

The stem: three 3x3 stride-2 convolutions (3 -> 32 -> 64 -> 128 channels, BatchNorm, ReLU) and a 1x1 convolution to
the transformer width, so the token grid (8 x 8 at 64 px) and everything after it (class token, attention, the
reading analysis of ``clipwb.evaluation.reading``) stay as they are; one transformer block fewer (5) keeps the FLOPs
per image at the conv tower's (counted with ``FlopCounterMode``). A trial, not a shipped model: the stem is not an
open_clip config option, so a model with it would not load through open_clip alone.

    python benchmarks/tiny_vit_stem.py --steps 1200 [--layers 5] [--out benchmarks/results/tiny_vit_conv_stem_trial.json]

With ``--plain`` the same run is made for the shipped ``tiny-vit`` itself (no stem), e.g. a longer curriculum:
``--plain --steps 5000 --out benchmarks/results/tiny_vit_5000_steps.json``. ``--log`` keeps the curve so far readable
while a long run goes on. ``--plain --save-cache DIR`` also keeps the weights, as ``python -m clipwb pretrain --model
tiny-vit`` with the same settings would make them (``ensure_tiny_weights``: DIR/clipwb-tiny-vit-<key>.safetensors and
its log, ending with the zero-shot suite of the saved file on 1 024 test images), ready to ship.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn as nn

RESULTS = Path(__file__).resolve().parent / "results"
TRIAL_NAME = "clipwb-tiny-vit-stem-trial"


def conv_stem(width: int, chans=(32, 64, 128)) -> nn.Sequential:
    """Stride-2 3x3 convolutions (BatchNorm, ReLU) through ``chans``, then a 1x1 convolution to ``width``: an overall
    stride of 2 ** len(chans), the patch size it replaces."""
    mods, c_in = [], 3
    for c in chans:
        mods += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        c_in = c
    mods.append(nn.Conv2d(c_in, width, 1))
    return nn.Sequential(*mods)


def with_conv_stem(model):
    """``model`` (an open_clip CLIP with a VisionTransformer) with ``visual.conv1`` replaced by ``conv_stem``; raises
    when the stem's stride is not the patch size (the token grid would change)."""
    conv1 = model.visual.conv1
    stride = conv1.stride[0]
    if stride != 8:
        raise ValueError(f"the trial stem has stride 8; this ViT's patch size is {stride}")
    model.visual.conv1 = conv_stem(conv1.out_channels).to(conv1.weight.device)
    return model


def register_trial(layers: int) -> str:
    """Register ``tiny-vit``'s config with ``layers`` blocks under TRIAL_NAME, and make open_clip.create_model put the
    stem into models of that name (for ``clipwb.training.pretrain``, which builds its model by name)."""
    import open_clip
    from open_clip import factory

    from clipwb.models import register_configs

    register_configs()
    cfg = copy.deepcopy(factory._MODEL_CONFIGS["clipwb-tiny-vit"])
    cfg["vision_cfg"]["layers"] = layers
    factory._MODEL_CONFIGS[TRIAL_NAME] = cfg
    if not getattr(open_clip.create_model, "_stem_trial", False):
        orig = open_clip.create_model

        def create_model(name, *a, **k):
            m = orig(name, *a, **k)
            return with_conv_stem(m) if name == TRIAL_NAME else m

        create_model._stem_trial = True
        open_clip.create_model = create_model
    return TRIAL_NAME


def main(argv=None) -> int:
    import open_clip

    from clipwb.fileio import atomic_write_text
    from clipwb.models.inputs import image_flops
    from clipwb.precision import cpu_info
    from clipwb.training.pretrain import pretrain_config, pretrain

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--n-images", type=int, default=None, help="world images (default: the shipped curriculum's)")
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--init", default="", help="with --plain: continue from these tiny-vit weights (a key of "
                    "clipwb/models/weights/index.json or of the cache), with a fresh warm-up and cosine")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the curriculum's)")
    ap.add_argument("--seed", type=int, default=None, help="initialisation and data order (default: 0)")
    ap.add_argument("--world", default=None, help="WorldConfig overrides of the pretraining mixture as JSON, e.g. "
                    "'{\"mix_sign\": 0.14}' (default: the shipped world)")
    ap.add_argument("--plain", action="store_true", help="the shipped tiny-vit, without the stem")
    ap.add_argument("--log", default=None, help="pretraining log written at every evaluation")
    ap.add_argument("--save-cache", default=None, help="with --plain: keep the weights in this cache dir")
    ap.add_argument("--out", default=str(RESULTS / "tiny_vit_conv_stem_trial.json"))
    a = ap.parse_args(argv)
    if a.save_cache and not a.plain:
        raise SystemExit("--save-cache keeps the shipped tiny-vit's weights: add --plain")
    from clipwb.models import register_configs

    register_configs()
    name = "clipwb-tiny-vit" if a.plain else register_trial(a.layers)
    over = {"model_name": name, "steps": a.steps, "eval_every": a.eval_every, "eval_n": a.eval_n,
            "precision": a.precision, **({"n_images": a.n_images} if a.n_images else {}),
            **({"init": a.init} if a.init else {}), **({"lr": a.lr} if a.lr else {}),
            **({"seed": a.seed} if a.seed is not None else {}),
            **({"world": json.loads(a.world)} if a.world else {})}
    cfg = pretrain_config("full", **over)
    # image_flops counts in training mode: in eval mode the fused attention path hides a third of a ViT's work
    flops = {**({} if a.plain else {"tiny-vit+stem": image_flops(open_clip.create_model(name))}),
             "tiny-vit": image_flops(open_clip.create_model("clipwb-tiny-vit")),
             "tiny": image_flops(open_clip.create_model("clipwb-tiny"))}
    t0 = time.time()
    if a.save_cache:
        from clipwb.training.pretrain import ensure_tiny_weights

        weights = ensure_tiny_weights(cfg, a.save_cache, force=True, log_path=a.log)
        log = json.loads(weights.with_suffix(".json").read_text())
    else:
        weights, (_, log) = None, pretrain(cfg, progress=True, log_path=a.log)
    stem = f"tiny-vit with a conv stem (3 stride-2 3x3 convs 32/64/128 + BN + ReLU, 1x1 to width) and {a.layers} blocks"
    what = f"tiny-vit continued from {a.init}" if a.init else "the shipped tiny-vit" if a.plain else stem
    what += f" (world: {a.world})" if a.world else ""
    out = {"what": f"{what}, the shipped curriculum at {a.steps} steps; world zero-shot suite on {a.eval_n} val images",
           "cpu": cpu_info(), "torch_threads": torch.get_num_threads(), "flops_per_image": flops,
           "seconds": time.time() - t0, "train_seconds": log["train_seconds"], "steps": a.steps,
           "seconds_per_step": log["train_seconds"] / a.steps, "eval": log["eval"], "loss": log["loss"],
           "config": log["config"], "precision": log["precision"],
           **({"weights": str(weights), "final_test_1024": log.get("final")} if weights else {})}
    for e in log["eval"]:
        print(f"step {e['step']:5d}  clean {e['zero_shot_clean_top1']:.3f}  attack {e['zero_shot_typo_top1']:.3f}  "
              f"word alone {e['text_read_top1']:.3f}  gender {e['gender_top1']:.3f}")
    print(f"{log['train_seconds'] / a.steps:.3f} s/step; MFLOP/image " +
          ", ".join(f"{k} {v / 1e6:.0f}" for k, v in flops.items()))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(out, indent=1))
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
