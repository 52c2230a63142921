"""Read IDX files (the MNIST / Fashion-MNIST format), gzipped or not, into uint8/int tensors."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (e.g. `train-images-idx3-ubyte.gz`) as a tensor of its stored shape.

    Example:
        >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")  # (10000, 28, 28)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # not gzip data, or a cut-off gzip stream
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read it as {'gzipped ' if opener is gzip.open else ''}IDX ({e}); "
                         "re-download the file") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()}; expected 0000 then a "
                         f"type code in {[hex(t) for t in _TYPES]} and the number of dimensions)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX file: the header needs {4 + 4 * ndim} bytes for {ndim} "
                         f"dimension(s) but the file has {len(data)}; re-download the file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_TYPES[data[2]])
    count = int(np.prod(dims)) if dims else 1
    offset = 4 + 4 * ndim
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX file: header says shape {dims} ({count * dtype.itemsize} bytes) "
                         f"but {len(data) - offset} bytes follow; re-download the file")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(dims)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("=")).copy())
