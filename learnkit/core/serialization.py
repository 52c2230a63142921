"""Tensor files without pickle (the safetensors layout, written here), atomic writes that leave no temp files,
reads that accept regular files only, and file hashes.

The layout: 8 bytes little-endian header length, a JSON header naming each tensor's dtype, shape and
byte range, then the raw little-endian bytes. Reading it runs no code from the file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import struct
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FROM_NAME = {v: k for k, v in _DTYPES.items()}
# dtype names a config file (a recipe) may use: looked up here, never with getattr(torch, name).
DTYPE_NAMES = {str(d).split(".")[-1]: d for d in _DTYPES}


def dtype_from_name(name: Any, where: str = "config") -> torch.dtype:
    """The torch dtype called `name` ('float32', 'uint8', ...) from a fixed allow-list; ValueError otherwise."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"{where}: dtype {name!r} is not one of {sorted(DTYPE_NAMES)}")
    return DTYPE_NAMES[name]
_MAX_HEADER = 100 * 2**20


_TMP_SUFFIX = ".learnkit-tmp"
# `.<name>.<pid>-<token>.learnkit-tmp`: what `temp_path` makes (a file, or a bundle folder being written).
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]+" + re.escape(_TMP_SUFFIX) + "$")
# What older learnkit versions left (tempfile.mkstemp's `.<name>.XXXXXXXX.tmp`), removed for the same target.
_LEGACY_TMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh name beside `path` for writing it: `.<name>.<pid>-<token>.learnkit-tmp` (recognisable, so that
    `remove_stale_temps` can delete what a killed process left)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}")


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":
        # This process (maybe another thread is writing): never remove. On Windows os.kill(pid, 0) would
        # terminate the process, so nothing is treated as stale there.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Delete the learnkit temp files and folders in `folder` whose writing process no longer runs (it was
    killed mid-write), and older learnkit versions' `.<target>.XXXXXXXX.tmp` files for `target`.

    Returns:
        What was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        stale = match is not None and not _alive(int(match["pid"]))
        legacy = target is not None and (m := _LEGACY_TMP.match(entry.name)) is not None and m["name"] == target
        if not (stale or legacy):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass  # removed concurrently, or not ours to remove: leave it
    return removed


def disk_error(e: OSError, path: str | os.PathLike, what: str = "the previous file there (if any)") -> OSError:
    """`e` again, as one sentence naming `path` (not the temp file) and saying that `what` is untouched."""
    why = "no space left on device" if e.errno in _DISK_FULL else (e.strerror or str(e))
    fix = "free some space" if e.errno in _DISK_FULL else "fix the cause"
    return OSError(e.errno, f"could not write {path}: {why}; {what} is untouched. Fix: {fix} and run again")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path` in one step.

    A crash or an exception (KeyboardInterrupt included) leaves any earlier file at `path` untouched and no
    partial file behind; what a killed process left (`.<name>.<pid>-<token>.learnkit-tmp`) is removed at the
    next write into the same folder. An `OSError` (e.g. a full disk) is re-raised naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp = temp_path(path)
    try:
        # O_EXCL: a fresh file; mode 0o666 minus the umask, the mode a plain open() would give.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        yield tmp
        if path.exists():  # keep the old file's mode
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None:
            raise
        raise disk_error(e, path) from e
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def check_regular_file(path: str | os.PathLike, max_bytes: int | None = None, what: str = "file",
                       fd: int | None = None) -> int:
    """The size of `path` (by `os.stat`, or `os.fstat(fd)`) after checking that it is a regular file (not a FIFO,
    device, socket or folder, which could hang or exhaust a reader) of at most `max_bytes`."""
    st = os.fstat(fd) if fd is not None else os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise ValueError(f"{path}{link} is {kind}, not a regular file; the {what} must be a plain file. "
                         "Replace it with the file written by learnkit")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValueError(f"{path} is {st.st_size} bytes, more than the {max_bytes} a {what} may have; "
                         "it is not a file learnkit wrote")
    return st.st_size


def read_regular_file(path: str | os.PathLike, max_bytes: int | None = None, what: str = "file",
                      expected_bytes: int | None = None) -> bytes:
    """The bytes of `path`, refusing anything but a regular file before reading (opened non-blocking, so a FIFO
    cannot hang the open) and any size above `max_bytes` or other than `expected_bytes`.

    Example:
        >>> raw = read_regular_file(folder / "recipe.json", max_bytes=16 * 2**20, what="bundle recipe")
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        size = check_regular_file(path, max_bytes, what, fd)
        if expected_bytes is not None and size != expected_bytes:
            raise ValueError(f"{path} is {size} bytes but {expected_bytes} were recorded when it was written: the "
                             f"{what} is {'truncated' if size < expected_bytes else 'damaged'}; write it again")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(size + 1)
    finally:
        os.close(fd)
    if len(data) != size:
        raise ValueError(f"{path} changed size while it was read ({size} -> {len(data)} bytes); read it again")
    return data


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Raise if a floating-point tensor holds NaN or infinity, naming the first such one."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and \
                not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{where}: parameter {name!r} holds {n_bad} NaN/inf value(s) of {t.numel()}: the "
                             "model diverged, and would predict garbage. Fix: train again with a lower learning "
                             "rate (or gradient clipping), or load an earlier checkpoint, then export")


_BYTES_TAG = "$fsencoded"


def to_json_safe(value: Any) -> Any:
    """`value` with every str that holds lone surrogates (a file name's undecodable bytes, as Python gives them)
    replaced by `{"$fsencoded": "<hex of its bytes>"}`: lossless, and valid UTF-8 JSON. `from_json_safe` undoes it.

    Example:
        >>> to_json_safe(["caf\udcff", "plain"])
        [{'$fsencoded': '636166ff'}, 'plain']
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            try:
                return {_BYTES_TAG: value.encode("utf-8", "surrogateescape").hex()}
            except UnicodeEncodeError:
                raise ValueError(f"the text {value!r} holds a lone surrogate that is not an undecodable byte; "
                                 "it cannot be written as UTF-8. Rename it") from None
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_safe(v) for k, v in value.items()}
    return value


def from_json_safe(value: Any) -> Any:
    """Undo `to_json_safe`: `{"$fsencoded": hex}` back to the str with the same undecodable bytes."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(_BYTES_TAG), str):
            try:
                return bytes.fromhex(value[_BYTES_TAG]).decode("utf-8", "surrogateescape")
            except ValueError:
                raise ValueError(f"malformed {_BYTES_TAG} value {value[_BYTES_TAG]!r}") from None
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


def sha256_file(path: str | os.PathLike, chunk: int = 2**20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> None:
    """Write a name → tensor mapping as a safetensors file (atomically)."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"save_tensors: {name!r} is a {type(t).__name__}, not a tensor")
        if t.dtype not in _DTYPES:
            raise TypeError(f"save_tensors: {name!r} has dtype {t.dtype}, which the format cannot hold")
        data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        if sys.byteorder == "big":  # the format is little-endian
            raise RuntimeError("save_tensors: big-endian machines are not supported")
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a file written by `save_tensors` (or any safetensors file; regular files only). Errors name the file."""
    return tensors_from_bytes(read_regular_file(path, what="tensor file"), path, device)


def tensors_from_bytes(data: bytes, path: str | os.PathLike,
                       device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Parse the bytes of a safetensors file (read once, e.g. to hash and parse the same bytes); errors name `path`."""
    path = Path(path)
    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: not a valid tensor file ({why}); re-export it with learn.export()")
    if len(data) < 8:
        raise bad("file shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise bad(f"header length {n} does not fit in {len(data)} bytes")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad(f"header is a JSON {type(header).__name__}, not an object")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _FROM_NAME[info["dtype"]]
            begin, end = (int(v) for v in info["data_offsets"])
            shape = [int(s) for s in info["shape"]]
            if any(s < 0 for s in shape):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise bad(f"entry {name!r} is malformed") from None
        numel = 1
        for s in shape:
            numel *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not (0 <= begin <= end <= len(body)) or end - begin != numel * itemsize:
            raise bad(f"entry {name!r} has byte range {begin}..{end}, which does not match its shape {shape}")
        flat = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.uint8) if end > begin else \
            torch.empty(0, dtype=torch.uint8)
        out[name] = flat.view(dtype).reshape(shape).to(device)
    return out


def state_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
                   ) -> tuple[list[str], list[str], tuple[str, tuple, tuple] | None]:
    """How a state dict differs from the one a model expects: (missing keys, unexpected keys, the first shared
    key whose shape differs as (key, shape in `state`, expected shape), or None). Nothing is copied; bundle and
    checkpoint loads word their own errors from it."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    for key, value in expected.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            return missing, extra, (key, tuple(state[key].shape), tuple(value.shape))
    return missing, extra, None
