"""Model specs -> open_clip models: the tiny embedded CLIP, open_clip name:tag, local checkpoints."""
from .loading import (CONFIG_DIR, TINY_MODELS, TINY_NAME, WEIGHTS_DIR, LoadedModel, ModelSpecError, WeightsNotCachedError,
                      default_tiny_key, load_model, parse_spec, register_configs, save_model, save_state_dict,
                      set_default_tiny_key, tiny_model_config, tiny_weights_key, tiny_weights_path)

__all__ = ["load_model", "save_model", "save_state_dict", "parse_spec", "register_configs", "default_tiny_key",
           "set_default_tiny_key", "tiny_weights_key", "tiny_weights_path", "tiny_model_config", "LoadedModel",
           "ModelSpecError", "WeightsNotCachedError", "TINY_NAME", "TINY_MODELS", "CONFIG_DIR", "WEIGHTS_DIR"]
