"""Core: seeds and RNG state, devices, tensor files, the model registry. Depends on torch only."""
from learnkit.core.device import default_device, to_device
from learnkit.core.random import get_rng_state, set_rng_state, set_seed
from learnkit.core.registry import create_model, list_models, model_spec, register_model
from learnkit.core.serialization import atomic_write, load_tensors, save_tensors, sha256_file

__all__ = [
    "atomic_write", "create_model", "default_device", "get_rng_state", "list_models", "load_tensors",
    "model_spec", "register_model", "save_tensors", "set_rng_state", "set_seed", "sha256_file",
    "to_device",
]
