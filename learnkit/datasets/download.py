"""Getting a registered data set onto disk: find each file (cache → mirror folder → package path → download),
verify it, convert the files into a temporary folder and rename that into the cache.

Downloads stream to `<file>.part`, resume with an HTTP Range request, and become `<file>` only once their
checksum matches; a mismatch deletes the download. The cache is `$LEARNKIT_HOME` (default `~/.learnkit`):
`downloads/<name>/<file>` for downloaded files, `datasets/<name>/` for converted data sets.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from learnkit.core.serialization import atomic_write
from learnkit.datasets.convert import CONVERTERS, unpack
from learnkit.datasets.registry import Checksum, Dataset, DatasetError, DatasetFile, dataset_info

__all__ = ["get_dataset", "dataset_home", "is_cached", "verify_file", "download_file", "MANIFEST"]

MANIFEST = "dataset.json"  # written last into a converted folder: its presence means "complete"
TIMEOUT = 30.0  # seconds without data before a connection counts as dropped
ATTEMPTS = 3  # tries per URL; each retry resumes from the bytes already received
_CHUNK = 2**16


def dataset_home(home: str | os.PathLike | None = None) -> Path:
    """The cache folder: `home`, else `$LEARNKIT_HOME`, else `~/.learnkit`."""
    return Path(home or os.environ.get("LEARNKIT_HOME") or "~/.learnkit").expanduser().resolve()


def is_cached(name: str, home: str | os.PathLike | None = None) -> bool:
    """Whether `get_dataset(name)` would return at once (the converted folder is complete)."""
    return (dataset_home(home) / "datasets" / name / MANIFEST).is_file()


# ---------------------------------------------------------------------------------------------- verification
def _hashes(path: Path) -> tuple[int, str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as f:
        while block := f.read(2**20):
            sha256.update(block)
            md5.update(block)
            size += len(block)
    return size, sha256.hexdigest(), md5.hexdigest()


def verify_file(path: str | os.PathLike, dfile: DatasetFile, what: str = "") -> Checksum:
    """The checksum of `dfile` that the file at `path` matches (size and every hash given).

    Raises:
        DatasetError: no match; the message names the file, the expected and the actual hashes.
    """
    size, sha256, md5 = _hashes(Path(path))
    for c in dfile.checksums:
        if c.size == size and c.sha256 in (None, sha256) and c.md5 in (None, md5):
            return c
    expected = " or ".join(c.describe() for c in dfile.checksums)
    raise DatasetError(f"checksum mismatch for {dfile.name} ({what or path}): expected {expected}; "
                       f"got sha256 {sha256}, md5 {md5} ({size} bytes)")


# ---------------------------------------------------------------------------------------------------- download
class _Interrupted(Exception):
    pass


def _fetch(url: str, part: Path, dfile: DatasetFile, progress: bool) -> None:
    """One HTTP request appending to (206) or restarting (200) `part`; _Interrupted if the body is cut short."""
    offset = part.stat().st_size if part.exists() else 0
    if offset >= dfile.size:  # complete (verified by the caller) or longer than any good copy: start again
        if offset == dfile.size:
            return
        part.unlink()
        offset = 0
    headers = {"User-Agent": "learnkit", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as resp:
        if resp.status == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            mode = "ab"
        elif resp.status == 200:  # the server ignored the Range header: the body is the whole file
            mode, offset = "wb", 0
        else:
            raise DatasetError(f"HTTP {resp.status} for {url} (Content-Range {resp.headers.get('Content-Range')!r})"
                               f" is not a usable answer to 'Range: bytes={offset}-'")
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else dfile.size
        bar = None
        if progress:
            from fastprogress.fastprogress import progress_bar
            bar = progress_bar(range(max(expected // 1024, 1)))
            bar.comment = f"KiB of {dfile.name}"  # an attribute: the console bar takes no comment= argument
            bar.update(0)
        done, limit = offset, max(c.size for c in dfile.checksums)
        with open(part, mode) as f:
            try:
                while block := resp.read(_CHUNK):
                    f.write(block)
                    done += len(block)
                    if done > limit:  # not the registered file, or a server that never stops: spare the disk
                        raise DatasetError(f"{url} sent more than the {limit} bytes registered for {dfile.name}")
                    if bar is not None:
                        bar.update(min(done // 1024, bar.total - 1))
            except (OSError, http.client.HTTPException) as e:  # reset connection, IncompleteRead, timeout
                raise _Interrupted(f"{type(e).__name__}: {e}") from e
            finally:
                if bar is not None:
                    bar.on_iter_end()
    if done < expected:
        raise _Interrupted(f"the connection closed after {done} of {expected} bytes")


def download_file(url: str, dest: str | os.PathLike, dfile: DatasetFile, progress: bool = True,
                  attempts: int = ATTEMPTS) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming a partial `.part` with 'Range: bytes=N-'.

    A transfer cut short is retried (resuming) up to `attempts` times; if it still fails the `.part` file is
    kept so that the next call resumes it. The finished file must match one of `dfile.checksums`, otherwise
    it is deleted and a `DatasetError` names the file and both hashes; on success `.part` is renamed to
    `dest` in one step.

    Example:
        >>> download_file(dfile.urls[0], "cache/a.csv", dfile)                        # doctest: +SKIP
    """
    _download(url, Path(dest), dfile, progress, attempts)
    return Path(dest)


def _download(url: str, dest: Path, dfile: DatasetFile, progress: bool, attempts: int) -> Checksum:
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    why = ""
    for attempt in range(attempts):
        try:
            _fetch(url, part, dfile, progress)
            break
        except DatasetError:
            part.unlink(missing_ok=True)
            raise
        except urllib.error.HTTPError as e:
            if e.code == 416 and part.exists():  # our .part does not fit the server's file: start over
                part.unlink()
                why = "HTTP 416 Range Not Satisfiable"
                continue
            raise DatasetError(f"HTTP {e.code} {e.reason} for {url}") from None
        except urllib.error.URLError as e:
            raise DatasetError(f"cannot download {url}: {e.reason}") from None
        except (_Interrupted, socket.timeout, ConnectionError, http.client.HTTPException) as e:
            why = str(e)
            time.sleep(0.2 * attempt)
    else:
        kept = part.stat().st_size if part.exists() else 0
        raise DatasetError(f"download of {url} failed after {attempts} attempt(s) ({why}); {kept} bytes are kept "
                           f"in {part}: run again to resume")
    try:
        checksum = verify_file(part, dfile, what=f"downloaded from {url}")
    except DatasetError as e:
        part.unlink()
        raise DatasetError(f"{e}; the download was deleted: run again, and if it fails again the file on the "
                           "server is not the registered one") from None
    os.replace(part, dest)
    return checksum


# ------------------------------------------------------------------------------------------------- get_dataset
def _mirror_dir(mirror: str | os.PathLike | None) -> Path | None:
    source = "the mirror argument" if mirror else "LEARNKIT_MIRROR"
    mirror = mirror or os.environ.get("LEARNKIT_MIRROR") or None
    if mirror is None:
        return None
    path = Path(mirror).expanduser()
    if not path.is_dir():
        raise DatasetError(f"the mirror folder {path} ({source}) does not exist or is not a folder")
    return path


def _plain_mode(folder: Path) -> None:
    """mkdtemp makes an owner-only folder; give it the mode a plain mkdir would have."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def _locate(ds: Dataset, dfile: DatasetFile, home: Path, mirror: Path | None, offline: bool,
            progress: bool) -> tuple[Path, str, Checksum]:
    """A verified local copy of `dfile` and where it came from, trying cache, mirror, package paths, URLs."""
    cached = home / "downloads" / ds.name / dfile.name
    looked = [str(cached)]
    if cached.is_file():
        try:
            return cached, "cache", verify_file(cached, dfile, "in the cache")
        except DatasetError:
            cached.unlink()  # ours and damaged: fetch it again
    candidates = [mirror / ds.name / dfile.name, mirror / dfile.name] if mirror else []
    candidates += [Path(p) for p in dfile.local_paths]
    for path in candidates:
        looked.append(str(path))
        if path.is_file():  # a mirror's or a package's file is never modified, only checked
            return path, str(path), verify_file(path, dfile, f"{path}; replace or remove that copy")
    if offline or not dfile.urls:
        hints = [ds.how_to_get] if ds.how_to_get else []
        hints.append(f"put the files in a mirror folder ({mirror or 'DIR'}/{ds.name}/ or {mirror or 'DIR'}/; "
                     "--mirror DIR or LEARNKIT_MIRROR)")
        if dfile.urls:
            hints.append(f"or go online (no --offline) to download {dfile.urls[0]}")
        reason = "offline" if dfile.urls else "it has no download URL"
        raise DatasetError(f"{ds.name}: no copy of {dfile.name} ({reason}); looked in {', '.join(looked)}"
                           f"{'' if mirror else ' (no mirror set)'}; get it with: {'; '.join(hints)}")
    errors = []
    for url in dfile.urls:
        try:
            return cached, url, _download(url, cached, dfile, progress, ATTEMPTS)
        except DatasetError as e:
            errors.append(str(e))
    raise DatasetError(errors[0] if len(errors) == 1 else " | ".join(errors))


def get_dataset(name: str, home: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
                offline: bool = False, progress: bool = True) -> Path:
    """The folder of a registered data set in learnkit's on-disk form, fetched and converted if needed.

    A complete converted folder in the cache is returned at once. Otherwise each file is taken, in this order,
    from the download cache, the mirror folder (`mirror`, else `$LEARNKIT_MIRROR`; files in `<mirror>/<name>/`
    or `<mirror>/`), the package path the registry names (e.g. Debian's `/usr/share/datasets/fashion-mnist`),
    and finally downloaded (unless `offline`). Every file is checked against the registry's checksums. The
    converter writes into a temporary folder, which is renamed to `<home>/datasets/<name>` when complete.

    Args:
        name: a registered name (`list_datasets()`, `learnkit datasets list`).
        home: the cache folder; default `$LEARNKIT_HOME`, else `~/.learnkit`.
        mirror: a folder holding the source files (offline copies).
        offline: never use the network; missing files are an error naming the places looked in.
        progress: fastprogress bars for downloads and conversion.

    Raises:
        KeyError: unknown name.
        DatasetError: a file cannot be found or downloaded, fails its checksum, or cannot be converted.

    Example:
        >>> folder = get_dataset("fashion-mnist")            # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())         # doctest: +SKIP
        ['LICENSE', 'classes.txt', 'dataset.json', 'labels.csv', 'train', 'valid']
    """
    ds = dataset_info(name)
    home = dataset_home(home)
    target = home / "datasets" / ds.name
    if (target / MANIFEST).is_file():
        return target
    if target.exists():
        raise DatasetError(f"{target} exists but is not a complete data set (no {MANIFEST}); remove it and run again")
    mirror_dir = _mirror_dir(mirror)
    files, record = {}, {}
    for dfile in ds.files:
        files[dfile.name], source, checksum = _locate(ds, dfile, home, mirror_dir, offline, progress)
        record[dfile.name] = {"source": source, **{k: v for k, v in vars(checksum).items() if v is not None}}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ds.name}.", suffix=".tmp", dir=target.parent))
    _plain_mode(tmp)
    try:
        try:
            if ds.converter is None:
                unpack(ds.files, files, tmp)
            else:
                convert = CONVERTERS[ds.converter] if isinstance(ds.converter, str) else ds.converter
                convert(files, tmp, progress)
        except (OSError, ValueError, EOFError) as e:
            raise DatasetError(f"{ds.name}: converting the files failed ({type(e).__name__}: {e})") from e
        manifest = {"name": ds.name, "licence": ds.licence, "layout": ds.layout, "homepage": ds.homepage,
                    "converter": getattr(ds.converter, "__qualname__", ds.converter), "files": record,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with atomic_write(tmp / MANIFEST) as path:
            path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

