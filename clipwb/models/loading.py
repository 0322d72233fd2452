"""One entry point from a model spec to (model, preprocess, tokenizer), all through open_clip.

Specs
- ``tiny``: the embedded default, open_clip's CLIP built from ``configs/clipwb-tiny.json``; its weights come
  from the project's own pretraining (training/pretrain.py) and are looked up by the hash of the model
  config and the pretraining config, first among the weights shipped in ``clipwb/models/weights/``, then in
  the cache dir (``$CLIPWB_CACHE`` or ``~/.cache/clipwb``); ``weights/index.json`` names the default. Loading
  never trains: missing weights are an error naming ``python -m clipwb pretrain``.
- ``tiny-vit``: the same text tower with an open_clip ViT image tower (``configs/clipwb-tiny-vit.json``: 64 px,
  8 px patches (an 8 x 8 grid), width 128, 6 layers of 8 heads; 157 MFLOP per image against the conv tower's 145),
  pretrained the same way (``python -m clipwb pretrain --model tiny-vit``); its attention heads are what notebook 08
  reads. In the shipped curriculum it does not learn the world's objects or words (clean 0.24, word alone 0.13;
  4 px patches at width 64, the same FLOPs and twice the time, did worse: benchmarks/results/tiny_vit_patch*_pretrain_log.json).
- ``NAME:TAG`` (``ViT-B-32:openai``): an open_clip pretrained tag, resolved from the local HF hub cache or
  open_clip's URL cache *without touching the network*; if not cached, ``WeightsNotCachedError`` at once
  with instructions.
- ``NAME:/path/to/ckpt.pt`` (or .safetensors / .bin): open_clip architecture NAME with a local checkpoint.
- ``/path/to/ckpt.safetensors`` with an ``open_clip_config.json`` beside it, or ``local-dir:/folder``
  (open_clip's own format, as written by ``save_model``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write, atomic_write_text, cache_dir

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
TINY_NAME = "clipwb-tiny"
# the embedded world's models: spec -> open_clip config name (both pretrained by the project, weights shipped)
TINY_MODELS = {"tiny": TINY_NAME, "tiny-vit": "clipwb-tiny-vit"}
CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class ModelSpecError(ValueError):
    pass


class WeightsNotCachedError(FileNotFoundError):
    pass


_registered = False


def register_configs() -> None:
    """Make clipwb's JSON model configs known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def tiny_model_config(name: str = TINY_NAME) -> dict:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


@dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    name: str  # open_clip architecture name
    spec: str
    weights: str | None = None  # the file the weights came from
    info: dict = field(default_factory=dict)

    def __iter__(self):  # model, preprocess, tokenizer = load_model(...)
        return iter((self.model, self.preprocess, self.tokenizer))


INDEX_FILE = WEIGHTS_DIR / "index.json"


def default_tiny_key(name: str = TINY_NAME) -> str:
    """The weights key (config hash) that ``tiny`` means: the shipped default recorded in
    ``weights/index.json``, as open_clip's pretrained registry maps a tag to a file."""
    index = json.loads(INDEX_FILE.read_text()) if INDEX_FILE.is_file() else {}
    if name not in index:
        raise WeightsNotCachedError(f"{INDEX_FILE} names no default weights for {name}: train and ship them with "
                                    f"`python -m clipwb pretrain --ship`")
    return index[name]["default"]


def set_default_tiny_key(key: str, name: str = TINY_NAME) -> None:
    """Record ``key`` as the weights ``tiny`` means (``pretrain --ship`` does this), atomically."""
    index = json.loads(INDEX_FILE.read_text()) if INDEX_FILE.is_file() else {}
    index[name] = {"default": key, "file": f"{name}-{key}.safetensors"}
    atomic_write_text(INDEX_FILE, json.dumps(index, indent=1, sort_keys=True) + "\n")


def tiny_weights_key(pretrain_cfg) -> str:
    """The key of the weights a pretraining config makes: its ``weights_hash`` over the tiny model config."""
    return pretrain_cfg.weights_hash(tiny_model_config(pretrain_cfg.model_name))


def tiny_weights_path(key: str | None = None, cache: str | Path | None = None, name: str = TINY_NAME
                      ) -> tuple[Path, bool]:
    """(path, exists) of the tiny weights with this key (default: the index's): shipped file first, then the
    cache dir. Loading never trains: ``clipwb.training.pretrain.ensure_tiny_weights`` makes missing weights."""
    fname = f"{name}-{key or default_tiny_key(name)}.safetensors"
    shipped = WEIGHTS_DIR / fname
    if shipped.is_file():
        return shipped, True
    cached = cache_dir(cache) / fname
    return cached, cached.is_file()


def save_state_dict(model: torch.nn.Module, path: str | Path, half: bool = False) -> Path:
    """Write the model's state dict where open_clip's ``load_checkpoint`` reads it (.safetensors or .pt),
    atomically (temp file, then rename)."""
    path = Path(path)
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        return atomic_write(path, lambda tmp: save_file(sd, tmp))
    return atomic_write(path, lambda tmp: torch.save(sd, tmp))


def save_model(model: torch.nn.Module, out_dir: str | Path, name: str, preprocess_cfg: dict | None = None,
               model_cfg: dict | None = None, tokenizer=None, model_card: dict | None = None) -> Path:
    """Save in the Hugging Face hub layout that open_clip writes (``open_clip.push_to_hf_hub``):
    ``open_clip_config.json`` (model config + preprocess config: size, mean, std, interpolation, resize mode),
    ``open_clip_model.safetensors``, a model card ``README.md`` (open_clip's ``generate_readme``; ``model_card``
    adds a description and details) and, for a Hugging Face tokenizer, its files (``save_pretrained``; open_clip's
    own BPE tokenizer is rebuilt from the config's text settings and needs none). Returns the weights path.

    ``open_clip.create_model_and_transforms('local-dir:' + out_dir)`` / ``get_tokenizer('local-dir:' + out_dir)``,
    ``create_model_and_transforms(name, pretrained=out_dir/'open_clip_model.safetensors')`` and, once the folder
    is uploaded (``hf upload <user>/<repo> out_dir``, huggingface_hub >= 1.0), ``'hf-hub:<user>/<repo>'`` load it.
    ``model_cfg``: the architecture's open_clip config where ``name`` is not a registered one (a custom model).
    The legacy pickled ``open_clip_pytorch_model.bin`` is not written (safetensors only).
    """
    import importlib

    import open_clip

    register_configs()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = model_cfg or open_clip.get_model_config(name)
    if model_cfg is None:
        raise ModelSpecError(f"unknown open_clip model name {name!r}; pass its model_cfg for a custom model")
    pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    pp.update(preprocess_cfg or {})
    for key, attr in (("mean", "image_mean"), ("std", "image_std")):  # as open_clip's save_config_for_hf
        if key not in pp and getattr(model.visual, attr, None) is not None:
            pp[key] = list(getattr(model.visual, attr))
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": pp, "clipwb": {"model_name": name}}
    weights = save_state_dict(model, out_dir / "open_clip_model.safetensors")
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(out_dir)
    card = {"description": f"{name}, saved by clipwb in open_clip's Hugging Face hub layout.",
            "tags": ("clip", "clipwb"), **(model_card or {})}
    hub = importlib.import_module("open_clip.push_to_hf_hub")  # the package re-exports a function of that name
    atomic_write_text(out_dir / "README.md", hub.generate_readme(dict(card), name))
    atomic_write_text(out_dir / "open_clip_config.json", json.dumps(cfg, indent=2, default=list))
    return weights


LOCAL_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def check_device(device: str | torch.device | None) -> torch.device:
    """``device`` (None: cuda if available, else cpu) as a torch.device, or a clear error when it does not exist
    on this machine."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError) as e:
        raise ModelSpecError(f"unknown device {device!r} ({e}): use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelSpecError(f"device {device!r} asked for, but this machine has no usable CUDA GPU: use "
                                 f"--device cpu (or leave the device unset to pick cuda when there is one)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelSpecError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelSpecError(f"device {device!r} is not available on this machine: use cpu")
    return dev


def check_weights_file(path: Path) -> None:
    """Fail at once, naming the file, when a weights file is empty, truncated or not a checkpoint at all."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ModelSpecError(f"weights file {path} is empty: copy it again (a download or copy was interrupted?)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelSpecError(f"weights file {path} is not a readable safetensors file ({e}): it is truncated or "
                                 f"corrupt; copy it again") from None
    else:
        import zipfile

        with path.open("rb") as fh:
            head = fh.read(4)
        if head.startswith(b"PK") and not zipfile.is_zipfile(path):
            raise ModelSpecError(f"checkpoint {path} is a truncated torch zip archive: copy it again")
        if not head.startswith(b"PK") and head[:1] != b"\x80":
            raise ModelSpecError(f"checkpoint {path} is neither a torch checkpoint nor a safetensors file (it starts "
                                 f"with {head!r}): pass a .pt/.bin written by torch.save or a .safetensors file")


class _checkpoint_errors:
    """Turn open_clip's errors while loading weights into ModelSpecError naming the file and the architecture."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if e is None or isinstance(e, (ModelSpecError, KeyboardInterrupt)):
            return False
        msg = " ".join(str(e).split())[:240] if str(e) else type(e).__name__
        if isinstance(e, AssertionError) or isinstance(e, RuntimeError) and (
                "size mismatch" in str(e) or "Missing key" in str(e) or "Unexpected key" in str(e)):
            # open_clip asserts on mismatched position embeddings before load_state_dict reports the keys
            raise ModelSpecError(f"the weights in {self.path} do not fit the architecture {self.name} ({msg}): "
                                 f"they belong to another model; name the right architecture (NAME:{self.path})") \
                from None
        if isinstance(e, (RuntimeError, OSError, EOFError, ValueError, KeyError)) or \
                type(e).__module__.startswith(("pickle", "_pickle", "safetensors")):
            raise ModelSpecError(f"cannot load the weights in {self.path} into {self.name} "
                                 f"({type(e).__name__}: {msg})") from None
        return False


def _cached_pretrained_file(name: str, tag: str, cache: str | None) -> str | None:
    """The local file open_clip would use for (name, tag), or None; never touches the network."""
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if pcfg.get("file"):
        return pcfg["file"] if os.path.isfile(pcfg["file"]) else None
    hub = pcfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith(".bin"):
            names.insert(0, filename[:-4] + ".safetensors")
        for fn in names:
            hit = try_to_load_from_cache(repo_id, fn, cache_dir=cache)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = pcfg.get("url", "")
    if url:
        target = os.path.join(cache or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(target):
            return target
    return None


def _not_cached_message(name: str, tag: str, cache: str | None) -> str:
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(name, tag)
    where = []
    if pcfg.get("hf_hub"):
        where.append(f"the Hugging Face repo {pcfg['hf_hub'].rstrip('/')} (HF cache: {cache or '$HF_HOME/hub'})")
    if pcfg.get("url"):
        where.append(f"{pcfg['url']} (open_clip URL cache: {cache or '~/.cache/clip'})")
    return (f"weights for {name}:{tag} are not in the local cache and this machine does not download them.\n"
            f"Get them on a machine with network access, e.g.\n"
            f"  python -c \"import open_clip; open_clip.create_model_and_transforms('{name}', pretrained='{tag}')\"\n"
            f"then copy the cache over (or set HF_HOME / --cache-dir), or pass a checkpoint file directly as "
            f"'{name}:/path/to/weights.safetensors'. Sources: " + "; ".join(where))


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """spec -> (kind, name, path_or_tag) with kind in {tiny, local-dir, file, tag}."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("empty model spec; use 'tiny', 'NAME:TAG' (e.g. ViT-B-32:openai), "
                             "'NAME:/path/ckpt.pt', '/path/ckpt.safetensors' or 'local-dir:/folder'")
    spec = spec.strip()
    for short, full in TINY_MODELS.items():
        if spec in (short, full):
            return "tiny", full, None
    if spec.startswith("local-dir:"):
        return "local-dir", None, spec[len("local-dir:"):]
    if spec.startswith("hf-hub:"):
        raise ModelSpecError(f"{spec!r}: hf-hub specs download at load time; download the repo once elsewhere and "
                             f"pass it as 'local-dir:/folder', or use an open_clip NAME:TAG from the local HF cache")
    if spec.endswith(CKPT_SUFFIXES) and ":" not in spec.split("/")[0]:
        return "file", None, spec
    if ":" in spec:
        name, rest = spec.split(":", 1)
        if rest.endswith(CKPT_SUFFIXES) or "/" in rest or os.sep in rest:
            return "file", name, rest
        return "tag", name, rest
    raise ModelSpecError(
        f"cannot read model spec {spec!r}: use 'tiny', 'NAME:TAG' (e.g. ViT-B-32:openai), "
        f"'NAME:/path/ckpt.pt', '/path/ckpt.safetensors' (with open_clip_config.json beside it) "
        f"or 'local-dir:/folder'")


def read_open_clip_config(path: Path) -> dict:
    """An ``open_clip_config.json`` (the Hugging Face layout's config) as a dict, or a ModelSpecError naming the file
    when it is not valid JSON or not a JSON object (e.g. ``null`` after an interrupted write)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelSpecError(f"{path} is not valid JSON ({e}): write it again with clipwb.models.save_model (or "
                             f"open_clip's push_to_hf_hub layout)") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg", {}), dict):
        raise ModelSpecError(f"{path} holds {type(cfg).__name__ if not isinstance(cfg, dict) else 'a model_cfg'} "
                             f"that is not a JSON object: an open_clip config is an object with 'model_cfg' "
                             f"(and 'preprocess_cfg'); write it again with clipwb.models.save_model")
    return cfg


def _model_name(cfg: dict, default):
    meta = cfg.get("clipwb")
    return meta.get("model_name", default) if isinstance(meta, dict) else default


def _tiny_weights(name: str, pretrain_cfg, cache: str | None, info: dict) -> str:
    """The tiny model's weights file (shipped, or of ``pretrain_cfg`` in the cache dir); never trains."""
    if pretrain_cfg is not None and pretrain_cfg.model_name != name:
        raise ModelSpecError(f"pretrain_cfg is for {pretrain_cfg.model_name}, the spec names {name}")
    key = tiny_weights_key(pretrain_cfg) if pretrain_cfg is not None else default_tiny_key(name)
    path, exists = tiny_weights_path(key, cache, name)
    if not exists:
        raise WeightsNotCachedError(
            f"no pretrained tiny weights {path.name} (looked in {WEIGHTS_DIR} and {path.parent}): train them "
            f"with `python -m clipwb pretrain{' --model tiny-vit' if name != TINY_NAME else ''}` (--config FILE for a non-default PretrainConfig, --cache-dir "
            f"DIR for another cache) or clipwb.training.pretrain.ensure_tiny_weights(cfg)")
    log = path.with_suffix(".json")
    if log.is_file():
        info["pretrain_log"] = str(log)
    return str(path)


def _load_local_dir(folder: Path, spec: str, device, info: dict) -> LoadedModel:
    """``local-dir:FOLDER``: open_clip's Hugging Face layout (``open_clip_config.json`` + weights), checked first."""
    import open_clip

    cfg_file = folder / "open_clip_config.json"
    if not cfg_file.is_file():
        raise ModelSpecError(f"{folder} is not an open_clip local dir: expected {cfg_file} and "
                             f"open_clip_model.safetensors (write one with clipwb.models.save_model)")
    wfiles = [folder / f for f in LOCAL_DIR_WEIGHTS if (folder / f).is_file()]
    if not wfiles:
        # open_clip would build a randomly initialised model and say nothing
        raise ModelSpecError(f"{folder} has {cfg_file.name} but no weights ({' or '.join(LOCAL_DIR_WEIGHTS)}): "
                             f"a model without them is randomly initialised; copy the weights file into the "
                             f"folder (clipwb.models.save_model writes both)")
    cfgj = read_open_clip_config(cfg_file)
    check_weights_file(wfiles[0])
    name = _model_name(cfgj, "local-dir")
    with _checkpoint_errors(wfiles[0], name if name != "local-dir" else "the config's model"):
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    return LoadedModel(model, preprocess, tokenizer, name, spec, str(folder), info)


def load_model(spec: str = "tiny", device: str | torch.device | None = None, *, cache: str | None = None,
               pretrain_cfg=None) -> LoadedModel:
    """Model spec -> LoadedModel(model, preprocess, tokenizer, ...) in eval mode. See the module docstring.

    ``pretrain_cfg`` (``tiny`` only): the weights of that pretraining config instead of the shipped default.
    Loading never trains: missing tiny weights raise ``WeightsNotCachedError`` naming the command that makes
    them."""
    import open_clip

    register_configs()
    device = check_device(device)
    kind, name, arg = parse_spec(spec)
    info: dict = {"kind": kind}
    if kind == "tiny":
        weights = _tiny_weights(name, pretrain_cfg, cache, info)
    elif kind == "local-dir":
        return _load_local_dir(Path(arg), spec, device, info)
    elif kind == "file":
        path = Path(arg)
        if not path.is_file():
            raise ModelSpecError(f"checkpoint {path} does not exist")
        check_weights_file(path)
        if name is None:
            side = path.parent / "open_clip_config.json"
            name = _model_name(read_open_clip_config(side), None) if side.is_file() else None
            if name is None:
                raise ModelSpecError(f"{path}: which architecture? Write the spec as NAME:{path} (e.g. "
                                     f"ViT-B-32:{path}) or save with clipwb.models.save_model, which puts "
                                     f"open_clip_config.json beside the weights")
        weights = str(path)
    else:  # tag
        if name not in open_clip.list_models():
            raise ModelSpecError(f"unknown open_clip model {name!r} in spec {spec!r}; see open_clip.list_models()")
        tags = open_clip.list_pretrained_tags_by_model(name)
        if arg not in tags:
            raise ModelSpecError(f"unknown pretrained tag {arg!r} for {name}; known tags: {tags}")
        weights = _cached_pretrained_file(name, arg, cache)
        if weights is None:
            raise WeightsNotCachedError(_not_cached_message(name, arg, cache))
    if name not in open_clip.list_models():
        raise ModelSpecError(f"unknown open_clip model {name!r} in spec {spec!r}; see open_clip.list_models()")
    # a tag's own preprocessing (mean, std, interpolation, resize mode) and QuickGELU, as open_clip applies them
    # when it resolves the tag itself
    pcfg = open_clip.get_pretrained_cfg(name, arg) if kind == "tag" else {}
    with _checkpoint_errors(Path(weights), name):
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, device=device, force_quick_gelu=bool(pcfg.get("quick_gelu", False)),
            image_mean=pcfg.get("mean"), image_std=pcfg.get("std"), image_interpolation=pcfg.get("interpolation"),
            image_resize_mode=pcfg.get("resize_mode"))
    model.eval()
    return LoadedModel(model, preprocess, open_clip.get_tokenizer(name), name, spec, weights, info)

