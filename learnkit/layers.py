"""The layer chain, written once: a module may import only from its own layer or layers to its left.
`tests/unit/test_layers.py` enforces it and docs/architecture.md quotes it."""
from __future__ import annotations

ORDER = ["version", "core", "data", "optim", "learner", "callbacks", "export", "vision", "text", "datasets",
         "cli", "learnkit"]

# Modules that are not packages, placed in a layer.
_PLACED = {"layers": "version", "testing": "export", "__main__": "cli", "sklearn": "cli"}

# The documented conveniences of the loop's room: `learn.export(...)` and the graph exports import the
# deployment layer lazily, inside the method, so that `learn.export("folder")` works without a second import.
ALLOWED_UPWARD = {("learnkit.learner.learner", "Learner.export"), ("learnkit.learner.learner", "Learner.export_torch"),
                  ("learnkit.learner.learner", "Learner.export_onnx")}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name inside learnkit ('learnkit' itself is the top layer), else None."""
    parts = module.split(".")
    if parts[0] != "learnkit":
        return None
    if len(parts) == 1:
        return "learnkit"
    return _PLACED.get(parts[1], parts[1])
