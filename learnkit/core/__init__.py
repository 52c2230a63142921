"""Core: seeds and RNG state, devices, tensor files, the model registry. Depends on torch only."""
from learnkit.core.device import amp_dtype, autocast, default_device, parse_mixed_precision, to_device, versions
from learnkit.core.hub import ModelNotCached, resolve_model_dir
from learnkit.core.random import get_rng_state, set_rng_state, set_seed
from learnkit.core.registry import create_model, list_models, model_spec, register_model
from learnkit.core.serialization import atomic_write, load_tensors, save_tensors, sha256_file

__all__ = [
    "amp_dtype", "atomic_write", "autocast", "create_model", "default_device", "get_rng_state", "list_models",
    "load_tensors", "model_spec", "parse_mixed_precision", "register_model", "save_tensors", "set_rng_state",
    "set_seed", "sha256_file", "to_device", "versions", "ModelNotCached", "resolve_model_dir",
]
