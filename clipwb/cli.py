"""Command line: ``python -m clipwb {eval, pretrain, train-po, report}`` (also installed as ``clipwb``)."""
from __future__ import annotations

import argparse
import json
import sys
import time


def _eval(args) -> int:
    import torch

    from .evaluation.zeroshot import top1, zero_shot_logits
    from .models import load_model
    from .world import World

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    t0 = time.time()
    torch.manual_seed(args.seed)
    lm = load_model(args.model, args.device, cache=args.cache_dir, progress=False)
    world = World(seed=args.seed)
    kind = "object" if args.attack == "none" else "typographic"
    data = world.generate(args.n, args.split, kind)
    logits = zero_shot_logits(lm.model, lm.tokenizer, data.images, world.classes)
    out = {"model": args.model, "data": args.data, "split": args.split, "attack": args.attack, "seed": args.seed,
           "n": args.n, "top1": top1(logits, data.labels("class_name", world.classes))}
    if args.attack == "typographic":
        out["attack_success"] = top1(logits, data.labels("text", world.classes))
    out["seconds"] = round(time.time() - t0, 3)
    print(json.dumps(out))
    return 0


def _pretrain(args) -> int:
    from .config import load_yaml
    from .models import ensure_tiny_weights, tiny_weights_path
    from .models.loading import WEIGHTS_DIR
    from .training.pretrain import pretrain_config

    cfg = pretrain_config(args.profile)
    if args.config:
        cfg = load_yaml(cfg, args.config)
    path, exists = tiny_weights_path(cfg, args.cache_dir)
    if exists and not args.force:
        print(json.dumps({"weights": str(path), "trained": False}))
        return 0
    path = ensure_tiny_weights(cfg, WEIGHTS_DIR if args.ship else args.cache_dir, progress=True, force=True)
    log = json.loads(path.with_suffix(".json").read_text())
    print(json.dumps({"weights": str(path), "trained": True, "pretrain_seconds": log["pretrain_seconds"],
                      **log.get("final", {})}))
    return 0


def _train_po(args) -> int:
    import os

    import torch

    from .config import load_yaml
    from .data.sets import AttackSetsConfig, attack_arrays
    from .evaluation.typographic import po_eval
    from .models import load_model
    from .training.po_trainer import po_config, train_po
    from .world import World

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # launched by torchrun
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    cfg = po_config(args.profile, method=args.method)
    if args.config:
        cfg = load_yaml(cfg, args.config)
    lm = load_model(args.model, cfg.device, cache=args.cache_dir, progress=False)
    world = World(seed=args.seed) if args.data == "world" else None
    size = None if world else args.image_size
    classes, data, _ = attack_arrays(args.data, world=world, n_train=args.n_train, n_test=args.n_test,
                                     cfg=AttackSetsConfig(k=args.k, seed=args.seed, image_size=size),
                                     classes_file=args.classes_file, progress=False)
    res = train_po(lm.model, lm.tokenizer, classes, data["train"], cfg, out_dir=args.out, resume=args.resume,
                   progress=not args.no_progress, model_name=lm.name)
    rank = torch.distributed.get_rank() if distributed else 0
    if rank == 0:
        out = {"method": cfg.method, "steps": res.steps, "train_seconds": round(res.train_seconds, 2),
               "final_loss": res.log[-1]["loss"], "out": args.out}
        if not args.no_eval:
            out["raw"] = po_eval(res.model, lm.tokenizer, classes, data, lm.model, cfg.templates)
            out["avg"] = po_eval(res.avg_model, lm.tokenizer, classes, data, lm.model, cfg.templates)
        print(json.dumps(out))
    if distributed:
        torch.distributed.destroy_process_group()
    return 0


def _report(args) -> int:
    from .reports import NotebookFailed, run_reports

    try:
        results = run_reports(args.out, args.profile, only=args.only, html=not args.no_html)
    except NotebookFailed as e:
        print(f"[clipwb report] FAILED: {e}", file=sys.stderr)
        print("[clipwb report] reports written before this notebook are unchanged", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.name}: {r.seconds:.0f} s, {len(r.files)} files")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipwb", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="zero-shot top-1 of any model on freshly generated held-out world images")
    e.add_argument("--model", default="tiny", help="tiny | NAME:TAG | NAME:/path/ckpt | /path/ckpt | local-dir:DIR")
    e.add_argument("--data", default="world", choices=["world"],
                   help="the embedded world (image folders and real typographic sets: see `clipwb build-typo`)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--attack", default="none", choices=["none", "typographic"])
    e.add_argument("--seed", type=int, default=0, help="world seed: fixes the generated images")
    e.add_argument("--n", type=int, default=1024)
    e.add_argument("--device", default=None)
    e.add_argument("--cache-dir", default=None)
    e.set_defaults(func=_eval)

    t = sub.add_parser("pretrain", help="pretrain the tiny CLIP on the embedded world (cached by config hash)")
    t.add_argument("--profile", default="full", choices=["full", "quick"])
    t.add_argument("--config", default=None, help="YAML file of PretrainConfig overrides")
    t.add_argument("--cache-dir", default=None)
    t.add_argument("--force", action="store_true", help="retrain even if weights exist")
    t.add_argument("--ship", action="store_true", help="write into clipwb/models/weights/ (the shipped copy)")
    t.set_defaults(func=_pretrain)

    po = sub.add_parser("train-po", help="preference-optimisation training against typographic attacks "
                                         "(DPO, IPO, KTO, CE); runs under torchrun for several processes")
    po.add_argument("--method", default="dpo", choices=["dpo", "ipo", "kto", "ce"])
    po.add_argument("--profile", default="embedded", choices=["embedded", "reference"],
                    help="embedded: the tiny model's settings; reference: the paper's (Adamax 2e-5, 512 pairs)")
    po.add_argument("--config", default=None, help="YAML file of POConfig overrides")
    po.add_argument("--model", default="tiny")
    po.add_argument("--data", default="world", help="world, or an image-folder root (root/<class>/*.jpg|png)")
    po.add_argument("--classes-file", default=None)
    po.add_argument("--image-size", type=int, default=224, help="image folders: resize + centre-crop side")
    po.add_argument("--n-train", type=int, default=4000)
    po.add_argument("--n-test", type=int, default=1024)
    po.add_argument("--k", type=int, default=3, help="typographic variants per training image")
    po.add_argument("--seed", type=int, default=0, help="world and attack seed (the training seed is in the config)")
    po.add_argument("--out", default=None, help="checkpoints, log and the final models (raw/, avg/)")
    po.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    po.add_argument("--no-eval", action="store_true")
    po.add_argument("--no-progress", action="store_true")
    po.add_argument("--cache-dir", default=None)
    po.set_defaults(func=_train_po)

    r = sub.add_parser("report", help="execute notebooks/NN_*.ipynb in order with papermill into reports/")
    r.add_argument("--profile", default="full", choices=["full", "quick"])
    r.add_argument("--out", default="reports")
    r.add_argument("--only", nargs="*", default=None, help="notebook numbers or names, e.g. 00 02")
    r.add_argument("--no-html", action="store_true")
    r.set_defaults(func=_report)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .models import ModelSpecError, WeightsNotCachedError
    from .config import ConfigError

    try:
        return args.func(args)
    except (ModelSpecError, WeightsNotCachedError, ConfigError, ValueError, FileNotFoundError) as e:
        print(f"clipwb {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
