"""The run record (`run.json`) that `learnkit demo` and `learnkit train` write beside their plots and model: what
ran, on which data (with digests), with which versions and device, the metrics and history, and the seconds.

Example:
    >>> write_run_record(out, "train", learn, {"args": {...}, "lr": 1e-3}, {"fit": 12.3}, started, ["loss.png"])
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from learnkit.core.device import versions
from learnkit.core.serialization import atomic_write, sha256_file

__all__ = ["final_metrics", "fingerprint", "write_run_record"]


def final_metrics(learn: Any) -> dict[str, Any]:
    """The last epoch's losses and metrics (without its epoch number and time)."""
    records = learn.history.epoch_records
    return {k: v for k, v in (records[-1] if records else {}).items() if k not in ("epoch", "time")}


def fingerprint(path: Path) -> str:
    """sha256 of a file's bytes; for a folder, sha256 over its sorted relative file names and sizes (cheap)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\t{f.stat().st_size}\n".encode())
    return h.hexdigest()


def write_run_record(out: Path, command: str, learn: Any, fields: dict[str, Any], seconds: dict[str, float],
                     started: float, files: list[str]) -> dict[str, Any]:
    """Write `out/run.json` atomically and return the record.

    Every record has: command, the command's own `fields` (arguments, data, lr, ...), versions, device, the final
    metrics, the epoch history, seconds (`seconds` plus the total since `started`, a `time.perf_counter()` value)
    and the files written (`files` plus run.json).
    """
    record = {"command": command, **fields, "versions": versions(), "device": str(learn.data.device),
              "metrics": final_metrics(learn), "history": learn.history.epoch_records,
              "seconds": {**{k: round(v, 3) for k, v in seconds.items()},
                          "total": round(time.perf_counter() - started, 3)},
              "files": list(files) + ["run.json"]}
    with atomic_write(Path(out) / "run.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return record
