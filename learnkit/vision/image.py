"""Images as uint8 (C,H,W) tensors: decoding (`load_image`), the `ImageBlock`, file getters and labellers,
and checking or decoding many files at once in parallel (`verify_images`, `decode_images`).

Decoding rules, the same for files, bytes, PIL images, arrays and tensors: EXIF orientation is applied.
Transparency (RGBA, LA, palettes, PNG transparent colours) is composited on white, never dropped (a
transparent pixel's stored colour is arbitrary, often black; logos and product photos expect white pages).
16-bit gray ('I;16', 'I;16B', 'I' within 0..65535) is scaled, never clipped: round(v / 257), so 65535 → 255 and
32768 → 128; other 'I' and 'F' images are scaled per image from [min(0, lowest), highest] ('F' within [0, 1]:
times 255). CMYK, YCbCr, HSV: Pillow's conversion; 1-bit: 0/255; animated files: the first frame. A header
claiming more than `max_pixels` pixels is refused before decoding (Pillow's own guard, MAX_IMAGE_PIXELS, still
refuses twice its value first). Truncated PNG and JPEG files fail even if `ImageFile.LOAD_TRUNCATED_IMAGES` was
set: a PNG must be a whole chain of chunks up to IEND, critical chunks with valid CRCs, and its compressed pixel
stream must reach its end; a JPEG must hold an EOI marker after its last scan; besides Pillow's own checks. Only
regular files are read (after resolving links): a FIFO or a device named like an image is refused unopened.
"""
from __future__ import annotations

import io
import math
import os
import zlib
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from learnkit.data.blocks import TransformBlock, register_block
from learnkit.data.parallel import parallel_map, shared_tensor, uses_processes
from learnkit.vision.files import (IMAGE_EXTENSIONS, RegexLabeller, find_image_files, get_image_files,
                                   non_regular_kind, parent_label)
from learnkit.vision.transforms import IntToFloat, Resize

__all__ = ["IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "ImageLoadError", "load_image", "ImageBlock", "IntToFloat",
           "get_image_files", "find_image_files", "parent_label", "RegexLabeller", "verify_images", "decode_images"]

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS: about 0.25 GB of RGB pixels
_FIX = "re-download or delete it (verify_images(files) lists every bad file of a folder)"


class ImageLoadError(ValueError):
    """An image could not be loaded: `path` (a Path, or a description of an in-memory source), `reason`, `fix`."""

    def __init__(self, path: Path | str, reason: str, fix: str = _FIX):
        self.path, self.reason, self.fix = path, reason, fix
        super().__init__(f"cannot load image {path}: {reason}. Fix: {fix}")

    def __reduce__(self) -> tuple:  # keep (path, reason, fix) when sent between processes
        return type(self), (self.path, self.reason, self.fix)


def _check_mode(mode: str | None, where: str) -> None:
    if mode not in ("RGB", "L", None):
        raise ValueError(f"{where}: mode={mode!r}; use 'RGB' (3 channels), 'L' (1) or None (1 or 3, as in the file)")


def load_image(source: Any, mode: str | None = "RGB", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode an image into a contiguous uint8 tensor (C,H,W), following the module's decoding rules.

    Args:
        source: a path, the file's bytes, a PIL image, a NumPy array (H,W[,C]) or a tensor ([C,]H,W); arrays
            and tensors may be uint8, bool, uint16 (scaled by 1/257) or float in [0, 1].
        mode: 'RGB' (3 channels), 'L' (1 channel, ITU-R 601 luma) or None (1 or 3, as the source has them).
        max_pixels: refuse images whose header claims more pixels (a guard against decompression bombs);
            None for no learnkit limit.

    Raises:
        ImageLoadError: missing, empty, truncated, non-image or oversized files, each with its own reason.

    Example:
        >>> load_image("cat.jpg").shape, load_image(png_bytes, mode="L").shape   # uint8 (3, H, W), (1, H, W)
    """
    _check_mode(mode, "load_image")
    if isinstance(source, (torch.Tensor, np.ndarray)):
        return _from_array(source, mode)
    name, data, im = _open(source)
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageLoadError(name, f"its header says {w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,} "
                             "(a guard against decompression bombs)",
                             f"if the image is genuine, raise the limit: max_pixels={w * h} (or None)")
    try:
        im.load()  # decode every pixel now, so that truncated data fails here and not later
    except MemoryError:
        raise
    except Exception as e:  # Pillow's plugins raise many types on bad data (OSError, SyntaxError, struct.error...)
        raise ImageLoadError(name, f"its {im.format or 'image'} data is corrupt or truncated "
                             f"({type(e).__name__}: {e})") from None
    why = _truncated(im.format, data) if data is not None else None
    if why:
        raise ImageLoadError(name, f"its {im.format} data is {why}")
    try:
        if im.getexif().get(0x0112, 1) not in (1, None):  # the EXIF orientation tag
            im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        pass  # a malformed EXIF block: the pixels themselves are fine, keep them as stored
    return _finish(_pil_array(im, name), mode)


def _open(source: Any) -> tuple[Path | str, bytes | None, Image.Image]:
    """(name for messages, the file's bytes or None, the PIL image with only its header read)."""
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>", None, source
    if isinstance(source, (bytes, bytearray, memoryview)):
        name: Path | str = f"<{len(source)} bytes>"
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        name = Path(source)
        data = read_file_bytes(name)
    else:
        raise TypeError(f"load_image: cannot load a {type(source).__name__}; pass a path, bytes, a PIL image, a "
                        "NumPy array (H,W[,C]) or a tensor (C,H,W)")
    if not data:
        raise ImageLoadError(name, "the file is empty (0 bytes)")
    try:
        return name, data, Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"Pillow's own size guard refused it ({e})",
                             "if the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS (and max_pixels)") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(name, f"it is not an image Pillow can read (it starts with {data[:16]!r})") from None
    except MemoryError:
        raise
    except Exception as e:
        raise ImageLoadError(name, f"its header is corrupt ({type(e).__name__}: {e})") from None


def read_file_bytes(name: Path) -> bytes:
    """The bytes of `name`, which must be a regular file once links are resolved. The file is opened without
    blocking and checked on the open descriptor, so a FIFO, a socket or a device (/dev/zero) named like an image
    is refused at once instead of hanging or filling memory."""
    return bytes(read_file_buffer(name))


def read_file_buffer(name: Path) -> bytearray:
    """`read_file_bytes` into a fresh bytearray, read with as few system calls as the file allows (its size from
    the open descriptor, then unbuffered reads until the end): a writable buffer that `torch.frombuffer` wraps without a
    copy. The JPEG reader threads of the device-decode path use it, where every microsecond held under the GIL is
    one the other reader threads wait for."""
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found", f"check the path (relative to {Path.cwd()})") from None
    except OSError as e:  # no permission, a FIFO on some systems...
        raise ImageLoadError(name, f"the file cannot be read ({e.strerror})", "check the path") from None
    try:
        info = os.fstat(fd)
        kind = non_regular_kind(info.st_mode)
        if kind:
            raise ImageLoadError(name, f"not a regular file ({kind})", "point to the image file itself")
        with os.fdopen(fd, "rb", buffering=0) as f:  # unbuffered: readinto is one read() of the rest
            fd = -1  # closed by the file object
            buf, n = bytearray(info.st_size + 1), 0  # one byte more: a file that grew since fstat is read to its end
            while True:
                if n == len(buf):
                    buf.extend(bytes(len(buf)))
                with memoryview(buf) as view:
                    got = f.readinto(view[n:])
                if got is None:  # opened without blocking and no data yet (some network/FUSE file systems)
                    raise ImageLoadError(name, "the file system gave no data without blocking",
                                         "copy the files to a local disk")
                if not got:
                    break
                n += got
        del buf[n:]
        return buf
    except OSError as e:
        raise ImageLoadError(name, f"the file cannot be read ({e.strerror})", "check the path") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _truncated(fmt: str | None, data: bytes) -> str | None:
    """Why the data is truncated or damaged, or None, whatever LOAD_TRUNCATED_IMAGES says: a PNG must be a
    complete chain of chunks ending in IEND (see `_png_problem`); a JPEG needs an EOI marker after its last scan
    (0xFFD9 cannot occur inside entropy-coded data)."""
    if fmt == "PNG":
        return _png_problem(data)
    if fmt in ("JPEG", "MPO"):
        if data.find(b"\xff\xd9", max(data.rfind(b"\xff\xda"), 0)) < 0:
            return "truncated (the end marker is missing)"
    return None


def _png_problem(data: bytes) -> str | None:
    """Walk the PNG's chunks: each must fit in the data, critical chunks (IHDR, PLTE, IDAT, IEND) must match
    their CRC, and the chain must reach IEND. When Pillow is told to accept truncated images it skips its own
    checks, so then the compressed pixel stream (the IDAT chunks) must also reach its end."""
    view, pos, idat = memoryview(data), 8, []
    while True:
        if pos + 12 > len(data):
            return f"truncated (the data ends at byte {len(data)} before the IEND chunk)"
        length, kind = int.from_bytes(view[pos:pos + 4], "big"), bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return (f"truncated (chunk {kind!r} at byte {pos} declares {length:,} bytes but the data ends at byte "
                    f"{len(data):,})")
        if kind[:1].isupper() and zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return f"damaged (the CRC of chunk {kind!r} at byte {pos} does not match)"
        if kind == b"IDAT":
            idat.append(view[pos + 8:end - 4])
        if kind == b"IEND":
            break
        pos = end
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        inflate = zlib.decompressobj()
        try:
            for part in idat:
                while not inflate.eof:  # output dropped in 1 MB pieces: only where the stream ends matters
                    out = inflate.decompress(part, 2**20)
                    part = inflate.unconsumed_tail
                    if not part and not out:
                        break  # this chunk is used up: on to the next
        except zlib.error as e:
            return f"damaged (its pixel data does not decompress: {e})"
        if not inflate.eof:
            return "truncated (its compressed pixel data ends before the image does)"
    return None


def _pil_array(im: Image.Image, name: Path | str) -> np.ndarray:
    """A loaded PIL image as a uint8 array (H,W) or (H,W,C) with C in 2, 3, 4 (alpha last)."""
    m = im.mode
    if m in ("I", "F") or m.startswith("I;16"):
        return _high_depth(np.asarray(im), m == "F")
    if m == "1":
        im = im.convert("L")
    elif m in ("P", "PA"):
        im = im.convert("RGBA" if m == "PA" or "transparency" in im.info else "RGB")
    elif m in ("L", "RGB") and "transparency" in im.info:
        im = im.convert(m + "A")  # a colour declared transparent (PNG tRNS)
    elif m in ("La", "RGBa"):
        im = im.convert(m.upper())  # premultiplied alpha
    elif m not in ("L", "LA", "RGB", "RGBA"):
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise ImageLoadError(name, f"its colour mode {m!r} cannot be converted to RGB ({e})",
                                 "convert it to RGB with another tool") from None
    return np.asarray(im)


def _high_depth(a: np.ndarray, is_float: bool) -> np.ndarray:
    """16-bit, 32-bit or float gray to uint8 by scaling (see the module docstring), never by clipping."""
    a = a.astype(np.float64)
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if lo >= 0 and hi <= (1.0 if is_float else 65535.0):
        lo, hi = 0.0, (1.0 if is_float else 65535.0)
    return np.rint((a - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)


def _from_array(source: np.ndarray | torch.Tensor, mode: str | None) -> torch.Tensor:
    is_tensor = isinstance(source, torch.Tensor)
    arr = source.detach().cpu().movedim(0, -1).numpy() if is_tensor and source.ndim == 3 else np.asarray(source)
    arr = arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        raise ValueError(f"load_image: got {type(source).__name__} of shape {tuple(source.shape)}; pass "
                         f"{'a tensor (C,H,W)' if is_tensor else 'an array (H,W,C)'} or (H,W), with 1 to 4 channels")
    if arr.dtype.kind == "f" and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"load_image: a float {type(source).__name__} must hold values in [0, 1], got "
                         f"[{arr.min():.3g}, {arr.max():.3g}]; scale it, or convert it to uint8 first")
    if arr.dtype not in (np.uint8, np.uint16, np.bool_) and arr.dtype.kind != "f":
        raise ValueError(f"load_image: image values of dtype {arr.dtype} are not supported; use uint8, uint16, bool "
                         "or float in [0, 1]")
    return _finish(arr if arr.dtype == np.uint8 else _high_depth(arr, arr.dtype.kind in "fb"), mode)


def _finish(arr: np.ndarray, mode: str | None) -> torch.Tensor:
    """uint8 (H,W) or (H,W,C) → composite alpha on white → the requested channels → contiguous (C,H,W)."""
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        color, alpha = arr[..., :-1].astype(np.uint32), arr[..., -1:].astype(np.uint32)
        arr = ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
    if mode == "L" and arr.ndim == 3:  # Pillow's own fixed-point ITU-R 601-2 luma, so both paths agree
        a = arr.astype(np.uint32)
        arr = ((a[..., 0] * 19595 + a[..., 1] * 38470 + a[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if mode == "RGB" and chw.shape[0] == 1:
        chw = np.broadcast_to(chw, (3, *chw.shape[1:]))
    return torch.from_numpy(np.array(chw, dtype=np.uint8, order="C"))  # one copy: writable, owns its memory


@register_block
class ImageBlock(TransformBlock):
    """An image input: a path (or bytes, PIL image, array) decoded by `load_image` to uint8 (C,H,W).

    Images stay uint8 through item transforms and collate. In a `DataBlock`, the block's batch transform
    `IntToFloat` then makes float32 in [0, 1] on the device, before the DataBlock's own `batch_tfms`: the model
    gets floats even without a `Normalize`. The default is data-independent (scaling only, no mean/std): add
    `Normalize(mean, std)` (statistics of [0, 1] pixels, e.g. `Normalize.from_batches`) to `batch_tfms` for
    normalized inputs; it is applied after the scaling, with the same result as on uint8. (`ImageDataBunch`
    builds its loaders itself and keeps its own final Normalize; this default does not apply there.)
    `mode`: 'RGB', 'L' or None (1 or 3 channels as each file has them); `max_pixels`: the bomb guard.

    Example:
        >>> ImageBlock(mode="L").encode("digit.png").shape
        torch.Size([1, 28, 28])
        >>> dblock = DataBlock((ImageBlock(mode="L"), CategoryBlock), get_items=get_image_files, get_y=parent_label)
    """

    bad_items = "unreadable image files"

    def __init__(self, mode: str | None = "RGB", max_pixels: int | None = DEFAULT_MAX_PIXELS):
        _check_mode(mode, "ImageBlock")
        self.mode, self.max_pixels = mode, max_pixels
        self.batch_tfms = [IntToFloat()]  # a DataBlock puts these first: the model never sees uint8

    @property
    def n_channels(self) -> int | None:
        """3 for 'RGB', 1 for 'L', None when each file keeps its own."""
        return {"RGB": 3, "L": 1}.get(self.mode) if self.mode else None

    def encode(self, value: Any) -> torch.Tensor:
        return load_image(value, self.mode, self.max_pixels)

    def encode_many(self, values: Sequence[Any], num_workers: int | None = None) -> Iterator[torch.Tensor]:
        """`encode` over many values, streamed in order. File paths are decoded in parallel (a process pool for
        2,048 files or more: small images decode GIL-bound in threads); a bad file raises ImageLoadError."""
        values = list(values)
        if not all(isinstance(v, (str, Path)) for v in values):
            yield from map(self.encode, values)
            return
        paths = [Path(v) for v in values]
        decode = partial(_decode_one, mode=self.mode, max_pixels=self.max_pixels, resize=None)
        for f, (x, why) in zip(paths, parallel_map(decode, paths, num_workers)):
            if x is None:
                raise ImageLoadError(f, why or "", "fix or remove the file, or predict the others")
            yield x

    # --- what data/loaders.py asks of an input block (the resident and DataLoader paths) ---
    def encode_all(self, values: Sequence[Any], num_workers: int | None = None) -> tuple[Any, list[tuple[int, str]]]:
        """Decode every value once, in parallel: (the good ones in order — one uint8 (N,C,H,W) tensor when they
        share a shape, else a list — and [(position, reason)] of the bad ones). Used by the resident path."""
        values = list(values)
        if not all(isinstance(v, (str, Path)) for v in values):
            return [self.encode(v) for v in values], []
        paths = [Path(v) for v in values]
        images, bad_files = decode_images(paths, mode=self.mode, num_workers=num_workers, on_bad="skip",
                                          max_pixels=self.max_pixels)
        bad, k = [], 0
        for pos, f in enumerate(paths):  # bad files come back in the files' order
            if k < len(bad_files) and bad_files[k][0] == f:
                bad.append((pos, bad_files[k][1]))
                k += 1
        return images, bad

    def verify_all(self, values: Sequence[Any], num_workers: int | None = None) -> list[tuple[int, str]]:
        """Fully decode every file value (in parallel) once, up front: [(position, reason)] of the bad ones."""
        positions = [i for i, v in enumerate(values) if isinstance(v, (str, Path))]
        bad = verify_images([values[i] for i in positions], self.mode, self.max_pixels, num_workers)
        where = {Path(values[i]): i for i in positions}
        return [(where[Path(f)], why) for f, why in bad]

    def batch_decoder(self, values: Sequence[Any], item_tfms: Sequence[Any], device: torch.device) -> tuple[Any, str]:
        """(a decoder of whole batches on `device`, its description) for the device-decode loader path when every
        value is a JPEG file and the item transforms are deterministic Resizes; else (None, why not). vision/jpeg.py."""
        from learnkit.vision.jpeg import jpeg_batch_decoder  # jpeg.py builds on this module
        return jpeg_batch_decoder(self, values, item_tfms, device)

    def estimate_bytes(self, values: Sequence[Any], item_tfms: Sequence[Any]) -> int | None:
        """Decoded bytes of all values after the (eval) item transforms, from a few files' headers; None when
        the sizes differ and no transform makes them equal (then the images cannot be stacked)."""
        shapes = set()
        values = list(values)
        step = max(1, len(values) // 16)
        for v in values[::step][:17]:
            if not isinstance(v, (str, Path)):
                return None
            try:
                with Image.open(v) as im:
                    w, h = im.size
                    bands = len(im.getbands())
            except Exception:
                continue  # a bad file: found (and reported) when decoding
            x = torch.zeros(self.n_channels or (1 if bands == 1 else 3), h, w, dtype=torch.uint8)
            for t in item_tfms:
                x = t(x)
            shapes.add(tuple(x.shape))
        if len(shapes) != 1:
            return None
        return int(math.prod(next(iter(shapes)))) * len(values)

    def show(self, tensor: torch.Tensor, ax: Any) -> None:
        """Draw a (C,H,W) image: uint8 as is; floats outside [0, 1] (normalized) rescaled to [0, 1] per image."""
        t = tensor.detach().cpu()
        t = t[None] if t.ndim == 2 else t
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"ImageBlock.show: expected one image (C,H,W) with 1 or 3 channels, got shape "
                             f"{tuple(tensor.shape)}; pass a single item, not a batch")
        img = t.float() / 255 if t.dtype == torch.uint8 else t.float()
        lo, hi = float(img.min()), float(img.max())
        if lo < 0 or hi > 1:
            img = (img - lo) / max(hi - lo, 1e-8)
        img, gray = img.permute(1, 2, 0).numpy(), img.shape[0] == 1
        ax.imshow(img[..., 0] if gray else img, **({"cmap": "gray", "vmin": 0, "vmax": 1} if gray else {}))
        ax.set(xticks=[], yticks=[])

    def to_config(self) -> dict[str, Any]:
        return {"type": "ImageBlock", "mode": self.mode, "max_pixels": self.max_pixels}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ImageBlock":
        return cls(mode=config.get("mode", "RGB"), max_pixels=config.get("max_pixels", DEFAULT_MAX_PIXELS))

    def __repr__(self) -> str:
        return f"ImageBlock(mode={self.mode!r})"


def _decode_one(file: Path, mode: str | None, max_pixels: int | None,
                resize: Callable | None) -> tuple[torch.Tensor | None, str | None]:
    try:
        x = load_image(file, mode, max_pixels)
    except ImageLoadError as e:
        return None, e.reason
    return (resize(x) if resize is not None else x), None


def _problem(file: Path, mode: str | None, max_pixels: int | None) -> str | None:
    """Why `file` cannot be loaded, or None. Only the reason travels back from a worker, never the pixels."""
    return _decode_one(file, mode, max_pixels, None)[1]


def verify_images(files: Iterable[str | Path], mode: str | None = "RGB", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  num_workers: int | None = None) -> list[tuple[Path, str]]:
    """Fully decode every file (in parallel) and return (file, reason) for the bad ones, in the files' order.

    Example:
        >>> bad = verify_images(get_image_files("data"))   # [(Path('data/x.jpg'), 'the file is empty'), ...]
    """
    _check_mode(mode, "verify_images")
    paths = [f if isinstance(f, Path) else Path(f) for f in files]
    check = partial(_problem, mode=mode, max_pixels=max_pixels)
    return [(f, why) for f, why in zip(paths, parallel_map(check, paths, num_workers)) if why is not None]


def decode_images(files: Iterable[str | Path], mode: str | None = "RGB", size: int | tuple[int, int] | None = None,
                  num_workers: int | None = None, on_bad: str = "error", method: str = "squish",
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor | list[torch.Tensor],
                                                                       list[tuple[Path, str]]]:
    """Decode many files once, in parallel: (images, bad files).

    Images are one uint8 tensor (N,C,H,W), allocated once the first shape is known and filled in place, when
    all share a shape (always when `size` is given: each is resized by `Resize(size, method)`, 'squish' by
    default, which keeps all the content); else a list of (C,H,W) tensors. `on_bad`: 'error' raises an
    ImageLoadError naming the first bad file and the count; 'skip' leaves them out. Either way the bad
    files come back as (file, reason), in the files' order.

    Example:
        >>> images, bad = decode_images(get_image_files("mnist_png"), mode="L", on_bad="skip")
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"decode_images: on_bad={on_bad!r}; use 'error' (raise) or 'skip' (leave them out)")
    _check_mode(mode, "decode_images")
    paths = [f if isinstance(f, Path) else Path(f) for f in files]
    resize = Resize(size, method) if size is not None else None
    decode = partial(_decode_one, mode=mode, max_pixels=max_pixels, resize=resize)
    # `out` (N,C,H,W) while all shapes agree, `items` once they differ; k = images written into `out`. With worker
    # processes `out` is shared and sized from the first file: they write row i themselves (data/parallel.py).
    out, items, bad, k, into = None, None, [], 0, None
    if uses_processes(len(paths), num_workers) and (first := decode(paths[0])[0]) is not None:
        out = into = shared_tensor((len(paths), *first.shape), torch.uint8)
        out_np = out.numpy()
    for i, (f, (x, why)) in enumerate(zip(paths, parallel_map(decode, paths, num_workers, into=into))):
        if x is None:
            bad.append((f, why or ""))
        elif items is not None:
            items.append(x)
        elif out is None or x.shape == out.shape[1:]:
            if out is None:
                out = torch.empty((len(paths), *x.shape), dtype=torch.uint8)
                out_np = out.numpy()
            # A NumPy copy, single-threaded: torch's copy of each small image opened an intra-op parallel region whose
            # spinning threads took the cores from the decoding processes (2,000 PNGs: 13.9 s against 1.0 s serial)
            if into is None or k != i:  # a worker's row i is already in place while no file before it was bad
                out_np[k] = x.numpy()
            k += 1
        else:  # shapes differ: a list from now on (the filled part copied out, the big buffer freed)
            items = [out[i].clone() for i in range(k)] + [x]
            out = None
    if bad and on_bad == "error":
        more = f" (and {len(bad) - 1} more bad file(s) of {len(paths)})" if len(bad) > 1 else ""
        raise ImageLoadError(bad[0][0], bad[0][1] + more, "re-download or delete the bad files (verify_images lists "
                             "them all), or pass on_bad='skip' to leave them out")
    if out is None and items is None:
        out = torch.empty((0, 0, 0, 0), dtype=torch.uint8)
    return (items if items is not None else out[:k]), bad
