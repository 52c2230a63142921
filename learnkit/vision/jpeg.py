"""JPEG files decoded in whole batches on the device: nvJPEG on CUDA (`torchvision.io.decode_jpeg(list,
device="cuda")`), torchvision's libjpeg decoder on the CPU; then the item transforms (deterministic `Resize`) on the
device. This is the image side of the *device-decode* loader path (data/decode_loader.py reads the files in
background threads and calls `JpegDecoder.decode` per batch).

The batches match the Pillow path (`load_image` + the item transforms) within decoding noise: IDCTs and chroma
upsampling differ by a few levels, and CUDA resizes through float32. Files the device decoder would get wrong or
cannot read go through `load_image` itself, one by one, so the Pillow path's rules hold for them: data that is not
JPEG (a PNG named .jpg), CMYK/YCCK, an EXIF orientation other than 1, 12-bit or lossless JPEGs, a missing end
marker, more pixels than `max_pixels`, and any file the device decoder rejects. A file Pillow cannot read either
raises `ImageLoadError` naming it: never a silent drop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from learnkit.vision.image import load_image, read_file_buffer
from learnkit.vision.transforms import Resize, resize_images

__all__ = ["JPEG_SUFFIXES", "JpegDecoder", "jpeg_problem", "jpeg_batch_decoder"]

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _exif_orientation(tiff: bytes | bytearray) -> int:
    """The orientation tag (0x0112) of IFD0 of an EXIF block's TIFF data; 1 when absent or unreadable."""
    order = {b"II": "little", b"MM": "big"}.get(bytes(tiff[:2]))  # bytes: the reader's buffers are bytearrays
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)  # type: ignore[arg-type]
    if ifd + 2 > len(tiff):
        return 1
    for k in range(int.from_bytes(tiff[ifd:ifd + 2], order)):  # type: ignore[arg-type]
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            break
        if int.from_bytes(tiff[entry:entry + 2], order) == 0x0112:  # type: ignore[arg-type]
            return int.from_bytes(tiff[entry + 8:entry + 10], order)  # type: ignore[arg-type]
    return 1


def jpeg_problem(data: bytes | bytearray, max_pixels: int | None = None) -> str | None:
    """None when `data` is a JPEG the device decoder reads as `load_image` would (8-bit baseline or progressive,
    1 or 3 components, no rotation to apply, complete); else why it must go through Pillow."""
    if data[:3] != b"\xff\xd8\xff":
        return f"not JPEG data (it starts with {data[:8]!r})"
    # 0xFFD9 cannot occur inside entropy-coded data, so a file ending in it is complete; only one that does not
    # (trailing bytes after the image) needs the two scans for an end marker after the last scan.
    if not data.endswith(b"\xff\xd9") and data.find(b"\xff\xd9", max(data.rfind(b"\xff\xda"), 0)) < 0:
        return "truncated (the end marker is missing)"
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return f"damaged (no marker at byte {pos})"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(segment[6:])
            if orientation != 1:
                return f"EXIF orientation {orientation} (rotated by Pillow)"
        elif marker in _SOF:
            if marker not in (0xC0, 0xC1, 0xC2) or segment[:1] != b"\x08":
                return f"not an 8-bit Huffman JPEG (SOF marker {marker:#x}, {segment[:1].hex()} bits)"
            height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            if max_pixels is not None and height * width > max_pixels:
                return f"{width}x{height} pixels, more than max_pixels={max_pixels}"
            if segment[5:6] not in (b"\x01", b"\x03"):
                return f"{segment[5] if len(segment) > 5 else '?'} colour components (CMYK or YCCK)"
        elif marker == 0xDA:  # start of scan: the header is complete
            return None
        pos += 2 + length
    return "no image data (the scan never starts)"


class JpegDecoder:
    """Decode batches of JPEG files on `device` and apply the item transforms there (a `BatchDecoder`).

    Args:
        files: the image files; positions index into them.
        mode: 'RGB' or 'L' (as `ImageBlock.mode`).
        item_tfms: deterministic `Resize` transforms, applied in order.
        device: where images are decoded (CUDA: nvJPEG) and batches made.
        max_pixels: the decompression-bomb guard (larger files go to `load_image`, which refuses them).

    `pillow_files` counts the files that went through `load_image` instead (see the module docstring).

    Example:
        >>> dec = JpegDecoder(files, "RGB", [Resize(224)], torch.device("cuda"))
        >>> x = dec.decode([dec.read(i) for i in range(8)], list(range(8)))   # uint8 (8, 3, 224, 224) on CUDA
    """

    def __init__(self, files: Sequence[Path], mode: str, item_tfms: Sequence[Resize], device: torch.device,
                 max_pixels: int | None = None):
        from torchvision.io import ImageReadMode

        # paths kept as given when they are Paths already: Path(p) re-parses each one (77 ms for 42,000 files,
        # paid again by every host_decoder())
        self.files = [f if isinstance(f, Path) else Path(f) for f in files]
        self.mode, self.item_tfms = mode, list(item_tfms)
        self.device, self.max_pixels = torch.device(device), max_pixels
        self.read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
        self.pillow_files = 0
        where = "nvJPEG" if self.device.type == "cuda" else "torchvision's JPEG decoder"
        sizes = ", ".join(f"Resize({t.size[0]}x{t.size[1]}, {t.method})" for t in self.item_tfms)
        self.description = f"{where} on {self.device}" + (f", then {sizes} there" if sizes else "")

    def read(self, position: int) -> tuple[torch.Tensor, str | None]:
        """(the file's bytes as a uint8 tensor, why it must go through Pillow or None). In a reader thread."""
        data = read_file_buffer(self.files[position])  # writable: wrapped below without a copy
        if not data:  # load_image's error, naming the file
            return torch.empty(0, dtype=torch.uint8), "the file is empty"
        return torch.frombuffer(data, dtype=torch.uint8), jpeg_problem(data, self.max_pixels)

    def host_decoder(self) -> "JpegDecoder":
        """The same decoding on the CPU (torchvision's libjpeg decoder, then Pillow's rules), for the worker processes
        of `DecodeLoader(num_workers=n)`: no GPU time taken from the training step."""
        return JpegDecoder(self.files, self.mode, self.item_tfms, torch.device("cpu"), self.max_pixels)

    def decode(self, raws: Sequence[tuple[torch.Tensor, str | None]], positions: Sequence[int]) -> torch.Tensor:
        """One uint8 (N,C,H,W) batch on the device from `read` results, in order."""
        images: list[torch.Tensor | None] = [None] * len(raws)
        direct = [k for k, (_, why) in enumerate(raws) if why is None]
        for k, x in zip(direct, self._decode_many([raws[k][0] for k in direct])):
            images[k] = x
        for k, x in enumerate(images):
            if x is None:  # Pillow's rules (and its error, naming the file) for the files the device cannot do
                self.pillow_files += 1
                images[k] = load_image(self.files[positions[k]], self.mode, self.max_pixels).to(self.device)
        batch = apply_resizes([x for x in images if x is not None], self.item_tfms)
        shapes = {tuple(x.shape) for x in batch}
        if len(shapes) > 1:
            sample = [self.files[positions[k]].name for k in range(min(3, len(batch)))]
            raise ValueError(f"cannot batch images of different sizes {sorted(shapes)[:4]} (e.g. {sample}); add an "
                             "item transform that gives every image the same size, e.g. item_tfms=Resize(224)")
        return torch.stack(batch)

    def _decode_many(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """decode_jpeg on the whole list; when that fails, file by file (None where it fails)."""
        from torchvision.io import decode_jpeg

        if not data:
            return []
        if self.device.type == "cuda":
            # torchvision allocates the outputs on the current stream but nvJPEG writes them from a stream of its
            # own that is not ordered after this one, so memory freed here while kernels still read it (the
            # previous batch's resize) could be overwritten early (pytorch/vision#9606). Waiting for this stream
            # first closes that window; its queue is short (the decode loader's stream runs at high priority).
            torch.cuda.current_stream(self.device).synchronize()
        try:
            return list(decode_jpeg(data, mode=self.read_mode, device=self.device))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for d in data:
                try:
                    out.append(decode_jpeg(d, mode=self.read_mode, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out


def apply_resizes(images: list[torch.Tensor], tfms: Sequence[Resize]) -> list[torch.Tensor]:
    """`Resize` transforms over images on any device: images of one size are cropped and resized as one batch
    (the same `layout` as `Resize.__call__`, so the same pixels); a layout with padding goes image by image."""
    for tfm in tfms:
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, x in enumerate(images):
            groups.setdefault(tuple(x.shape), []).append(k)
        out: list[torch.Tensor] = list(images)
        for shape, ks in groups.items():
            (top, left, ch, cw), (nh, nw), _ = tfm.layout(shape[-2], shape[-1])
            if (nh, nw) != tfm.size:
                for k in ks:
                    out[k] = tfm(images[k])
                continue
            group = torch.stack([images[k] for k in ks])[:, :, top:top + ch, left:left + cw]
            group = resize_images(group, nh, nw)
            for j, k in enumerate(ks):
                out[k] = group[j]
        images = out
    return images


def _self_test(device: torch.device, mode: str) -> str | None:
    """None when torchvision decodes a tiny JPEG on `device`; else the error (e.g. no nvJPEG in this build)."""
    try:
        import io

        import numpy as np
        from PIL import Image
        from torchvision.io import ImageReadMode, decode_jpeg

        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(buf, "JPEG")
        t = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        decode_jpeg([t], mode=ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY, device=device)
    except Exception as e:  # an import error, a build without nvJPEG, a driver problem
        return f"{type(e).__name__}: {e}"
    return None


def jpeg_batch_decoder(block: Any, values: Sequence[Any], item_tfms: Sequence[Any],
                       device: torch.device) -> tuple[JpegDecoder | None, str]:
    """`ImageBlock.batch_decoder`: a JpegDecoder for `values` when every one is a JPEG file, the mode is fixed and
    every item transform is a deterministic Resize; else (None, why not)."""
    if block.mode not in ("RGB", "L"):
        return None, f"mode={block.mode!r} keeps each file's channels (the device decoder needs 'RGB' or 'L')"
    if not all(isinstance(v, (str, Path)) for v in values):
        return None, "some inputs are not files"
    other = [v for v in values if Path(v).suffix.lower() not in JPEG_SUFFIXES]
    if other:
        return None, f"{len(other)} of {len(values)} files are not JPEG (e.g. {Path(other[0]).name})"
    for t in item_tfms:
        if not isinstance(t, Resize) or t.random:
            return None, f"the item transform {t!r} cannot run in the device decoder (only Resize without random)"
    if not item_tfms and block.estimate_bytes(values, item_tfms) is None:
        return None, "the images have different sizes and no Resize makes them equal"
    failed = _self_test(device, block.mode)
    if failed:
        return None, f"torchvision cannot decode JPEG on {device} ({failed})"
    decoder = JpegDecoder(values, block.mode, item_tfms, device, block.max_pixels)
    return decoder, decoder.description
