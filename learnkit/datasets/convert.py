"""Turning verified source files into learnkit's on-disk form: safe archive extraction (no path traversal, no
links out of the target, no devices, no sparse members, a cap on the bytes written) and the converters named in the registry (IDX → PNG folder, fortune
files → CSV).

A converter is `fn(files, out, progress)`: `files` maps each registry file name to a verified local path, `out`
is an empty folder that is renamed into the cache only when the converter returns.
"""
from __future__ import annotations

import csv
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from learnkit.datasets.registry import DatasetError, DatasetFile

__all__ = ["extract_archive", "extract_limit", "unpack", "fashion_mnist_png", "fortunes_csv", "folder_name", "CONVERTERS",
           "FASHION_MNIST_CLASSES"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
# The most bytes an extraction may write unless told otherwise: 20 times the archive's size (text compresses
# 5-10x, images hardly at all), but at least 32 MiB; a member declaring more is refused before anything is written.
EXTRACT_RATIO = 20
EXTRACT_FLOOR = 32 * 2**20
# Python >= 3.11.4 / 3.12 ships tarfile's 'data' filter (PEP 706): it re-checks every member, resolving links
# against what is already on disk. Older Pythons get learnkit's checks below and refuse links altogether.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


# --------------------------------------------------------------------------------------------------- archives
def _bad_name(name: str) -> str | None:
    """Why an archive member name is unsafe, or None."""
    if not name or "\x00" in name:
        return "an empty name or a NUL byte"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a '..' component"
    return None


def _check_tar(members: Iterable[tarfile.TarInfo], archive: Path) -> None:
    members = list(members)
    links = {posixpath.normpath(m.name) for m in members if m.issym() or m.islnk()}
    for m in members:
        def refuse(why: str) -> DatasetError:
            return DatasetError(f"unsafe archive {archive}: member {m.name!r} has {why}; nothing was extracted")
        if why := _bad_name(m.name):
            raise refuse(why)
        if m.issym() or m.islnk():
            if not _HAS_DATA_FILTER:
                raise refuse(f"a link ({m.linkname!r}), and this Python (< 3.11.4) has no tarfile data filter "
                             "to check links safely")
            # A symlink target is relative to the member's folder, a hard link's to the archive root.
            base = posixpath.dirname(m.name) if m.issym() else ""
            target = posixpath.normpath(posixpath.join(base, m.linkname))
            if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise refuse(f"a link pointing outside the target folder ({m.linkname!r})")
            # A target that passes through another link can escape once resolved on disk ('c' -> '.', then
            # 'b' -> 'c/../z'); some Pythons' data filters miss that, so such chains are refused here.
            prefix = base
            for part in m.linkname.split("/")[:-1]:
                prefix = posixpath.normpath(posixpath.join(prefix, part))
                if prefix in links:
                    raise refuse(f"a link whose target {m.linkname!r} goes through another link ({prefix!r})")
        elif not (m.isfile() or m.isdir()):
            raise refuse("a type other than file, folder or link (a device, FIFO or the like)")


def extract_limit(archive: str | os.PathLike) -> int:
    """The default cap on the bytes extracting `archive` may write: max(EXTRACT_FLOOR, EXTRACT_RATIO x its size).

    Example:
        >>> extract_limit("images.tar.gz")   # a 100 MB archive: 2,000,000,000 bytes  # doctest: +SKIP
    """
    return max(EXTRACT_FLOOR, EXTRACT_RATIO * Path(archive).stat().st_size)


def _tar_sizes(tf: tarfile.TarFile, members: list[tarfile.TarInfo]) -> Iterator[tuple[str, int, bool]]:
    """Read the members one by one into `members`, yielding each one's declared size as soon as its header is
    read (before tarfile seeks past its data: a short stream behind a huge header is refused by name)."""
    while (m := tf.next()) is not None:
        members.append(m)
        yield m.name, (m.size if m.isfile() else 0), m.issparse()


def _check_sizes(sizes: Iterable[tuple[str, int, bool]], archive: Path, dest: Path, max_bytes: int) -> None:
    """Refuse, before writing, sparse members and archives declaring more than `max_bytes` (or the free disk)."""
    def refuse(why: str) -> DatasetError:
        return DatasetError(f"unsafe archive {archive}: {why}; nothing was extracted")
    total, free = 0, shutil.disk_usage(dest.parent).free
    for name, size, sparse in sizes:
        if sparse:
            raise refuse(f"member {name!r} is a sparse file declaring {size:,} bytes (sparse members are refused: "
                         "a few bytes in the archive can claim any size on disk)")
        total += size
        if total > max_bytes:
            raise refuse(f"its members declare more than the extraction limit of {max_bytes:,} bytes (member "
                         f"{name!r} declares {size:,}; {total:,} so far); if the archive is genuine, pass a larger "
                         f"max_bytes (the default is max({EXTRACT_FLOOR:,}, {EXTRACT_RATIO} x the archive's size))")
        if total > free:
            raise refuse(f"its members declare {total:,} bytes (up to member {name!r}) but only {free:,} bytes are "
                         f"free on the disk of {dest}")


def _tame(m: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the 'data' filter does to modes and owners, for Pythons without it (links were refused)."""
    m.mode = (m.mode | (0o700 if m.isdir() else 0o600)) & 0o755
    m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
    return m


def _check_zip(infos: Iterable[zipfile.ZipInfo], archive: Path) -> None:
    for info in infos:
        why = _bad_name(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
        if why is None and kind == stat.S_IFLNK:
            why = "a symbolic link (links are not extracted from zip files)"
        elif why is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            why = "a type other than file or folder"
        if why:
            raise DatasetError(f"unsafe archive {archive}: member {info.filename!r} has {why}; nothing was extracted")


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, max_bytes: int | None = None) -> Path:
    """Unpack a tar (plain, gz, bz2, xz) or zip file into `dest`, safely and atomically.

    Every member is checked before anything is written: absolute names, '..' components, links pointing
    outside `dest` and devices are refused with a `DatasetError` naming the member; so are sparse tar members
    and archives whose members declare more than `max_bytes` in total (default `extract_limit(archive)`: 20
    times the archive's size, at least 32 MiB) or more than the free disk space. The declared sizes bound what
    is written (tarfile writes exactly them, zipfile never more than them), so a zip bomb or a tar header
    claiming 10 GiB fails before the disk fills. Tar files are then
    extracted with tarfile's 'data' filter where Python has it. Extraction goes to a temporary folder next
    to `dest`, renamed to `dest` at the end (or, if `dest` is an existing folder, its entries are moved in;
    an entry that already exists is an error). On any error the temporary folder is removed.

    Example:
        >>> extract_archive("images.tar.gz", "data/images")                           # doctest: +SKIP
    """
    archive, dest = Path(archive), Path(dest)
    max_bytes = extract_limit(archive) if max_bytes is None else int(max_bytes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extract", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is owner-only; a plain mkdir's is not
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf.infolist(), archive)
                _check_sizes([(i.filename, i.file_size, False) for i in zf.infolist()], archive, dest, max_bytes)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members: list[tarfile.TarInfo] = []
                _check_sizes(_tar_sizes(tf, members), archive, dest, max_bytes)
                _check_tar(members, archive)
                if _HAS_DATA_FILTER:
                    tf.extractall(tmp, filter="data")
                else:
                    tf.extractall(tmp, members=[_tame(m) for m in members])
        else:
            raise DatasetError(f"{archive} is neither a tar nor a zip file; cannot extract it")
        if not dest.exists():
            os.rename(tmp, dest)
            return dest
        clashes = sorted(p.name for p in tmp.iterdir() if (dest / p.name).exists())
        if clashes:
            raise DatasetError(f"extracting {archive} into {dest}: {', '.join(clashes)} already exist there")
        for entry in tmp.iterdir():
            os.rename(entry, dest / entry.name)
        return dest
    except tarfile.TarError as e:  # the data filter's refusals (FilterError) and damaged archives
        raise DatasetError(f"cannot extract {archive} safely: {e}; nothing was extracted") from e
    except zipfile.BadZipFile as e:
        raise DatasetError(f"cannot extract {archive}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack(dataset_files: Iterable[DatasetFile], files: dict[str, Path], out: Path) -> None:
    """The default converter: archives (`extract=True`) are extracted into `out`, other files copied."""
    for dfile in dataset_files:
        if dfile.extract:
            extract_archive(files[dfile.name], out, dfile.max_extracted)
        else:
            shutil.copyfile(files[dfile.name], out / dfile.name)


# ------------------------------------------------------------------------------------------------ converters
_FMNIST_LICENSE = """\
Fashion-MNIST by Zalando Research, https://github.com/zalandoresearch/fashion-mnist
(converted to PNG files by learnkit; the pixels and labels are unmodified).

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE
OR OTHER DEALINGS IN THE SOFTWARE.
"""


def folder_name(label: str) -> str:
    """A class name as a folder name: runs of characters other than letters, digits, '.' and '-' become '_'
    ('T-shirt/top' → 'T-shirt_top', 'Ankle boot' → 'Ankle_boot'), so paths need no quoting in a shell."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label)


def fashion_mnist_png(files: dict[str, Path], out: Path, progress: bool = True) -> None:
    """Fashion-MNIST IDX files → `train/<class>/<i>.png`, `valid/<class>/<i>.png` (valid = the t10k test set,
    `<i>` = the image's index in its upstream file), `labels.csv` (path,label,is_valid; one row per image,
    training rows first), `classes.txt` (names in label order) and `LICENSE`.

    Also used for the committed sample, whose `classes.txt` and `LICENSE` are taken over.
    """
    from PIL import Image

    from learnkit.data.idx import read_idx

    classes = list(FASHION_MNIST_CLASSES)
    if "classes.txt" in files:
        classes = files["classes.txt"].read_text(encoding="utf-8").splitlines()
    rows: list[tuple[str, str, bool]] = []
    for split, prefix in (("train", "train"), ("valid", "t10k")):
        images = read_idx(files[f"{prefix}-images-idx3-ubyte.gz"])
        labels = read_idx(files[f"{prefix}-labels-idx1-ubyte.gz"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{prefix} files: {tuple(images.shape)} images but {tuple(labels.shape)} labels; "
                               "expected (N, H, W) images and N labels")
        if len(labels) and int(labels.max()) >= len(classes):
            raise DatasetError(f"{prefix} labels go up to {int(labels.max())} but there are {len(classes)} classes")
        for name in classes:
            (out / split / folder_name(name)).mkdir(parents=True, exist_ok=True)
        pixels, targets = images.numpy(), labels.tolist()
        indices = range(len(targets))
        if progress:
            from fastprogress.fastprogress import progress_bar
            indices = progress_bar(indices)
            indices.comment = f"{split} PNGs"  # an attribute: the console bar takes no comment= argument
        for i in indices:
            rel = f"{split}/{folder_name(classes[targets[i]])}/{i}.png"
            Image.fromarray(pixels[i]).save(out / rel)  # uint8 (H, W) → 8-bit grayscale PNG, lossless
            rows.append((rel, classes[targets[i]], split == "valid"))
    with open(out / "labels.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "label", "is_valid"])
        writer.writerows(rows)
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    if "LICENSE" in files:
        shutil.copyfile(files["LICENSE"], out / "LICENSE")
    else:
        (out / "LICENSE").write_text(_FMNIST_LICENSE, encoding="utf-8")


_FORTUNES_LICENSE_HEADER = """\
Fortunes: the fortune cookie files computers, science, politics, songs-poems, work and men-women of the
Debian package `fortunes` (source package fortune-mod), as a classification set made by
learnkit.text.corpora.fortunes_classification (seed 42). Overstrikes were removed and surrounding
whitespace stripped; otherwise the texts are unmodified.

The cookies are quotations and jokes collected from many sources; individual entries may remain the
property of their authors. Debian distributes them under the copyright notice below, copied verbatim
from /usr/share/doc/fortunes/copyright. Keep this file with any copy of the data.

"""


def fortunes_csv(files: dict[str, Path], out: Path, progress: bool = True) -> None:
    """The six fortune files → `fortunes.csv` (text,label,is_valid: `fortunes_classification`, seed 42) and
    `LICENSE` (a short header + the package's copyright file)."""
    from learnkit.text.corpora import FORTUNE_CATEGORIES, fortunes_classification, write_fortunes_csv

    with tempfile.TemporaryDirectory(prefix=".fortunes.", dir=out) as root:
        # The reader wants one folder of category files; the verified copies may come from several places.
        for category in FORTUNE_CATEGORIES:
            shutil.copyfile(files[category], Path(root) / category)
        rows = fortunes_classification(root, FORTUNE_CATEGORIES)
    write_fortunes_csv(rows, out / "fortunes.csv")
    (out / "LICENSE").write_bytes(_FORTUNES_LICENSE_HEADER.encode("utf-8") + files["copyright"].read_bytes())


CONVERTERS: dict[str, Callable[[dict, Path, bool], None]] = {
    "fashion_mnist_png": fashion_mnist_png,
    "fortunes_csv": fortunes_csv,
}
