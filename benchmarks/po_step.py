"""Time one PO training step of clipwb's trainer against three other compute patterns on the same model, batch
and inputs (issue 4), and check that the PO losses agree with the reference pattern.

- ours: ``clipwb.training.po_trainer.train_po`` (image tower trained, prompt features and reference
  log-probs computed once); the step time is the median gap between consecutive log rows;
- reference_pattern: the reference code's compute pattern: every parameter trained, policy and reference
  re-encode the images and all prompts every step;
- openclip_contrastive: one open_clip_train-style step (both towers, open_clip's ClipLoss, AdamW) on the same
  images with their class prompts as captions;
- floor: a bare forward and backward of the image tower over the same images with a trivial loss, in the memory
  format and through the forward the trainer uses (``training.fast_tower``'s for an open_clip ModifiedResNet, as
  ``POConfig.fast_tower="auto"`` has it; open_clip's own otherwise), so that ours / floor measures the trainer's
  overhead;
- floor_compiled: the same under ``torch.compile`` (``--compile-floor``; on by default on CUDA).

The FLOPs of one image's forward and backward through the image tower are counted by torch's ``FlopCounterMode``
(not a constant); achieved TFLOP/s = img/s x that count, and MFU = achieved / the device's peak at the step's
precision (``PEAK_TFLOPS`` by GPU name, or ``--peak-tflops``; none is assumed for CPUs).

Every pattern pushes the same 2B images (B typographic + B clean) through the image tower per step; img_per_s is
2B / step time. Prints the ratios and writes benchmarks/results/po_step.json.

    python benchmarks/po_step.py [--model tiny] [--batch 128] [--steps 8] [--rounds 2] [--method dpo]
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipwb.data.sets import AttackSetsConfig, attack_arrays
from clipwb.models.inputs import images_to_tensor
from clipwb.fileio import atomic_write_text
from clipwb.losses.po import po_loss
from clipwb.models import load_model
from clipwb.precision import cpu_info, device_slug, resolve_precision
from clipwb.training.po_trainer import POConfig, class_features, reference_logprobs, resolve_device, train_po
from clipwb.training.trainable import policy_tower, uses_fast_tower
from clipwb.world import World

RESULTS = Path(__file__).resolve().parent / "results"


def default_out(device: torch.device, precision: str) -> Path:
    """results/po_step_<device>_<precision>.json, the device named by its model (CPU or GPU)."""
    return RESULTS / f"po_step_{device_slug(device)}_{precision}.json"


def bench_model(spec: str, device):
    """``load_model(spec)``, or, for a bare open_clip architecture name (``ViT-B-32``), that architecture randomly
    initialised: step times do not depend on the weights, and a GPU machine without a model cache can still time
    the real path's architecture."""
    import open_clip

    from clipwb.models import LoadedModel, register_configs

    register_configs()
    if ":" not in spec and spec in open_clip.list_models() and not spec.startswith("clipwb-"):
        model, _, pre = open_clip.create_model_and_transforms(spec, device=device)
        print(f"{spec}: randomly initialised (timing only)")
        return LoadedModel(model.eval(), pre, open_clip.get_tokenizer(spec), spec, spec, None, {"kind": "random"})
    return load_model(spec, device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(data, batch, steps, seed=0):
    order = np.random.default_rng(seed).permutation(len(data["typo"]))
    return [order[(i * batch) % (len(order) - batch):][:batch] for i in range(steps)]


def reference_pattern(lm, classes, data, cfg, batches, device, amp):
    """Every parameter trained; policy and reference re-encode images and all prompts every step."""
    pol = copy.deepcopy(lm.model).to(device).eval()
    ref = copy.deepcopy(lm.model).to(device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adamax(pol.parameters(), lr=cfg.lr)
    tok = lm.tokenizer([t.format(c) for c in classes for t in cfg.templates]).to(device)
    times, losses = [], []
    for idx in batches:
        _sync(device)
        t = time.perf_counter()
        x = images_to_tensor(np.concatenate([data["typo"][idx], data["clean"][idx]]), pol)
        yw, yl = (torch.as_tensor(data[k][idx], device=device) for k in ("true", "written"))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            lp = F.log_softmax(pol.logit_scale.exp() * F.normalize(pol.visual(x).float(), dim=-1)
                               @ class_features(pol, tok, len(classes)).T, -1)
            with torch.no_grad():
                lr_ = F.log_softmax(ref.logit_scale.exp() * F.normalize(ref.visual(x).float(), dim=-1)
                                    @ class_features(ref, tok, len(classes)).T, -1)
        b = len(idx)
        loss, _ = po_loss(cfg.method, lp[:b], lr_[:b], yw, yl, lp[b:], lr_[b:], beta=cfg.beta_value, lam=cfg.lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
        losses.append(float(loss.detach()))
    return times


def openclip_contrastive(lm, classes, data, cfg, batches, device, amp):
    from open_clip.loss import ClipLoss

    m = copy.deepcopy(lm.model).to(device).train()
    opt = torch.optim.AdamW(m.parameters(), lr=cfg.lr)
    loss_fn = ClipLoss()
    times = []
    for idx in batches:
        _sync(device)
        t = time.perf_counter()
        x = images_to_tensor(np.concatenate([data["typo"][idx], data["clean"][idx]]), m)
        labels = np.concatenate([data["true"][idx], data["true"][idx]])
        tok = lm.tokenizer([cfg.templates[0].format(classes[y]) for y in labels]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            img, txt, scale = m(x, tok)[:3]
            loss = loss_fn(img.float(), txt.float(), scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def floor(lm, classes, data, cfg, batches, device, amp, compiled: bool = False):
    """The bare forward + backward, in the memory format ``cfg.precision`` resolves to for this model here and
    through the forward the policy runs, as the trainer has them."""
    m = copy.deepcopy(lm.model).to(device).eval()
    prec = resolve_precision(cfg.precision, device, model=m)
    m = prec.layout(m)
    forward = policy_tower(m, uses_fast_tower(cfg, m))
    tower = torch.compile(forward) if compiled else forward
    times = []
    for idx in batches:
        _sync(device)
        t = time.perf_counter()
        x = prec.layout(images_to_tensor(np.concatenate([data["typo"][idx], data["clean"][idx]]), m))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = tower(x).float().sum()
        m.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def floor_compiled(lm, classes, data, cfg, batches, device, amp):
    return floor(lm, classes, data, cfg, batches, device, amp, compiled=True)


# dense peak TFLOP/s by GPU name fragment and precision (vendor data sheets, SXM parts; fp32 = TF32 tensor cores off)
PEAK_TFLOPS = {"H200": {"bf16": 989.0, "fp32": 67.0}, "H100": {"bf16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp32": 19.5}, "L40S": {"bf16": 362.0, "fp32": 91.6}}


def peak_tflops(device, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v[precision] for k, v in PEAK_TFLOPS.items() if k in name), None)


def flops_per_image(lm, device, amp) -> float:
    """FLOPs of one image's forward + backward through the image tower, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from clipwb.models.inputs import preprocess_stats

    m = copy.deepcopy(lm.model).to(device).eval()
    size = preprocess_stats(m)[2]
    x = torch.randn(4, 3, size, size, device=device)
    with FlopCounterMode(display=False) as fc:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y = m.visual(x).float().sum()
        y.backward()
    return fc.get_total_flops() / len(x)


def ours(lm, classes, data, cfg, n_steps):
    n = cfg.batch_size * n_steps
    sub = {k: v[:n] for k, v in data.items() if k != "source"}
    res = train_po(lm.model, lm.tokenizer, classes, sub, POConfig(**{**cfg.__dict__, "epochs": 1}), progress=False,
                   save=False)
    t = [r["seconds"] for r in res.log]
    return list(np.diff(t)), res


def loss_agreement(lm, classes, data, cfg, res, device, amp) -> dict:
    """PO losses of the cached-reference path vs the re-encode-everything path on one batch, for the trained
    policy (so that the reference term is not trivially zero)."""
    idx = np.arange(cfg.batch_size)
    pol = res.model.to(device)
    tok = lm.tokenizer([t.format(c) for c in classes for t in cfg.templates]).to(device)
    out = {}
    ref_typo = reference_logprobs(lm.model.to(device), lm.tokenizer, classes, data["typo"][idx], cfg.templates)
    ref_clean = reference_logprobs(lm.model.to(device), lm.tokenizer, classes, data["clean"][idx], cfg.templates)
    with torch.no_grad():
        x = images_to_tensor(np.concatenate([data["typo"][idx], data["clean"][idx]]), pol)
        txt = class_features(lm.model, tok, len(classes))
        lp = F.log_softmax(lm.model.logit_scale.exp() * F.normalize(pol.visual(x).float(), dim=-1) @ txt.T, -1)
        ref = lm.model
        lr_ = F.log_softmax(ref.logit_scale.exp() * F.normalize(ref.visual(x).float(), dim=-1)
                            @ class_features(ref, tok, len(classes)).T, -1)
    b = len(idx)
    yw, yl = (torch.as_tensor(data[k][idx], device=device) for k in ("true", "written"))
    for method in ("dpo", "ipo", "kto", "ce"):
        c = POConfig(method=method)
        a, _ = po_loss(method, lp[:b], ref_typo, yw, yl, lp[b:], ref_clean, beta=c.beta_value, lam=c.lam)
        r, _ = po_loss(method, lp[:b], lr_[:b], yw, yl, lp[b:], lr_[b:], beta=c.beta_value, lam=c.lam)
        out[method] = {"ours": float(a), "reference_pattern": float(r), "abs_diff": abs(float(a) - float(r))}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="a clipwb model spec, or a bare open_clip architecture (ViT-B-32) "
                                                      "randomly initialised")
    ap.add_argument("--batch", type=int, default=128, help="pairs per step (2x images through the tower)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per pattern and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--method", default="dpo")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="auto: clipwb.precision's per-machine choice (bf16 on CUDA and CPUs with native bf16)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="POConfig.compile of our step (auto: on for CUDA, off on CPU)")
    ap.add_argument("--compile-floor", choices=["auto", "on", "off"], default="auto",
                    help="also time the compiled floor (auto: on CUDA only; on CPU compiling takes minutes)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak TFLOP/s at this precision, for MFU (default: PEAK_TFLOPS by GPU name)")
    ap.add_argument("--out", default=None, help="default: results/po_step_<device>_<precision>.json")
    args = ap.parse_args()
    device = resolve_device(None)
    prec = resolve_precision(args.precision, device)
    amp = prec.autocast
    print(f"device {device}, CPU {cpu_info()['model']} (native bf16: {cpu_info()['bf16_native']}), "
          f"precision {prec.name}: {prec.reason}")
    torch.manual_seed(0)
    lm = bench_model(args.model, device)
    classes, sets, _ = attack_arrays("world", world=World(), n_train=max(64, args.batch * (args.steps + 1) // 2),
                                     n_test=16, cfg=AttackSetsConfig(k=2), progress=False)
    data = sets["train"]
    cfg = POConfig(method=args.method, lr=1e-4, batch_size=args.batch, device=str(device), precision=prec.name,
                   compile=args.compile)
    compile_floor = args.compile_floor == "on" or (args.compile_floor == "auto" and device.type == "cuda")
    batches = _batches(data, args.batch, args.steps + 1)
    patterns = [("reference_pattern", reference_pattern), ("openclip_contrastive", openclip_contrastive),
                ("floor", floor)] + ([("floor_compiled", floor_compiled)] if compile_floor else [])
    timings = {"ours": [], **{name: [] for name, _ in patterns}}
    res = None
    for _ in range(args.rounds):  # interleaved rounds: each pattern sees the same machine state
        t, res = ours(lm, classes, data, cfg, args.steps + 1)
        timings["ours"] += t
        for name, fn in patterns:
            timings[name] += fn(lm, classes, data, cfg, batches, device, amp)[1:]  # drop the warm-up step
    imgs = 2 * args.batch
    step_s = {k: statistics.median(v) for k, v in timings.items()}
    ips = {k: imgs / v for k, v in step_s.items()}
    ratios = {"ours_vs_reference_pattern": ips["ours"] / ips["reference_pattern"],
              "ours_vs_openclip_contrastive": ips["ours"] / ips["openclip_contrastive"],
              "ours_vs_floor": ips["ours"] / ips["floor"]}
    targets = {"ours_vs_reference_pattern": 1.3, "ours_vs_openclip_contrastive": 1.0, "ours_vs_floor": 0.9}
    if "floor_compiled" in ips:
        ratios["ours_vs_floor_compiled"] = ips["ours"] / ips["floor_compiled"]
        targets["ours_vs_floor_compiled"] = 0.9
    agree = loss_agreement(lm, classes, data, cfg, res, device, amp)
    fpi = flops_per_image(lm, device, amp)
    peak = peak_tflops(device, prec.name, args.peak_tflops)
    tflops = {k: v * fpi / 1e12 for k, v in ips.items()}
    mfu = {k: v / peak for k, v in tflops.items()} if peak else None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_info()["model"]
    out = {"img_per_s": ips, "step_seconds": step_s, "ratios": ratios, "targets": targets,
           "flops_per_image_fwd_bwd": fpi, "achieved_tflops": tflops, "peak_tflops": peak, "mfu": mfu,
           "device_name": device_name, "compiled": {"ours": bool(res.compiled), "floor_compiled": compile_floor},
           # ours and the floors run training.fast_tower's forward where it applies (FLOPs: open_clip's forward)
           "fast_tower": uses_fast_tower(cfg, lm.model, as_policy=True),
           "loss_agreement": agree, "max_loss_abs_diff": max(v["abs_diff"] for v in agree.values()),
           "model": args.model, "batch_pairs": args.batch, "images_per_step": imgs, "steps": args.steps,
           "rounds": args.rounds, "method": args.method, "bf16": amp, "device": str(device),
           "precision": prec.to_dict(), "cpu": cpu_info(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.machine()}
    print(f"{device_name}: {fpi / 1e9:.3f} GFLOP per image forward+backward (FlopCounterMode), peak "
          f"{peak if peak else 'unknown'} TFLOP/s")
    for k, v in ips.items():
        m = f", MFU {mfu[k] * 100:.1f} %" if mfu else ""
        print(f"{k:22s} {v:9.1f} img/s   ({step_s[k] * 1e3:.1f} ms/step, {tflops[k]:.3f} TFLOP/s{m})")
    for k, v in ratios.items():
        print(f"{k:32s} {v:.2f}x  (target >= {out['targets'][k]})")
    print(f"max |loss(ours) - loss(reference pattern)| over dpo/ipo/kto/ce: {out['max_loss_abs_diff']:.2e}")
    path = Path(args.out) if args.out else default_out(device, prec.name)
    atomic_write_text(path, json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
