"""Getting a registered data set onto disk: find each file (cache → mirror folder → package path → download),
verify it, convert the files into a temporary folder and rename that into the cache.

Downloads stream to `<file>.part`, resume with an HTTP Range request, and become `<file>` only once their
checksum matches; a mismatch deletes the download. The cache is `$LEARNKIT_HOME` (default `~/.learnkit`):
`downloads/<name>/<file>` for downloaded files, `datasets/<name>/` for converted data sets.

A download is given up on, never waited for forever: a connection that brings fewer than `STALL_BYTES` in
`TIMEOUT` seconds is stalled (retried, resuming, `ATTEMPTS` times), and each file has an overall deadline for all
its attempts together (`download_deadline`: `max(DEADLINE_FLOOR, size / MIN_RATE)`, i.e. at least 10 minutes
and 50 KiB/s, or `deadline=` / `$LEARNKIT_DOWNLOAD_DEADLINE` seconds). Either way the bytes received stay in the
resumable `<file>.part` (the only partial file ever left), and the next call resumes them. The progress bar
(fastprogress) shows only in a terminal or a notebook, never in logs.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from learnkit.core.serialization import atomic_write
from learnkit.core.system_data import system_data_path
from learnkit.datasets.convert import CONVERTERS, unpack
from learnkit.datasets.registry import Checksum, Dataset, DatasetError, DatasetFile, dataset_info

__all__ = ["get_dataset", "dataset_home", "is_cached", "verify_file", "download_file", "download_deadline",
           "MANIFEST"]

MANIFEST = "dataset.json"  # written last into a converted folder: its presence means "complete"
TIMEOUT = 30.0  # the stall timeout: seconds in which fewer than STALL_BYTES arrive before a connection is stalled
STALL_BYTES = 1024
ATTEMPTS = 3  # tries per URL; each retry resumes from the bytes already received
DEADLINE_FLOOR = 600.0  # seconds: the shortest default deadline of one file's download
MIN_RATE = 50 * 1024  # bytes per second the default deadline allows for (a slow but working link)
DEADLINE_ENV = "LEARNKIT_DOWNLOAD_DEADLINE"
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


class _PastDeadline(Exception):
    pass


def download_deadline(size: int, deadline: float | None = None) -> float:
    """Seconds that downloading a file of `size` bytes may take, all attempts together: `deadline`, else
    `$LEARNKIT_DOWNLOAD_DEADLINE`, else `max(DEADLINE_FLOOR, size / MIN_RATE)` (10 minutes, or 50 KiB/s).

    Example:
        >>> download_deadline(30_000_000)   # 30 MB: 586 s at 50 KiB/s, so the 600 s floor
        600.0
    """
    source = "deadline"
    if deadline is None and os.environ.get(DEADLINE_ENV):
        source, deadline = f"${DEADLINE_ENV}", os.environ[DEADLINE_ENV]
    if deadline is None:
        return max(DEADLINE_FLOOR, size / MIN_RATE)
    try:
        value = float(deadline)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise DatasetError(f"{source}={deadline!r}: give the download deadline as a positive number of seconds")
    return value


def _progress_shown(progress: bool) -> bool:
    """Bars only where a person watches: a terminal or a notebook (in a log they are thousands of lines)."""
    if not progress:
        return False
    from fastprogress.fastprogress import IN_NOTEBOOK
    return bool(IN_NOTEBOOK) or sys.stdout.isatty()


def _fetch(url: str, part: Path, dfile: DatasetFile, progress: bool, until: float, stall: float) -> None:
    """One HTTP request appending to (206) or restarting (200) `part`; _Interrupted if the body is cut short
    or stalls (fewer than STALL_BYTES in `stall` seconds), _PastDeadline at time.monotonic() `until`."""
    offset = part.stat().st_size if part.exists() else 0
    if offset >= dfile.size:  # complete (verified by the caller) or longer than any good copy: start again
        if offset == dfile.size:
            return
        part.unlink()
        offset = 0
    headers = {"User-Agent": "learnkit", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = max(0.05, min(stall, until - time.monotonic()))  # no read waits past the deadline or a stall
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
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
        if _progress_shown(progress):
            from fastprogress.fastprogress import progress_bar
            bar = progress_bar(range(max(expected // 1024, 1)))
            bar.comment = f"KiB of {dfile.name}"  # an attribute: the console bar takes no comment= argument
            bar.update(0)
        done, limit = offset, max(c.size for c in dfile.checksums)
        window_start, window_done = time.monotonic(), done  # the stall check: bytes per `stall` seconds
        with open(part, mode) as f:
            try:
                while block := resp.read1(_CHUNK):  # what has arrived (read() would wait for 64 KiB)
                    f.write(block)
                    done += len(block)
                    if done > limit:  # not the registered file, or a server that never stops: spare the disk
                        raise DatasetError(f"{url} sent more than the {limit} bytes registered for {dfile.name}")
                    if bar is not None:
                        bar.update(min(done // 1024, bar.total - 1))
                    now = time.monotonic()
                    if now >= until:
                        raise _PastDeadline(f"{done} of {expected} bytes received")
                    if now - window_start >= stall:
                        if done - window_done < STALL_BYTES:
                            raise _Interrupted(f"stalled: {done - window_done} bytes in {now - window_start:.3g} s, "
                                               f"fewer than {STALL_BYTES} (stall timeout {stall:g} s)")
                        window_start, window_done = now, done
            except (OSError, http.client.HTTPException) as e:  # reset connection, IncompleteRead, timeout
                raise _Interrupted(f"{type(e).__name__}: {e}") from e
            finally:
                if bar is not None:
                    bar.on_iter_end()
    if done < expected:
        raise _Interrupted(f"the connection closed after {done} of {expected} bytes")


def download_file(url: str, dest: str | os.PathLike, dfile: DatasetFile, progress: bool = True,
                  attempts: int = ATTEMPTS, deadline: float | None = None, stall_timeout: float = TIMEOUT) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming a partial `.part` with 'Range: bytes=N-'.

    A transfer cut short or stalled (fewer than STALL_BYTES in `stall_timeout` seconds) is retried (resuming) up
    to `attempts` times, all within `deadline` seconds (default: `download_deadline(dfile.size)`); if it still
    fails the `.part` file is kept so that the next call resumes it. The finished file must match one of
    `dfile.checksums`, otherwise it is deleted and a `DatasetError` names the file and both hashes; on success
    `.part` is renamed to `dest` in one step. `progress`: a bar in a terminal or a notebook.

    Example:
        >>> download_file(dfile.urls[0], "cache/a.csv", dfile, deadline=120)          # doctest: +SKIP
    """
    _download(url, Path(dest), dfile, progress, attempts, deadline, stall_timeout)
    return Path(dest)


def _download(url: str, dest: Path, dfile: DatasetFile, progress: bool, attempts: int,
              deadline: float | None = None, stall: float = TIMEOUT) -> Checksum:
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    seconds = download_deadline(dfile.size, deadline)
    until = time.monotonic() + seconds
    why = ""
    for attempt in range(attempts):
        try:
            if time.monotonic() >= until:
                raise _PastDeadline(why)
            _fetch(url, part, dfile, progress, until, stall)
            break
        except _PastDeadline as e:
            kept = part.stat().st_size if part.exists() else 0
            raise DatasetError(f"download of {url} gave up at its deadline of {seconds:g} s ({e}); {kept} bytes "
                               f"are kept in {part}: run again to resume, or allow more time (deadline=SECONDS or "
                               f"${DEADLINE_ENV})") from None
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
            time.sleep(min(0.2 * attempt, max(0.0, until - time.monotonic())))
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
            progress: bool, deadline: float | None = None) -> tuple[Path, str, Checksum]:
    """A verified local copy of `dfile` and where it came from, trying cache, mirror, package paths, URLs."""
    cached = home / "downloads" / ds.name / dfile.name
    looked = [str(cached)]
    if cached.is_file():
        try:
            return cached, "cache", verify_file(cached, dfile, "in the cache")
        except DatasetError:
            cached.unlink()  # ours and damaged: fetch it again
    candidates = [mirror / ds.name / dfile.name, mirror / dfile.name] if mirror else []
    # A package's file, or its copy unpacked without root by ./run data (learnkit.core.system_data).
    candidates += [system_data_path(p) for p in dfile.local_paths]
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
            return cached, url, _download(url, cached, dfile, progress, ATTEMPTS, deadline)
        except DatasetError as e:
            errors.append(str(e))
    raise DatasetError(errors[0] if len(errors) == 1 else " | ".join(errors))


def get_dataset(name: str, home: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
                offline: bool = False, progress: bool = True, deadline: float | None = None) -> Path:
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
        progress: fastprogress bars for downloads and conversion (shown in a terminal or a notebook only).
        deadline: seconds each file's download may take, retries included (default `download_deadline`: at
            least 10 minutes, or 50 KiB/s; `$LEARNKIT_DOWNLOAD_DEADLINE`); the bytes received are kept to resume.

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
        files[dfile.name], source, checksum = _locate(ds, dfile, home, mirror_dir, offline, progress, deadline)
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

