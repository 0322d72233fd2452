"""Model specs -> open_clip models: the tiny embedded CLIP, open_clip name:tag, local checkpoints."""
from .loading import (CONFIG_DIR, TINY_NAME, WEIGHTS_DIR, LoadedModel, ModelSpecError, WeightsNotCachedError,
                      cache_dir, ensure_tiny_weights, load_model, parse_spec, register_configs, save_model,
                      save_state_dict, tiny_model_config, tiny_weights_path)

__all__ = ["load_model", "save_model", "save_state_dict", "parse_spec", "register_configs", "ensure_tiny_weights",
           "tiny_weights_path", "tiny_model_config", "cache_dir", "LoadedModel", "ModelSpecError",
           "WeightsNotCachedError", "TINY_NAME", "CONFIG_DIR", "WEIGHTS_DIR"]
