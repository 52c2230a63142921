"""Pretrained models by Hugging Face hub id: the standard hub cache (`models--org--name/snapshots/<rev>/`), the
offline flags, and one error style for "not cached and cannot download" shared by text (transformers) and vision
(timm). Downloads go through `huggingface_hub` (the `learnkit[hf]` extra); reading the cache needs nothing.

Example:
    >>> folder = resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2")   # doctest: +SKIP
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

__all__ = ["HF_EXTRA", "ModelNotCached", "cached_snapshot", "hub_cache_dir", "hub_offline", "looks_like_hub_id",
           "offline_flag",
           "not_cached_error", "resolve_model_dir"]

HF_EXTRA = 'pip install "learnkit[hf]"'
_TRUE = ("1", "true", "yes", "on")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class ModelNotCached(FileNotFoundError):
    """A hub model is not in the local cache and cannot be downloaded (offline, no network, or no such repo)."""


def hub_cache_dir() -> Path:
    """The hub cache folder, as huggingface_hub chooses it: HF_HUB_CACHE, else HF_HOME/hub, else
    XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or transformers' older TRANSFORMERS_OFFLINE) is set to 1/true/yes/on."""
    return offline_flag() is not None


def offline_flag() -> str | None:
    """The offline variable that is set, as errors name it ('HF_HUB_OFFLINE=1'), or None."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(key, "").strip().lower() in _TRUE:
            return f"{key}={os.environ[key].strip()}"
    return None


def looks_like_hub_id(name: str) -> bool:
    """'org/name' or 'name' made of letters, digits, '-', '_' and '.' (not a path that merely does not exist)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not name.endswith(".")


def _repo_folder(repo_id: str, cache: Path) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}"


def _has(folder: Path, required: Sequence[str | Sequence[str]]) -> bool:
    """Each entry of `required` is there: a file name, or a tuple of names of which one is enough."""
    return all(any((folder / f).exists() for f in ((r,) if isinstance(r, str) else r)) for r in required)


def cached_snapshot(repo_id: str, revision: str | None = None, cache: str | os.PathLike | None = None,
                    required: Sequence[str | Sequence[str]] = ("config.json",)) -> Path | None:
    """The snapshot folder of `repo_id` in the hub cache, or None when it is not there or lacks `required` (file
    names; a tuple entry: any one of its names).

    The revision is a commit hash or a ref (default 'main', read from `refs/<ref>`); without a ref file, the
    most recently written snapshot holding all of `required` is taken (a cache copied by hand).
    """
    folder = _repo_folder(repo_id, Path(cache) if cache is not None else hub_cache_dir())
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = revision or "main"
    commit = ref if _COMMIT.match(ref) else None
    if commit is None and (folder / "refs" / ref).is_file():
        commit = (folder / "refs" / ref).read_text().strip()
    candidates = [snapshots / commit] if commit else \
        sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in candidates if p.is_dir() and _has(p, required)), None)


def not_cached_error(repo_id: str, reason: str, what: str = "model", cache: Path | None = None) -> ModelNotCached:
    """The one error for a hub model that is neither cached nor downloadable: the id, the folder looked in, why,
    and the command that fetches it on a machine with network."""
    cache = cache if cache is not None else hub_cache_dir()
    return ModelNotCached(
        f"{what} {repo_id!r} is not in the Hugging Face cache ({_repo_folder(repo_id, cache)}) and cannot be "
        f"downloaded: {reason}. On a machine with network run `hf download {repo_id}` (huggingface_hub's CLI; "
        f"it fills ~/.cache/huggingface/hub), then copy its folder models--{repo_id.replace('/', '--')} into "
        f"{cache} here (or set HF_HUB_CACHE to where it is), or pass the model's local folder instead of the id.")


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None,
                      allow_patterns: Sequence[str] | None = None, what: str = "model",
                      required: Sequence[str | Sequence[str]] = ("config.json",)) -> Path:
    """A local model folder for `name_or_path`: the folder itself, the hub cache's snapshot, or (online, with
    huggingface_hub installed) a download into that cache. HF_HUB_OFFLINE=1 never touches the network.

    Raises:
        ModelNotCached: not cached and offline, without network, or no such repo (message: id, cache folder,
            the `hf download` command).
        ImportError: not cached, online, but huggingface_hub is missing (names the `learnkit[hf]` extra).
        FileNotFoundError: neither a folder nor something that looks like a hub id.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if not looks_like_hub_id(name):
        raise FileNotFoundError(f"{what} {name!r}: no such folder, and not a Hugging Face hub id ('org/name')")
    found = cached_snapshot(name, revision, required=required)
    if found is not None:
        return found
    flag = offline_flag()
    if flag is not None:
        partial = cached_snapshot(name, revision, required=())
        missing = [r if isinstance(r, str) else " or ".join(r) for r in required if partial and not _has(partial, [r])]
        raise not_cached_error(name, f"{flag} is set" + (f", and its cached snapshot {partial} lacks "
                                                         f"{'; '.join(missing)}" if missing else ""), what)
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"{what} {name!r} is not in the Hugging Face cache ({hub_cache_dir()}); downloading it "
                          f"needs huggingface_hub: {HF_EXTRA}") from None
    try:
        return Path(huggingface_hub.snapshot_download(name, revision=revision, allow_patterns=allow_patterns,
                                                      cache_dir=str(hub_cache_dir())))
    except Exception as e:  # offline, DNS, proxy, 401/404 (no such repo): each is "not downloadable"
        raise not_cached_error(name, f"the download failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                               what) from e
