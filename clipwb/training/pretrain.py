"""Pretraining the tiny CLIP on the embedded world: open_clip's CLIP and ClipLoss in a plain, seeded loop.

The run is a pure function of its PretrainConfig (and of clipwb-tiny.json): the world images are generated
from the config's seed, the model is initialised under ``torch.manual_seed(seed)``, the data order comes
from a numpy Generator of the same seed. The result is saved as an open_clip state dict (safetensors,
fp16 to keep the shipped file small) plus a JSON log (loss curve, zero-shot curve, seconds).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import profiles
from ..config import config_hash, with_overrides
from ..fileio import atomic_write_text, cache_dir
from ..precision import cpu_info, resolve_precision
from ..world import World, WorldConfig
from .schedule import warmup_cosine


@dataclass(frozen=True)
class PretrainConfig:
    model_name: str = "clipwb-tiny"
    world: WorldConfig = field(default_factory=WorldConfig)
    n_images: int = 80_000  # distinct world images generated once, then iterated in a seeded order
    steps: int = 2400
    batch_size: int = 128
    lr: float = 1.5e-3
    weight_decay: float = 0.1
    warmup: int = 100
    beta2: float = 0.98
    # curriculum, reading first: in the first ``early_steps`` steps this share of each batch is word-alone images
    early_steps: int = 600
    early_text_share: float = 0.5
    seed: int = 0
    # contrastive objective: open_clip's ClipLoss ("clip") or a GCA loss of losses/ot.py ("gca-uot", "gca-ince",
    # ...) on s = cos / gca_eps, symmetric over image->text and text->image; the GCA losses use the fixed
    # temperature gca_eps (the RINCE terms grow like exp(q / eps)), so the learned logit_scale is unused by them
    loss: str = "clip"
    gca_eps: float = 0.25
    gca_iters: int = 10
    gca_rho: float = 0.2
    gca_r2: float = 0.02  # weight of GCA-UOT's RINCE term (the authors' 0.02; 0 keeps its cross-entropy only)
    # distillation from a trained tiny model (a model spec, e.g. "tiny"; "" trains from captions alone): the
    # student takes the teacher's text tower and logit scale, frozen (one shared text space), and its image
    # embedding is pulled towards the teacher's image embedding of the same image, with weight distill_weight on
    # the cosine distance, beside the contrastive loss against the captions
    teacher: str = ""
    distill_weight: float = 10.0
    # continued pretraining: the weights key of a trained model of the same ``model_name`` to start from (shipped
    # or in the cache: clipwb-<model>-<key>.safetensors), with a fresh warm-up and cosine over ``steps``; "" starts
    # from open_clip's random initialisation. The key names the starting weights exactly, so it is hashed.
    init: str = ""
    # below: bookkeeping that does not change the weights (left out of the hash)
    eval_every: int = 400
    eval_n: int = 256
    workers: int = 2
    device: str | None = None  # None: cuda if available, else cpu
    # "auto": bf16 autocast + channels-last where measured faster (2x on CPUs with AVX512-BF16/AMX, and GPUs),
    # fp32 elsewhere (bf16 is ~20x slower on AVX2-only CPUs); fp32 master weights and optimiser either way.
    # The shipped weights were made in bf16 (their JSON log records it); fp32 gives slightly different weights.
    precision: str = "auto"

    def __post_init__(self):
        from ..precision import check_precision

        check_precision(self.precision)
        for name in ("n_images", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "early_steps", "eval_every", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.distill_weight < 0:
            raise ValueError(f"distill_weight must be >= 0, got {self.distill_weight}")
        if not 0 <= self.early_text_share <= 1:
            raise ValueError(f"early_text_share must lie in [0, 1], got {self.early_text_share}")

    def weights_hash(self, model_cfg: dict) -> str:
        """The key of the cached / shipped weights: model config + every field that changes the weights.

        Adding a field to PretrainConfig or WorldConfig changes this hash and so orphans the shipped weights:
        add new fields to ``_OMIT_AT_DEFAULT`` (``_WORLD_OMIT_AT_DEFAULT`` for the world) below so that they
        count only when set to another value."""
        d = dataclasses.asdict(self)
        for k, default in _OMIT_AT_DEFAULT.items():
            if d.get(k) == default:
                d.pop(k)
        for k, default in _WORLD_OMIT_AT_DEFAULT.items():
            if d["world"].get(k) == default:
                d["world"].pop(k)
        for k in ("eval_every", "eval_n", "workers", "device", "precision"):
            d.pop(k)
        d.update(_REMOVED_FIELDS)
        return config_hash(model_cfg, d)


# fields added after the shipped weights were trained: {name: value that reproduces the old behaviour}
_OMIT_AT_DEFAULT: dict = {"loss": "clip", "gca_eps": 0.25, "gca_iters": 10, "gca_rho": 0.2, "gca_r2": 0.02,
                          "teacher": "", "distill_weight": 10.0, "init": ""}
# fields removed since, with their value then, so that the keys of weights trained before stay the same (the
# precision is now chosen per machine and recorded in the weights' JSON log, like the device)
_REMOVED_FIELDS: dict = {"channels_last": True, "autocast_bf16": True}
_WORLD_OMIT_AT_DEFAULT: dict = {"mix_sign": 0.0, "mix_object_other_text": 0.0, "text_other_share": 0.0,
                                "text_placement": "anywhere", "faint_hat_alpha": (0.3, 0.6)}

def pretrain_config(profile: str = "full", **overrides) -> PretrainConfig:
    """The pretraining config of ``profile``: the profile's settings, then its per-model ones for
    ``overrides["model_name"]`` (profiles' ``pretrain_models``: the ViT's longer curriculum), then ``overrides``."""
    base = profiles.profile("pretrain", profile)
    model = overrides.get("model_name", base.get("model_name", PretrainConfig.model_name))
    per_model = profiles.profile("pretrain_models", profile).get(model, {})
    return with_overrides(PretrainConfig(), {**base, **per_model, **overrides})


def _param_groups(named_params, weight_decay: float):
    # open_clip_train's rule: no weight decay on gains, biases, norms, logit_scale, embeddings of positions
    decay, no_decay = [], []
    for n, p in named_params:
        if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n or "positional" in n:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lr_at(step: int, cfg: PretrainConfig) -> float:
    return warmup_cosine(step, cfg.steps, cfg.lr, cfg.warmup)


def batch_schedule(cfg: PretrainConfig, kinds: np.ndarray, rng: np.random.Generator):
    """Seeded batch indices per step: epochs over permutations of the images, except that in the first
    ``early_steps`` steps a share ``early_text_share`` of each batch comes from the word-alone images
    (reading first: contrastive pretraining otherwise learns to read long after it learns shapes)."""
    order = np.concatenate([rng.permutation(cfg.n_images) for _ in range(
        math.ceil(cfg.steps * cfg.batch_size / cfg.n_images) + 1)])
    text_pool = np.flatnonzero(kinds == "text")
    n_early = int(round(cfg.batch_size * cfg.early_text_share)) if cfg.early_steps else 0
    if n_early and len(text_pool) == 0:
        raise ValueError("early_steps > 0 needs word-alone images: set world.mix_text > 0")
    text_order = np.concatenate([rng.permutation(text_pool) for _ in range(
        math.ceil(cfg.early_steps * n_early / max(len(text_pool), 1)) + 1)]) if n_early else text_pool

    def batch_indices(step: int) -> np.ndarray:
        k = n_early if step < cfg.early_steps else 0
        pos = step * cfg.batch_size - min(step, cfg.early_steps) * n_early  # cursor into the plain order
        return np.sort(np.concatenate([text_order[step * n_early:step * n_early + k],
                                       order[pos:pos + cfg.batch_size - k]]))

    return batch_indices


def contrastive_objective(cfg: PretrainConfig):
    """loss(image_features, text_features, logit_scale) for ``cfg.loss``."""
    import open_clip

    if cfg.loss == "clip":
        return open_clip.ClipLoss()
    from ..losses.ot import GCA_METHODS, clip_gca_loss

    if cfg.loss not in GCA_METHODS:
        raise ValueError(f"unknown pretraining loss {cfg.loss!r}; use 'clip' or one of {GCA_METHODS}")
    return lambda img, txt, scale: clip_gca_loss(img, txt, eps=cfg.gca_eps, method=cfg.loss, n_iters=cfg.gca_iters,
                                                 rho=cfg.gca_rho, r2=cfg.gca_r2)


def text_tower_keys(model) -> list[str]:
    """The state-dict keys of an open_clip CLIP's text tower and logit scale (everything but ``visual.*``)."""
    return [k for k in model.state_dict() if not k.startswith("visual.")]


def take_text_tower(student, teacher, freeze: bool = True) -> list[str]:
    """Copy the teacher's text tower (and logit scale) into the student; with ``freeze`` they stop training.
    Raises if the two text towers differ in shape (the student must use the same text config)."""
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    keys = text_tower_keys(student)
    bad = [k for k in keys if k not in t_sd or t_sd[k].shape != s_sd[k].shape]
    if bad or set(keys) != set(text_tower_keys(teacher)):
        raise ValueError(f"the teacher's text tower does not match the student's (first mismatch: "
                         f"{(bad or sorted(set(keys) ^ set(text_tower_keys(teacher))))[0]}): distil between models "
                         f"of the same text config")
    student.load_state_dict({k: t_sd[k] for k in keys}, strict=False)
    if freeze:
        for n, p in student.named_parameters():
            if not n.startswith("visual."):
                p.requires_grad_(False)
    return keys


@torch.no_grad()
def teacher_image_features(teacher, images: np.ndarray, prec, batch_size: int = 256, progress: bool = True):
    """The teacher's normalised image embeddings of every image (float32, on the CPU), computed once."""
    from ..models.inputs import images_to_tensor
    from ..progress import tqdm

    teacher.eval()
    out = []
    dev = next(teacher.parameters()).device
    for i in tqdm(range(0, len(images), batch_size), disable=not progress, desc="teacher embeddings"):
        x = images_to_tensor(images[i:i + batch_size], teacher).to(dev)
        with prec.autocast_ctx(dev):
            f = teacher.encode_image(x, normalize=True)
        out.append(f.float().cpu())
    return torch.cat(out)


def distill_loss(student_f: torch.Tensor, teacher_f: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance between student and teacher image embeddings (0 when they point the same way)."""
    return (1 - torch.nn.functional.cosine_similarity(student_f, teacher_f, dim=-1)).mean()


def init_weights(cfg: PretrainConfig) -> Path:
    """The weights file ``cfg.init`` names (shipped first, then the cache); raises, naming the fix, when absent."""
    from ..models.loading import tiny_weights_path

    path, exists = tiny_weights_path(cfg.init, None, cfg.model_name)
    if not exists:
        raise FileNotFoundError(f"init weights {cfg.model_name}-{cfg.init} not found (looked for {path.name} among "
                                f"the shipped weights and in the cache): pretrain them first, or set init to a key "
                                f"of clipwb/models/weights/index.json")
    return path


def pretrain(cfg: PretrainConfig, progress: bool = True, log_path: str | Path | None = None):
    """Train the tiny CLIP from scratch (or from the weights ``cfg.init`` names); returns (model, log dict).
    Deterministic for a given config."""
    import open_clip
    from ..progress import tqdm

    from ..evaluation.zeroshot import world_zero_shot_suite
    from ..models.inputs import images_to_tensor
    from ..models import register_configs

    register_configs()
    init_path = init_weights(cfg) if cfg.init else None  # before the data: a wrong key fails at once
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    world = World(cfg.world)
    data = world.generate(cfg.n_images, "train", None, progress=progress, workers=cfg.workers)
    tokenizer = open_clip.get_tokenizer(cfg.model_name)
    tokens = tokenizer(data.column("caption"))
    t_data = time.time() - t_start

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = open_clip.create_model(cfg.model_name, device=device,
                                   **({"pretrained": str(init_path)} if init_path else {}))
    prec = resolve_precision(cfg.precision, device, model=model)
    tokens = tokens.to(device)
    model = prec.layout(model)
    teacher_f = None
    if cfg.teacher:
        from ..models.loading import load_model

        teacher = load_model(cfg.teacher, device=device).model
        take_text_tower(model, teacher, freeze=True)
        teacher_f = teacher_image_features(teacher, data.images, prec, progress=progress)
        del teacher
    model.train()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(_param_groups(params, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-6)
    loss_fn = contrastive_objective(cfg)
    batch_indices = batch_schedule(cfg, np.array(data.column("kind")), rng)
    log = {"config": dataclasses.asdict(cfg), "step": [], "loss": [], "lr": [], "logit_scale": [],
           "eval": [], "data_seconds": t_data, "precision": prec.to_dict(), "cpu": cpu_info()["model"],
           # fp32 CPU results depend on the thread count (reduction order): exact reproduction needs the same one
           "torch_threads": torch.get_num_threads()}
    t_train = time.time()
    bar = tqdm(range(cfg.steps), disable=not progress, desc="pretrain tiny CLIP")
    for step in bar:
        idx = batch_indices(step)
        tidx = torch.from_numpy(idx).to(device)
        x = prec.layout(images_to_tensor(data.images[idx], model))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with prec.autocast_ctx(x.device):
            img_f, txt_f, scale = model(x, tokens[tidx])
        loss = loss_fn(img_f.float(), txt_f.float(), scale)
        if teacher_f is not None:
            d = distill_loss(img_f.float(), teacher_f[torch.from_numpy(idx)].to(device))
            log.setdefault("distill", []).append(d.item())
            loss = loss + cfg.distill_weight * d
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if model.logit_scale.requires_grad:
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
        log["step"].append(step)
        log["loss"].append(loss.item())
        log["lr"].append(opt.param_groups[0]["lr"])
        log["logit_scale"].append(model.logit_scale.exp().item())
        if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            ev = world_zero_shot_suite(model, tokenizer, world, n=cfg.eval_n, split="val")
            log["eval"].append({"step": step + 1, **ev})
            model.train()
            if log_path is not None:  # the curve so far, readable while a long run goes on
                atomic_write_text(log_path, json.dumps(log, indent=1))
            bar.set_postfix(loss=f"{loss.item():.3f}", clean=f"{ev['zero_shot_clean_top1']:.2f}",
                            typo=f"{ev['zero_shot_typo_top1']:.2f}", gender=f"{ev['gender_top1']:.2f}")
    log["train_seconds"] = time.time() - t_train
    log["pretrain_seconds"] = time.time() - t_start
    model.eval()
    model = model.to(memory_format=torch.contiguous_format).cpu()
    if log_path is not None:
        atomic_write_text(log_path, json.dumps(log, indent=1))
    return model, log



def ensure_tiny_weights(cfg: PretrainConfig | None = None, cache: str | Path | None = None, progress: bool = True,
                        force: bool = False, log_path: str | Path | None = None) -> Path:
    """Path to the tiny CLIP weights of ``cfg`` (default: ``PretrainConfig()``), pretraining them first if they
    exist neither shipped nor in the cache dir ``cache`` (or always, with ``force``: the new file goes into
    ``cache``, a shipped copy elsewhere is kept). The only place that trains weights for loading; the log beside
    them ends with the zero-shot suite of the saved (fp16-rounded) file, reloaded as any user would. ``log_path``:
    where the curve so far is written at every evaluation while a long run goes on (``pretrain``'s)."""
    import open_clip

    from ..evaluation.zeroshot import world_zero_shot_suite
    from ..models.loading import register_configs, save_state_dict, tiny_weights_key, tiny_weights_path

    cfg = cfg or PretrainConfig()
    path, exists = tiny_weights_path(tiny_weights_key(cfg), cache, cfg.model_name)
    if exists and not force:
        return path
    path = cache_dir(cache) / path.name
    model, log = pretrain(cfg, progress=progress, log_path=log_path)
    save_state_dict(model, path, half=True)
    register_configs()
    m = open_clip.create_model(cfg.model_name, pretrained=str(path))
    ev = world_zero_shot_suite(m, open_clip.get_tokenizer(cfg.model_name), World(cfg.world), n=1024, split="test")
    log["final"] = ev
    atomic_write_text(path.with_suffix(".json"), json.dumps(log, indent=1))
    return path
