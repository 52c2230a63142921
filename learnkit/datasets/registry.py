"""The registry of named datasets: what files a data set is made of, where each can come from (URLs, a
Debian package, the source checkout), how to recognise a good copy (size + sha256 and/or md5), its licence,
and which converter turns the files into learnkit's on-disk form.

Example:
    >>> [d.name for d in list_datasets()]                                              # doctest: +SKIP
    ['fashion-mnist', 'fashion-mnist-sample', 'fortunes-6', 'fortunes-sample']
    >>> dataset_info("fashion-mnist").files[0].urls[0]                                 # doctest: +SKIP
    'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

__all__ = ["Checksum", "DatasetFile", "Dataset", "DatasetError", "register_dataset", "unregister_dataset",
           "list_datasets", "dataset_info", "SAMPLES", "sample_path"]

# The small committed samples are package data (in the wheel too); <repo>/datasets/<name> links here, so the
# builder scripts in datasets/ and a checkout's readers keep their paths. One copy in git.
SAMPLES = Path(__file__).resolve().parent / "samples"


def sample_path(name: str) -> Path:
    """The folder of a sample that ships with learnkit: 'fashion-mnist-sample' (IDX files, classes.txt, png/
    with train/ and valid/ class folders) or 'fortunes-sample' (fortunes.csv).

    Example:
        >>> sample_path("fashion-mnist-sample") / "png"                                  # doctest: +SKIP
        PosixPath('.../site-packages/learnkit/datasets/samples/fashion-mnist-sample/png')
    """
    folder = SAMPLES / name
    if not folder.is_dir():
        known = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir()) if SAMPLES.is_dir() else []
        raise FileNotFoundError(f"no sample named {name!r} in {SAMPLES} (known: {', '.join(known) or 'none'}); "
                                "reinstall learnkit (the samples are package data of its wheel)")
    return folder


class DatasetError(RuntimeError):
    """Data that cannot be had or cannot be trusted: missing offline, HTTP errors, a checksum mismatch, an
    unsafe archive. The message is one line that names the file or URL and says what to do."""


@dataclass(frozen=True)
class Checksum:
    """One known byte-exact copy of a file: its size and its sha256 and/or md5 (lower-case hex).

    A file may have several: Debian's Fashion-MNIST files are the upstream gzip streams with a rewritten
    gzip header (no stored file name, another time stamp), so they are other bytes with the same content.
    """
    size: int
    sha256: str | None = None
    md5: str | None = None
    origin: str = "upstream"

    def __post_init__(self) -> None:
        if self.sha256 is None and self.md5 is None:
            raise ValueError("Checksum: give sha256 or md5 (or both)")
        for algo, digest, n in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if digest is not None and (len(digest) != n or digest.strip("0123456789abcdef")):
                raise ValueError(f"Checksum: {algo} must be {n} lower-case hex digits, got {digest!r}")

    def describe(self) -> str:
        parts = [f"{a} {d}" for a, d in (("sha256", self.sha256), ("md5", self.md5)) if d]
        return f"{', '.join(parts)} ({self.size} bytes, {self.origin})"


@dataclass(frozen=True)
class DatasetFile:
    """One file of a data set.

    Attributes:
        name: the file name (also its name in a mirror folder and in the download cache).
        checksums: the known good copies; a file is accepted when its size and hashes match one of them.
            URLs serve the first one.
        urls: where to download it, tried in order (empty: no download, e.g. a Debian-only file).
        local_paths: where a package or the source checkout puts it; used as they are, never modified.
        extract: a tar/zip archive to unpack (safely) into the data set's folder by the default converter.
        max_extracted: the most bytes its extraction may write (default: `convert.extract_limit`, 20 times the
            archive's size, at least 32 MiB); set it for archives that compress better than that.
    """
    name: str
    checksums: tuple[Checksum, ...]
    urls: tuple[str, ...] = ()
    local_paths: tuple[str, ...] = ()
    extract: bool = False
    max_extracted: int | None = None

    def __post_init__(self) -> None:
        if not self.name or Path(self.name).name != self.name or self.name in (".", ".."):
            raise ValueError(f"DatasetFile: name must be a plain file name, got {self.name!r}")
        if not self.checksums:
            raise ValueError(f"DatasetFile {self.name!r}: give at least one Checksum")

    @property
    def size(self) -> int:
        return self.checksums[0].size


Converter = Callable[[dict, Path, bool], None]  # (files: {name: Path}, out folder, progress) -> None


@dataclass(frozen=True)
class Dataset:
    """A named data set.

    Attributes:
        name: what `get_dataset(name)` and `learnkit datasets get NAME` take.
        files: its files.
        licence: the licence, in a few words (the full notice travels with the data where it has one).
        description: one line.
        layout: what the converted folder holds.
        converter: a name in `learnkit.datasets.convert.CONVERTERS`, a callable `(files, out, progress)`,
            or None: copy the files (unpacking archives) into the folder.
        how_to_get: the fix when no copy can be found offline (e.g. an `apt-get install` line).
        homepage: where the data set is described.
    """
    name: str
    files: tuple[DatasetFile, ...]
    licence: str
    description: str = ""
    layout: str = ""
    converter: Union[str, Converter, None] = None
    how_to_get: str = ""
    homepage: str = ""

    @property
    def size(self) -> int:
        """Bytes of the source files (the download size)."""
        return sum(f.size for f in self.files)


_DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset, *, replace: bool = False) -> Dataset:
    """Add a data set to the registry (e.g. a local one, or a throw-away entry in a test).

    Example:
        >>> register_dataset(Dataset("my-set", (DatasetFile("a.csv", (Checksum(12, sha256="0" * 64),),
        ...                  urls=("https://example.org/a.csv",)),), licence="CC0"))   # doctest: +SKIP
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"register_dataset: expected a Dataset, got {type(dataset).__name__}")
    if dataset.name in _DATASETS and not replace and _DATASETS[dataset.name] != dataset:
        raise ValueError(f"register_dataset: a data set named {dataset.name!r} is already registered; "
                         "pick another name or pass replace=True")
    _DATASETS[dataset.name] = dataset
    return dataset


def unregister_dataset(name: str) -> None:
    """Remove a data set from the registry (no error if it is not there)."""
    _DATASETS.pop(name, None)


def list_datasets() -> list[Dataset]:
    """The registered data sets, sorted by name."""
    return [_DATASETS[n] for n in sorted(_DATASETS)]


def dataset_info(name: str) -> Dataset:
    """The registry entry of `name`; an unknown name is a KeyError listing the known ones."""
    if name not in _DATASETS:
        raise KeyError(f"no data set named {name!r}; known: {', '.join(sorted(_DATASETS))} "
                       "(see `learnkit datasets list`)")
    return _DATASETS[name]


# ------------------------------------------------------------------------------------------ built-in entries
# Fashion-MNIST. The md5s are the ones Zalando Research publishes (README of zalandoresearch/fashion-mnist).
# Debian's package dataset-fashion-mnist 0.0~git20200523.55506a9-1 holds the same gzip streams under another
# 10-byte header (no stored file name, mtime 2020-06-05), so its files match none of those md5s; they are listed
# as a second accepted copy. Putting the upstream header back onto Debian's bytes (flag FNAME + the file name,
# mtime 2017-08-31 10:50:06 UTC for train-*, 10:50:27 for t10k-*) gives files with exactly the published sizes
# and md5s; the upstream sha256s below were computed from those rebuilt files
# (tests/integration/test_datasets_debian.py repeats this).
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FMNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
_DEBIAN_FMNIST = "Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1"


def _fmnist_file(name: str, upstream: Checksum, debian_size: int, debian_sha256: str) -> DatasetFile:
    return DatasetFile(name, (upstream, Checksum(debian_size, sha256=debian_sha256, origin=_DEBIAN_FMNIST)),
                       urls=(_FMNIST_URL + name,), local_paths=(f"{_FMNIST_DEBIAN}/{name}",))


_FMNIST_FILES = (
    _fmnist_file("train-images-idx3-ubyte.gz",
                 Checksum(26421880, md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                          sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
                 26421856, "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    _fmnist_file("train-labels-idx1-ubyte.gz",
                 Checksum(29515, md5="25c81989df183df01b3e8a0aad5dffbe",
                          sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
                 29491, "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    _fmnist_file("t10k-images-idx3-ubyte.gz",
                 Checksum(4422102, md5="bef4ecab320f06d8554ea6380940ec79",
                          sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
                 4422079, "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    _fmnist_file("t10k-labels-idx1-ubyte.gz",
                 Checksum(5148, md5="bb300cfdad3c16e7a12a480ee83cd310",
                          sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
                 5125, "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
)
_FMNIST_LAYOUT = ("train/<class>/<i>.png and valid/<class>/<i>.png (valid = the t10k test set; <i> = the image's "
                  "index in its IDX file; folders are class names with '_' for '/' and ' '), labels.csv "
                  "(path,label,is_valid), classes.txt, LICENSE")
register_dataset(Dataset(
    "fashion-mnist", _FMNIST_FILES,
    licence="MIT (Expat), Copyright 2017 Zalando SE",
    description="Zalando article images, 28x28 grayscale, 10 classes: 60000 train + 10000 test",
    layout=_FMNIST_LAYOUT, converter="fashion_mnist_png",
    how_to_get="`apt-get install dataset-fashion-mnist` (or without root, in a learnkit checkout: `./run data`)",
    homepage="https://github.com/zalandoresearch/fashion-mnist"))

# Fortunes: six category files of Debian's `fortunes` package (source fortune-mod), version 1:1.99.1-7.3, and the
# package's copyright file. There is no upstream URL for these exact bytes: Debian package files only.
_FORTUNES_DEBIAN = "Debian fortunes 1:1.99.1-7.3"
_FORTUNES = {
    "computers": (237981, "a86be224d9f733b88eeaf8a46ea0427e05cc69c69edcf5f6db47ddf561ca37fd"),
    "science": (129991, "7ab350b142ee6c70c1d8517c5a1b3790c09b190a62859427cad98e6e35a19fcc"),
    "politics": (114921, "b56ca45a046edd5c459090a5c6b335332661b436e814b41ac87bb58065ad6131"),
    "songs-poems": (233975, "eb714d297b468da91b6ca32baefb000279a3e3740b09f8a87db24fe58e010b1a"),
    "work": (106982, "ad8a0e104160e2c4782fa86e143cd60ffab2872985d4293ffd0af6df19dbfa28"),
    "men-women": (101843, "8fc4eb68a8d16826372d9bfdc910c8ab917b8aa59e2aac533f3ec2b49a1314ba"),
    "copyright": (3755, "92d4ee89ff8ac72255bdcab1f4ea5bbfa31e5d3c85b56d275e48c96a4b4e8bd9"),
}
_FORTUNES_PATHS = {"copyright": "/usr/share/doc/fortunes/copyright"}  # the others: /usr/share/games/fortunes/NAME


register_dataset(Dataset(
    "fortunes-6",
    tuple(DatasetFile(name, (Checksum(size, sha256=digest, origin=_FORTUNES_DEBIAN),),
                      local_paths=(_FORTUNES_PATHS.get(name, f"/usr/share/games/fortunes/{name}"),))
          for name, (size, digest) in _FORTUNES.items()),
    licence="BSD-3-Clause (UC Regents); quotations from many sources",
    description="fortune cookies of six fortune files, labelled by file: 4298 texts (3438 train / 860 valid)",
    layout="fortunes.csv (text,label,is_valid; learnkit.text.corpora.fortunes_classification, seed 42), LICENSE",
    converter="fortunes_csv",
    how_to_get="`apt-get install fortunes` (or without root, in a learnkit checkout: `./run data`; no download URL: "
               "the files come from the Debian package)",
    homepage="https://packages.debian.org/fortunes"))

# The samples shipped in learnkit/datasets/samples/ (see datasets/README.md for their provenance and checksums).
_SAMPLE_HOW = "reinstall learnkit (the samples ship inside the package: learnkit/datasets/samples/)"
_FMNIST_SAMPLE = {
    "train-images-idx3-ubyte.gz": (871176, "793abe570761e974920cb28dc9e0a181120a1107241b28ddfcd9a76c1614138f"),
    "train-labels-idx1-ubyte.gz": (1033, "19be1dcecbb35f4d7171211883e54ee4d27eb6f1ef747a13c4fafce50dfe1064"),
    "t10k-images-idx3-ubyte.gz": (216261, "889e6cfcf2f19b62501d6b8a6beefd433fff046cbdba1b8123a6edcc6f6ec51d"),
    "t10k-labels-idx1-ubyte.gz": (274, "0ad6017cfe6350bdf87c8165285cf205a752ee4987de0f650d9e7af9f27cab49"),
    "classes.txt": (76, "c05cbe764897f8f34d28f45aa4669357a728c2bd56e7610475ae1594e478a8c7"),
    "LICENSE": (1347, "a87e80d64bbd0450685fe06e6b77de340525dc7f255767548f2f1f54db7af507"),
}
_FORTUNES_SAMPLE = {
    "fortunes.csv": (134543, "a48b97942eac08f72eb3acfa287e9557b376da4b40fba581e72dac8f54712000"),
    "LICENSE": (4448, "f18096ab1af83b9cc2c6ce84026a7d853d4f400643c4caecacc481d30bb1017c"),
}


def _sample_files(folder: str, table: dict) -> tuple[DatasetFile, ...]:
    return tuple(DatasetFile(name, (Checksum(size, sha256=digest, origin="learnkit datasets/" + folder),),
                             local_paths=(str(SAMPLES / folder / name),))
                 for name, (size, digest) in table.items())


register_dataset(Dataset(
    "fashion-mnist-sample", _sample_files("fashion-mnist-sample", _FMNIST_SAMPLE),
    licence="MIT (Expat), Copyright 2017 Zalando SE",
    description="class-balanced Fashion-MNIST subset committed with learnkit: 2000 train + 500 test",
    layout=_FMNIST_LAYOUT, converter="fashion_mnist_png", how_to_get=_SAMPLE_HOW,
    homepage="https://github.com/zalandoresearch/fashion-mnist"))
register_dataset(Dataset(
    "fortunes-sample", _sample_files("fortunes-sample", _FORTUNES_SAMPLE),
    licence="BSD-3-Clause (UC Regents); quotations from many sources",
    description="class-balanced fortunes subset committed with learnkit: 600 texts (480 train / 120 valid)",
    layout="fortunes.csv (text,label,is_valid), LICENSE", converter=None, how_to_get=_SAMPLE_HOW,
    homepage="https://packages.debian.org/fortunes"))
