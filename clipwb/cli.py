"""Command line: ``python -m clipwb {eval, pretrain, train-po, build-typo, report, cache}`` (also installed as
``clipwb``)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time


def _eval(args) -> int:
    import torch

    from .evaluation.zeroshot import top1, zero_shot_logits
    from .models import load_model

    from .config import check_seed

    check_seed("--seed", args.seed)
    t0 = time.time()
    torch.manual_seed(args.seed)
    out = {"model": args.model, "data": args.data, "split": args.split, "attack": args.attack, "seed": args.seed}
    if args.data == "world":
        from .world import World

        world = World(seed=args.seed)
        args.n = 1024 if args.n is None else args.n
        _check_count("--n", args.n, bytes_each=2 * 3 * world.config.image_size ** 2)
        lm = load_model(args.model, args.device, cache=args.cache_dir)
        kind = {"none": "object", "typographic": "typographic", "note": "typographic_note"}[args.attack]
        data = world.generate(args.n, args.split, kind)
        images, classes = data.images, world.classes
        true = data.labels("class_name", classes)
        written = data.labels("text", classes) if args.attack != "none" else None
    else:  # an image folder or a real typographic set: the layout is checked before any model is loaded
        from .data.sets import eval_arrays, eval_layout
        from .models.inputs import preprocess_stats

        from .data.builders import check_image_size

        eval_layout(args.data, args.attack)
        check_image_size(args.image_size, "--image-size")
        if args.n is not None:
            _check_count("--n", args.n)

        if args.image_size is None:  # the model's input size, read from its config without loading weights
            lm = load_model(args.model, args.device, cache=args.cache_dir)
            size = preprocess_stats(lm.model)[2]
        else:
            lm, size = None, args.image_size
        arr = eval_arrays(args.data, args.attack, size=size, n=args.n, seed=args.seed,
                          classes_file=args.classes_file)
        lm = lm or load_model(args.model, args.device, cache=args.cache_dir)
        images, classes, true, written = arr["images"], arr["classes"], arr["true"], arr.get("written")
        out.update(split=None, layout=arr["layout"], skipped_corrupt=len(arr["skipped_corrupt"]))
    logits = zero_shot_logits(lm.model, lm.tokenizer, images, classes)
    out.update(n=int(len(images)), top1=top1(logits, true))
    if written is not None:
        from .evaluation.typographic import typo_scores

        out["attack_success"] = typo_scores(logits, true, written)["attack_success_rate"]
    out["seconds"] = round(time.time() - t0, 3)
    print(json.dumps(out))
    return 0


def _pretrain(args) -> int:
    from .config import load_yaml
    from .fileio import cache_dir, check_writable_dir
    from .models import set_default_tiny_key, tiny_weights_key, tiny_weights_path
    from .models.loading import WEIGHTS_DIR, check_device
    from .training.pretrain import ensure_tiny_weights, pretrain_config

    from .models import TINY_MODELS

    cfg = pretrain_config(args.profile, model_name=TINY_MODELS[args.model])
    if args.config:
        cfg = load_yaml(cfg, args.config)
    if cfg.device:
        check_device(cfg.device)
    if not args.ship:
        check_writable_dir(cache_dir(args.cache_dir), "--cache-dir")
    key = tiny_weights_key(cfg)
    path, exists = tiny_weights_path(key, args.cache_dir, cfg.model_name)
    if exists and not args.force:
        print(json.dumps({"weights": str(path), "trained": False}))
        return 0
    path = ensure_tiny_weights(cfg, WEIGHTS_DIR if args.ship else args.cache_dir, progress=not args.no_progress,
                               force=True)
    if args.ship:  # `tiny` now means these weights (weights/index.json)
        set_default_tiny_key(key, cfg.model_name)
    log = json.loads(path.with_suffix(".json").read_text())
    print(json.dumps({"weights": str(path), "trained": True, "pretrain_seconds": log["pretrain_seconds"],
                      **log.get("final", {})}))
    return 0


def _train_po_config(args):
    """Everything train-po can check before minutes of data building and training: seed, counts, image size and
    data folder, the config (profile, YAML, trackers), the device and --out / --resume. Returns (cfg, device)."""
    from pathlib import Path

    from .config import check_seed, load_yaml
    from .data.builders import check_image_size
    from .fileio import check_writable_dir
    from .models.loading import check_device
    from .training.po_trainer import po_config
    from .training.tracking import check_trackers

    check_seed("--seed", args.seed)
    for opt, v in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--k", args.k)):
        _check_count(opt, v)
    if args.data != "world":
        check_image_size(args.image_size, "--image-size")
        if not Path(args.data).is_dir():
            raise FileNotFoundError(f"--data {args.data}: no such folder; pass 'world' or an image-folder root laid "
                                    f"out as root/<class>/<image>.jpg|png")
    cfg = po_config(args.profile, method=args.method)
    if args.config:
        cfg = load_yaml(cfg, args.config)
    if args.report_to:
        cfg = dataclasses.replace(cfg, report_to=tuple(args.report_to))
    if cfg.report_to and args.out is None:
        raise ValueError(f"--report-to {' '.join(cfg.report_to)} needs --out (events go to OUT/tensorboard)")
    check_trackers(cfg.report_to, args.out)
    device = check_device(cfg.device)
    if args.out is not None:
        out = Path(args.out)
        check_writable_dir(out, "--out")
        previous = [f for f in ("checkpoint.pt", "log.json", "raw", "avg") if (out / f).exists()]
        if previous and not (args.resume or args.overwrite):
            raise ValueError(f"--out {out} already holds a run ({', '.join(previous)}): pass --resume to continue "
                             f"it, --overwrite to replace it, or another --out")
        if args.resume and not (out / "checkpoint.pt").is_file():
            raise ValueError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}, nothing to resume (checkpoints are "
                             f"written every checkpoint_every steps, now {cfg.checkpoint_every}); run without --resume")
    elif args.resume:
        raise ValueError("--resume needs --out (the folder that holds checkpoint.pt)")
    return cfg, device


def _train_po(args) -> int:
    import torch

    from .data.sets import AttackSetsConfig, attack_arrays
    from .evaluation.classifier import memo_classifier
    from .evaluation.typographic import po_eval
    from .fileio import cache_dir
    from .models import load_model
    from .training.po_trainer import train_po
    from .world import World

    cfg, device = _train_po_config(args)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # launched by torchrun: the backend follows the training device
        import torch.distributed as dist

        from .parallel import distributed_backend

        dist.init_process_group(distributed_backend(device))
    lm = load_model(args.model, device, cache=args.cache_dir)
    world = World(seed=args.seed) if args.data == "world" else None
    storage = args.storage if args.storage != "auto" else ("memory" if world is not None else "disk")
    if world is not None and storage == "memory":
        _check_count("--n-train", args.n_train * (1 + args.k), bytes_each=3 * world.config.image_size ** 2)
    size = None if world else args.image_size
    classes, data, builds = attack_arrays(args.data, world=world, n_train=args.n_train, n_test=args.n_test,
                                          cfg=AttackSetsConfig(k=args.k, seed=args.seed, image_size=size,
                                                               word_frac=args.heldout_word_frac),
                                          root=cache_dir(args.cache_dir) / "datasets",
                                          classes_file=args.classes_file, progress=not args.no_progress,
                                          storage=storage)
    skipped = _report_skipped(builds, args.data)
    res = train_po(lm.model, lm.tokenizer, classes, data["train"], cfg, out_dir=args.out, resume=args.resume,
                   progress=not args.no_progress, model_name=lm.name)
    rank = torch.distributed.get_rank() if distributed else 0
    if rank == 0:
        out = {"method": cfg.method, "steps": res.steps, "train_seconds": round(res.train_seconds, 2),
               "final_loss": res.log[-1]["loss"], "out": args.out, "skipped_corrupt": len(skipped)}
        if not args.no_eval:
            ref = memo_classifier(lm.model, lm.tokenizer, classes, cfg.templates)  # its features: once for both
            out["raw"] = po_eval(res.model, lm.tokenizer, classes, data, ref, cfg.templates)
            out["avg"] = po_eval(res.avg_model, lm.tokenizer, classes, data, ref, cfg.templates)
        print(json.dumps(out))
    if distributed:
        torch.distributed.destroy_process_group()
    return 0


def _report_skipped(builds: dict, data: str) -> list[str]:
    """The unreadable source images that building the sets skipped, said in one line on stderr."""
    skipped = sorted({s for b in builds.values() for s in b.skipped_corrupt})
    if skipped:
        print(f"clipwb train-po: skipped {len(skipped)} unreadable image(s) under --data {data} (e.g. "
              f"{'; '.join(skipped[:3])}); training on the rest", file=sys.stderr)
    return skipped


def _build_typo(args) -> int:
    from pathlib import Path

    from .data.sets import AttackSetsConfig, build_attack_sets, source_items
    from .fileio import check_writable_dir
    from .world import World

    from .config import check_seed
    from .data.builders import check_image_size

    check_seed("--seed", args.seed)
    if args.data != "world":
        check_image_size(args.image_size, "--image-size")
    for opt, v in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--k", args.k), ("--k-test", args.k_test)):
        _check_count(opt, v)
    if args.data != "world" and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such folder; pass 'world' or an image-folder root laid out "
                                f"as root/<class>/<image>.jpg|png")
    out = Path(args.out)
    check_writable_dir(out, "--out")
    cfg = AttackSetsConfig(k=args.k, k_test=args.k_test, seed=args.seed, word_frac=args.heldout_word_frac,
                           image_size=None if args.data == "world" else args.image_size, note=not args.no_note)
    world = World(seed=args.seed) if args.data == "world" else None
    train, test, classes = source_items(args.data, world=world, n_train=args.n_train, n_test=args.n_test,
                                        classes_file=args.classes_file, seed=args.seed, progress=not args.no_progress)
    builds = build_attack_sets(train, test, classes, out, cfg, world=world, progress=not args.no_progress)
    print(json.dumps({name: {"dir": str(b.out_dir), "manifest": str(b.out_dir / "manifest.csv"), "n_images": b.n_images,
                             "n_variants": b.n_variants, "skipped_corrupt": len(b.skipped_corrupt),
                             "reused": b.already_done, "build_seconds": round(b.build_seconds, 2)}
                      for name, b in builds.items()}))
    return 0


def _report(args) -> int:
    from .reports import NotebookFailed, run_reports

    try:
        results = run_reports(args.out, args.profile, only=args.only, html=not args.no_html,
                              progress=not args.no_progress)
    except NotebookFailed as e:
        print(f"[clipwb report] FAILED: {e}", file=sys.stderr)
        print("[clipwb report] reports written before this notebook are unchanged", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.name}: {r.seconds:.0f} s, {len(r.files)} files")
    return 0


def _age(text: str) -> float:
    """``--older-than``: a number of days, or a number with s, m, h, d or w (``90m``, ``12h``, ``7d``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    t = text.strip().lower()
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "d")
    try:
        v = float(num)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise ValueError(f"--older-than {text!r}: expected a non-negative age such as 7d, 12h, 90m or 30 (days)")
    return v * units[unit]


def _cache(args) -> int:
    from . import cache as C

    older = _age(args.older_than) if args.older_than is not None else None
    root = C.run_dir(args.cache_dir)
    if args.action == "clear":
        if args.kind is None and older is None and not args.bad and not args.all:
            raise ValueError("clear: name what to clear: --kind KIND, --older-than AGE, --bad, or --all")
        removed = C.clear(args.cache_dir, args.kind, older, args.bad)
        print(f"removed {len(removed)} file(s) from {root}")
        return 0
    import time

    now, bad, total = time.time(), 0, 0
    for e in C.entries(args.cache_dir, args.kind):
        if older is not None and now - e.mtime < older:
            continue
        total += e.size
        why = C.verify(e) if args.action == "verify" else None
        bad += why is not None
        state = "" if args.action == "list" else ("ok" if why is None else f"BROKEN: {why}")
        print(f"{e.kind:24s} {e.size / 2 ** 20:9.2f} MB {(now - e.mtime) / 86400:7.1f} d  {e.path.name}  {state}".rstrip())
    temps = C.stale_temp_files(args.cache_dir)
    print(f"{root}: {total / 2 ** 20:.1f} MB" + (f", {bad} broken (clipwb cache clear --bad removes them)" if bad else "")
          + (f", {len(temps)} interrupted write(s)" if temps else ""))
    return 1 if bad else 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default in --help."""


def _add_common(p: argparse.ArgumentParser, cache: bool = True) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    if cache:
        p.add_argument("--cache-dir", default=None,
                       help="clipwb cache (tiny weights, datasets, runs); default $CLIPWB_CACHE or ~/.cache/clipwb")


def _add_data(p: argparse.ArgumentParser, n_train: int, n_test: int, k: int) -> None:
    """The source and attack options that train-po and build-typo share."""
    p.add_argument("--data", default="world", help="world, or an image-folder root (root/<class>/*.jpg|png)")
    p.add_argument("--classes-file", default=None,
                   help="image folders: class names, one per line in sorted folder order, or folder<TAB>name")
    p.add_argument("--image-size", type=int, default=224, help="image folders: resize + centre-crop side")
    p.add_argument("--n-train", type=int, default=n_train, help="training source images (image folders: at most)")
    p.add_argument("--n-test", type=int, default=n_test, help="held-out source images (image folders: at most)")
    p.add_argument("--k", type=int, default=k, help="typographic variants per training image")
    p.add_argument("--heldout-word-frac", type=float, default=0.25,
                   help="share of class names held out as written words of the test_heldout set")


MODEL_HELP = "tiny | tiny-vit | NAME:TAG (e.g. ViT-B-32:openai, from the local cache) | NAME:/path/ckpt | /path/ckpt | " \
             "local-dir:DIR"


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", formatter_class=_Help,
                       help="zero-shot top-1 of any model on freshly generated held-out world images")
    e.add_argument("--model", default="tiny", help=MODEL_HELP)
    e.add_argument("--data", default="world",
                   help="'world' (generated held-out images), an image folder root/<class>/<image> (ImageNet-100 / "
                        "Food-101 layout) or a real typographic set (root/labels.csv: file,true,written)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="world split to generate")
    e.add_argument("--attack", default="none", choices=["none", "typographic", "note"],
                   help="typographic: a wrong class name written on every image; note: written on a paper patch "
                        "(real typographic sets: typographic, their own attack)")
    e.add_argument("--seed", type=int, default=0, help="world seed / image-folder sample and attack seed")
    e.add_argument("--n", type=int, default=None,
                   help="images to evaluate (world: to generate, default 1024; folders: a seeded sample, default all)")
    e.add_argument("--image-size", type=int, default=None,
                   help="image folders and real sets: resize + crop side (default: the model's input size)")
    e.add_argument("--classes-file", default=None, help="image folders: class names, one per folder (sorted order)")
    e.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available, else cpu)")
    _add_common(e)
    e.set_defaults(func=_eval)


def _add_pretrain(sub) -> None:
    t = sub.add_parser("pretrain", formatter_class=_Help,
                       help="pretrain the tiny CLIP on the embedded world (cached by config hash)")
    t.add_argument("--profile", default="full", choices=["full", "quick"],
                   help="full: the shipped weights' settings; quick: a seconds-long smoke run")
    t.add_argument("--model", default="tiny", choices=["tiny", "tiny-vit"],
                   help="tiny: the conv (modified ResNet) image tower; tiny-vit: the ViT image tower")
    t.add_argument("--config", default=None, help="YAML file of PretrainConfig overrides (option: value per line)")
    t.add_argument("--force", action="store_true", help="retrain even if weights exist")
    t.add_argument("--ship", action="store_true", help="write into clipwb/models/weights/ (the shipped copy)")
    _add_common(t)
    t.set_defaults(func=_pretrain)


def _add_train_po(sub) -> None:
    from .losses.po import po_methods

    po = sub.add_parser("train-po", formatter_class=_Help,
                        help="preference-optimisation training against typographic attacks (DPO, IPO, KTO, CE); "
                             "runs under torchrun for several processes")
    po.add_argument("--method", default="dpo", choices=list(po_methods()),
                    help="training objective (the registered PO methods, clipwb.losses.po.PO_METHODS)")
    po.add_argument("--profile", default="embedded", choices=["embedded", "reference"],
                    help="embedded: the tiny model's settings; reference: the paper's (Adamax 2e-5, 512 pairs)")
    po.add_argument("--config", default=None, help="YAML file of POConfig overrides (option: value per line)")
    po.add_argument("--model", default="tiny", help=MODEL_HELP)
    _add_data(po, n_train=4000, n_test=1024, k=3)
    po.add_argument("--seed", type=int, default=0, help="world and attack seed (the training seed is in the config)")
    po.add_argument("--out", default=None, help="checkpoints, log and the final models (raw/, avg/)")
    po.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (same config and data)")
    po.add_argument("--overwrite", action="store_true", help="replace a previous run in OUT")
    po.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    po.add_argument("--report-to", nargs="+", default=None, choices=["tensorboard"],
                    help="also log every step's scalars to these trackers (TensorBoard events in OUT/tensorboard; "
                         "needs pip install tensorboard)")
    po.add_argument("--storage", default="auto", choices=["auto", "memory", "disk"],
                    help="images in RAM, or written once to disk beside the build and read a batch at a time "
                         "(memory bounded by a batch; auto: disk for image folders, memory for the world)")
    _add_common(po)
    po.set_defaults(func=_train_po)


def _add_build_typo(sub) -> None:
    b = sub.add_parser("build-typo", formatter_class=_Help,
                       help="build the typographic sets (train, test, test_heldout with unseen fonts and words, "
                            "test_note) with their manifests into a folder; cached by config, resumable")
    b.add_argument("--out", required=True, help="folder for the sets (one subfolder per set and config hash)")
    _add_data(b, n_train=1000, n_test=256, k=1)
    b.add_argument("--k-test", type=int, default=1, help="typographic variants per held-out image")
    b.add_argument("--no-note", action="store_true", help="skip the note-style held-out set")
    b.add_argument("--seed", type=int, default=0, help="world and attack seed")
    _add_common(b, cache=False)
    b.set_defaults(func=_build_typo)


def _add_report(sub) -> None:
    r = sub.add_parser("report", formatter_class=_Help,
                       help="execute notebooks/NN_*.ipynb in order with papermill into reports/")
    r.add_argument("--profile", default="full", choices=["full", "quick"], help="notebook profile")
    r.add_argument("--out", default="reports", help="reports folder (figures/, metrics/, HTML)")
    r.add_argument("--only", nargs="+", default=None, metavar="NB",
                   help="run only these notebooks: numbers or names, e.g. --only 00 02 (default: all)")
    r.add_argument("--no-html", action="store_true", help="skip the HTML copies")
    _add_common(r, cache=False)
    r.set_defaults(func=_report)


def _add_cache(sub) -> None:
    c = sub.add_parser("cache", formatter_class=_Help,
                       help="list, verify (digest check) or clear the run cache's entries ($CLIPWB_CACHE/runs)")
    c.add_argument("action", choices=["list", "verify", "clear"],
                   help="list the entries, verify them against their digests (exit 1 if any is broken), or clear some")
    c.add_argument("--kind", default=None, help="only entries of this kind (e.g. po-run, ref-logprobs, gca)")
    c.add_argument("--older-than", default=None, metavar="AGE",
                   help="only entries older than AGE: 30 (days), 7d, 12h, 90m, 2w")
    c.add_argument("--bad", action="store_true", help="clear: the entries that fail verify")
    c.add_argument("--all", action="store_true", help="clear: every entry")
    _add_common(c)
    c.set_defaults(func=_cache)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipwb", description=__doc__, formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_eval, _add_pretrain, _add_train_po, _add_build_typo, _add_report, _add_cache):
        add(sub)
    return p


def _check_count(option: str, n: int, bytes_each: int = 0) -> None:
    """A count option must be >= 1 and, when it sizes arrays held in memory, fit in the memory available."""
    from .fileio import check_memory

    if n < 1:
        raise ValueError(f"{option} must be >= 1, got {n}")
    check_memory(n * bytes_each, f"{option} {n}", f"lower {option}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError
    from .models import ModelSpecError, WeightsNotCachedError

    if getattr(args, "no_progress", False):
        os.environ["CLIPWB_NO_PROGRESS"] = "1"
    try:
        return args.func(args)
    except (ModelSpecError, WeightsNotCachedError, ConfigError, ValueError, FileNotFoundError, FileExistsError,
            NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"clipwb {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
