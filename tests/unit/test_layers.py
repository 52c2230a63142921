"""The layer rule: imports only point left (core ← data ← optim ← learner ← callbacks ← vision | text ← datasets ← cli)."""
import ast
from pathlib import Path

import learnkit

ORDER = ["core", "data", "optim", "learner", "callbacks", "vision", "text", "datasets", "cli"]
ROOT = Path(learnkit.__file__).parent


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "learnkit" or len(parts) < 2:
        return None
    name = parts[1]
    return {"testing": "callbacks", "__main__": "cli", "cli_train": "cli", "cli_vision": "cli",
            "sklearn": "cli"}.get(name, name)


def test_imports_only_point_left():
    bad = []
    for file in ROOT.rglob("*.py"):
        rel = file.relative_to(ROOT)
        own = _layer("learnkit." + ".".join(rel.with_suffix("").parts))
        if own not in ORDER:
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                layer = _layer(target)
                if layer in ORDER and ORDER.index(layer) > ORDER.index(own):
                    bad.append(f"{rel} imports {target}")
                if {own, layer} == {"vision", "text"}:
                    bad.append(f"{rel} imports {target} (vision and text are independent)")
    assert not bad, bad


def test_public_api_is_explicit():
    assert "__all__" in vars(learnkit)
    for name in learnkit.__all__:
        assert hasattr(learnkit, name), name
    assert (ROOT / "py.typed").exists()


def test_modules_stay_under_budget():
    long = {str(f.relative_to(ROOT)): n for f in ROOT.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > 520}
    assert not long, long
