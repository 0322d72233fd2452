"""Checkpoints and outputs of a PO run (as open_clip_train's checkpoint handling): atomic checkpoints of the
trainable parameters, optimiser, BMA sums and log, the checked restore of one, the log files and the final models
in open_clip's format."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..fileio import atomic_write, atomic_write_text, check_writable_dir, clean_stale_temp_files
from .averaging import BMA
from .po_config import POConfig
from .distributed import Setup


def checkpoint_path(out_dir: Path | None, resume: bool, cfg: POConfig, rank: int) -> Path | None:
    """``out_dir/checkpoint.pt`` after checking the folder (and, to resume, that a checkpoint is there)."""
    if resume and out_dir is None:
        raise ValueError("resume needs out_dir (where the checkpoint is)")
    if out_dir is None:
        return None
    ckpt = out_dir / "checkpoint.pt"
    check_writable_dir(out_dir, "out_dir")
    if rank == 0:
        clean_stale_temp_files(out_dir)
    if resume and not ckpt.is_file():
        raise ValueError(f"nothing to resume: no checkpoint at {ckpt} (a run writes one every checkpoint_every "
                         f"steps; checkpoint_every={cfg.checkpoint_every}); run without resume to start at step 0")
    return ckpt



@dataclass
class Checkpoints:
    """Atomic checkpoints of a run (trainable parameters, optimiser, BMA sums, log, the run's identity) and the
    checked restore of one: a checkpoint of another model, data or config is refused."""
    path: Path | None
    out_dir: Path | None
    cfg: POConfig
    run_id: dict
    setup: Setup
    total: int
    fingerprint: list
    names: list[str]
    params: list[torch.Tensor]
    opt: torch.optim.Optimizer
    bma: BMA

    def save(self, step: int, log: list[dict]) -> None:
        if self.path is None or self.setup.rank != 0:
            return
        state = {"step": step, "total": self.total, "names": self.names, "fingerprint": self.fingerprint,
                 "params": {nm: p.detach().cpu() for nm, p in zip(self.names, self.params)},
                 "optimizer": self.opt.state_dict(), **self.bma.state(), "log": log,
                 "config": json.dumps(dataclasses.asdict(self.cfg), default=str),
                 "run": json.dumps(self.run_id), "precision": json.dumps(self.setup.prec.to_dict())}
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        write_log(self.out_dir, log)

    def restore(self) -> tuple[int, list[dict]]:
        """Load the checkpoint into the parameters, optimiser and BMA; returns (step, log) to go on from."""
        state = load_checkpoint(self.path, self.setup.device)
        check_same_run(self.path, json.loads(state.get("run", "{}")), self.run_id)
        if state["fingerprint"] != self.fingerprint or state["names"] != self.names or state["total"] != self.total:
            raise ValueError(f"cannot resume from {self.path}: it belongs to another model, data size or config; run "
                             f"without resume to start over, or pass another out_dir")
        with torch.no_grad():
            for nm, p in zip(self.names, self.params):
                p.copy_(state["params"][nm])
        self.opt.load_state_dict(state["optimizer"])
        self.bma.load(state, self.setup.device)
        return int(state["step"]), list(state["log"])



def save_outputs(out_dir: Path, log, cfg: POConfig, run_id: dict, setup: Setup, total: int, train_seconds: float,
                  models: tuple[nn.Module, nn.Module] | None, model_name: str, tokenizer=None) -> None:
    write_log(out_dir, log)
    atomic_write_text(out_dir / "run.json", json.dumps(
        {"config": dataclasses.asdict(cfg), "run": run_id, "precision": setup.prec.to_dict(),
         "compiled": setup.compiled, "steps": total,
         "train_seconds": train_seconds}, indent=1, default=str))
    if models is not None:
        from ..models.loading import save_model

        for sub, m, what in (("raw", models[0], "final weights"), ("avg", models[1], "Beta-weighted model average")):
            card = {"description": f"{model_name} fine-tuned against typographic attacks by clipwb ({cfg.method.upper()}, "
                                   f"{what}).",
                    "details": {"Method": cfg.method, "Trained": cfg.train, "Steps": total, "Seed": cfg.seed,
                                "Learning rate": cfg.lr, "Pairs per step": cfg.batch_size}}
            save_model(m, out_dir / sub, model_name, tokenizer=tokenizer, model_card=card)



def check_same_run(ckpt: Path, saved: dict, now: dict) -> None:
    if not saved:  # a checkpoint from before run identities were recorded: the fingerprint checks still apply
        return
    diff = [f"{k}={saved['config'].get(k)!r} -> {v!r}" for k, v in now["config"].items()
            if saved["config"].get(k) != v]
    if saved.get("data") != now["data"]:
        diff.append("the training data differ (images or labels)")
    if diff:
        raise ValueError(f"cannot resume from {ckpt}: it was written by a different run ({'; '.join(diff)}); "
                         f"run without resume to start over, or pass another out_dir")


def load_checkpoint(path: Path, device) -> dict:
    """torch.load(weights_only=True) with a clear error for a truncated or foreign file."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # zip/pickle errors of a truncated or non-checkpoint file
        raise ValueError(f"cannot read the checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]}): "
                         f"it is truncated or not a clipwb PO checkpoint; delete it and run without resume") from None
    if not isinstance(state, dict) or not {"step", "params", "optimizer"} <= set(state):
        raise ValueError(f"{path} is not a clipwb PO checkpoint; delete it and run without resume")
    return state


def write_log(out_dir: Path, log: list[dict]) -> None:
    import csv
    import io

    atomic_write_text(out_dir / "log.json", json.dumps(log))
    buf = io.StringIO()
    if log:
        wr = csv.DictWriter(buf, fieldnames=list(log[0]))
        wr.writeheader()
        wr.writerows(log)
    atomic_write_text(out_dir / "log.csv", buf.getvalue())
