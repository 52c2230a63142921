"""Unit tests of learnkit.vision.image: decoding rules, bad files, the bomb guard, getters, labellers,
verify_images / decode_images and ImageBlock. Every image is built in tmp_path with Pillow."""
import pickle
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from learnkit.data.blocks import block_from_config
from learnkit.vision.image import (IMAGE_EXTENSIONS, ImageBlock, ImageLoadError, RegexLabeller, decode_images,
                                   get_image_files, load_image, parent_label, verify_images)


def save(path, im, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kwargs)
    return path


def noise(h, w, seed=0, mode="RGB"):
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode)


def png_header(width, height):
    """A valid PNG signature + IHDR claiming width x height (8-bit gray), a tiny IDAT and IEND."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- decoding rules --------------------------------------------------------------------------------

def test_exif_orientation_6_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))  # width 40, height 20: left half red, right half blue
    im.paste((255, 0, 0), (0, 0, 20, 20))
    plain = load_image(save(tmp_path / "plain.jpg", im, quality=95))
    assert plain.shape == (3, 20, 40)  # control: without the tag nothing turns
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    x = load_image(save(tmp_path / "rotated.jpg", im, quality=95, exif=exif))
    assert x.shape == (3, 40, 20) and x.dtype == torch.uint8 and x.is_contiguous()
    top, bottom = x[:, 5, 10].tolist(), x[:, 35, 10].tolist()  # the stored left (red) edge is now on top
    assert top[0] > 220 and top[2] < 40, top
    assert bottom[2] > 220 and bottom[0] < 40, bottom


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "int32"])
def test_16_bit_gray_is_scaled_not_clipped(tmp_path, dtype):
    values = np.array([[0, 32768, 65535, 257, 12850]], dtype=dtype)
    source = Image.fromarray(values)
    if dtype == "<u2":  # also through a 16-bit PNG file
        source = save(tmp_path / "deep.png", source)
        assert Image.open(source).mode.startswith("I")
    x = load_image(source, mode="L")
    assert x.shape == (1, 1, 5)
    assert x[0, 0].tolist() == [0, 128, 255, 1, 50]
    rgb = load_image(source)
    assert rgb.shape == (3, 1, 5) and torch.equal(rgb[0], rgb[2]) and rgb[0, 0, 2] == 255


def test_palette_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    opaque = load_image(save(tmp_path / "p.png", im))
    assert opaque[:, 0, 1].tolist() == [0, 0, 255]  # blue without transparency
    x = load_image(save(tmp_path / "pt.png", im, transparency=1))
    assert x[:, 0, 0].tolist() == [255, 0, 0]
    assert x[:, 0, 1].tolist() == [255, 255, 255]  # the transparent index shows the white background


def test_rgba_and_la_are_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 1))
    for i, px in enumerate([(255, 0, 0, 255), (0, 0, 0, 0), (0, 0, 0, 128), (0, 255, 0, 128)]):
        im.putpixel((i, 0), px)
    x = load_image(save(tmp_path / "a.png", im))
    assert x[:, 0].T.tolist() == [[255, 0, 0], [255, 255, 255], [127, 127, 127], [127, 255, 127]]
    la = Image.fromarray(np.array([[[0, 0], [200, 255]]], dtype=np.uint8), "LA")
    assert load_image(la, mode=None)[0, 0].tolist() == [255, 200]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    im.paste((0, 0, 0, 255), (8, 0, 16, 16))  # right half black
    x = load_image(save(tmp_path / "cmyk.jpg", im, quality=95))
    assert x.shape == (3, 16, 16)
    assert np.allclose(x[:, 8, 2].tolist(), [255, 0, 0], atol=12), x[:, 8, 2]
    assert np.allclose(x[:, 8, 13].tolist(), [0, 0, 0], atol=12), x[:, 8, 13]


def test_mode_l_gives_one_channel_with_pillows_luma(tmp_path):
    im = noise(6, 5)
    x = load_image(save(tmp_path / "c.png", im), mode="L")
    assert x.shape == (1, 6, 5)
    assert np.array_equal(x[0].numpy(), np.asarray(im.convert("L")))


def test_mode_none_keeps_channels_and_rgb_expands_gray(tmp_path):
    gray = save(tmp_path / "g.png", noise(4, 3, mode="L"))
    color = save(tmp_path / "c.png", noise(4, 3))
    rgba = save(tmp_path / "a.png", noise(4, 3).convert("RGBA"))
    bits = save(tmp_path / "b.png", noise(4, 3, mode="L").convert("1"))
    assert load_image(gray, mode=None).shape == (1, 4, 3)
    assert load_image(color, mode=None).shape == (3, 4, 3)
    assert load_image(rgba, mode=None).shape == (3, 4, 3)
    assert set(load_image(bits, mode=None).unique().tolist()) <= {0, 255}
    x = load_image(gray)
    assert x.shape == (3, 4, 3) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_in_memory_sources_give_the_same_tensor(tmp_path):
    im = noise(5, 7)
    path = save(tmp_path / "x.png", im)
    expected = load_image(path)
    arr = np.asarray(im)
    assert torch.equal(load_image(path.read_bytes()), expected)
    assert torch.equal(load_image(im), expected)
    assert torch.equal(load_image(arr), expected)
    assert torch.equal(load_image(expected), expected)
    assert torch.equal(load_image(arr.astype(np.float32) / 255), expected)
    assert load_image(arr[..., 0]).shape == (3, 5, 7)
    out = load_image(expected)
    out.zero_()  # the result owns its memory: the source is untouched
    assert expected.sum() > 0
    with pytest.raises(ValueError, match=r"shape \(5, 7, 5\)"):
        load_image(np.zeros((5, 7, 5), np.uint8))
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*\[0, 255\]"):
        load_image(np.array([[0.0, 255.0]]))
    with pytest.raises(ValueError, match="mode='RGBA'"):
        load_image(arr, mode="RGBA")


# --- bad files ---------------------------------------------------------------------------------------

def _bad_files(tmp_path):
    jpg = save(tmp_path / "full.jpg", noise(64, 64), quality=90).read_bytes()
    png = save(tmp_path / "full.png", noise(64, 64)).read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "half.png").write_bytes(png[:len(png) // 2])
    (tmp_path / "half.jpg").write_bytes(jpg[:len(jpg) // 2])
    (tmp_path / "notes.png").write_text("this is not an image\n")
    return {"empty.png": "empty", "half.png": "truncated", "half.jpg": "truncated",
            "notes.png": "not an image", "missing.jpg": "not found"}


def test_each_bad_file_is_an_image_load_error_with_its_own_reason(tmp_path):
    for name, reason in _bad_files(tmp_path).items():
        with pytest.raises(ImageLoadError) as info:
            load_image(tmp_path / name)
        assert name in str(info.value) and reason in info.value.reason, (name, str(info.value))
        assert info.value.path == tmp_path / name and "Fix:" in str(info.value)
    err = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries intact
    assert (err.path, err.reason, str(err)) == (info.value.path, info.value.reason, str(info.value))


def test_truncation_is_caught_even_when_pillow_is_told_to_accept_it(tmp_path, monkeypatch):
    _bad_files(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for name in ("half.png", "half.jpg"):
        with pytest.raises(ImageLoadError, match="truncated"):
            load_image(tmp_path / name)
    assert load_image(tmp_path / "full.jpg").shape == (3, 64, 64)


def test_oversized_images_are_refused_from_the_header(tmp_path, monkeypatch):
    small = save(tmp_path / "s.png", noise(2, 2))
    with pytest.raises(ImageLoadError, match=r"2x2 = 4 pixels, more than max_pixels=3.*max_pixels=4"):
        load_image(small, max_pixels=3)
    assert load_image(small, max_pixels=4).shape == (3, 2, 2)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    with pytest.raises(ImageLoadError, match="10000000000"):  # Pillow's own guard fires first by default
        load_image(bomb)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # learnkit's guard does not depend on Pillow's
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match=r"100000x100000 = 10,000,000,000 pixels.*max_pixels"):
        load_image(bomb)
    assert time.perf_counter() - start < 1.0


# --- getters and labellers ---------------------------------------------------------------------------

def test_get_image_files_sorts_filters_and_skips_hidden(tmp_path):
    root = tmp_path / ".cache" / "data"  # a root inside a hidden folder is fine
    for rel in ["b/2.PNG", "a/1.jpg", "a/.3.png", ".hidden/4.png", "c.jpeg", "sub/deeper/5.webp"]:
        save(root / rel, noise(2, 2))
    (root / "a" / "notes.txt").write_text("x")
    (root / "a" / "png").write_text("x")

    def rel(files):
        return [f.relative_to(root).as_posix() for f in files]
    assert rel(get_image_files(root)) == ["a/1.jpg", "b/2.PNG", "c.jpeg", "sub/deeper/5.webp"]
    assert rel(get_image_files(root, recurse=False)) == ["c.jpeg"]
    assert rel(get_image_files(root, folders=["sub", "a"])) == ["a/1.jpg", "sub/deeper/5.webp"]
    assert rel(get_image_files(root, recurse=False, folders="sub")) == []
    assert ".png" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS
    with pytest.raises(FileNotFoundError, match="nowhere"):
        get_image_files(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="valid"):
        get_image_files(root, folders=["valid"])


def test_parent_label():
    assert parent_label("data/train/cat/1.jpg") == "cat"


def test_regex_labeller_groups_errors_and_pickles(tmp_path):
    labeller = RegexLabeller(r"^(.+)_\d+\.jpg$")
    assert labeller(tmp_path / "great_pyrenees_173.jpg") == "great_pyrenees"
    assert RegexLabeller(r"[a-z]+")("img/123cat.jpg") == "cat"  # no group: the whole match
    assert RegexLabeller(r"/(\w+)/[^/]+$", on="path")("data/dog/1.jpg") == "dog"
    with pytest.raises(ValueError, match=r"pattern '\[a-z\]\+' does not match .*'123cat.jpg'"):
        RegexLabeller(r"[a-z]+", match=True)("img/123cat.jpg")
    with pytest.raises(ValueError, match=r"does not match the file name 'Abyssinian.jpg'.*on='path'"):
        labeller("Abyssinian.jpg")
    clone = pickle.loads(pickle.dumps(labeller))
    assert clone("a_b_1.jpg") == "a_b" and repr(clone) == repr(labeller)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RegexLabeller("(")


# --- many files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_workers", [0, 3])
def test_verify_images_returns_exactly_the_bad_files_in_order(tmp_path, num_workers):
    reasons = _bad_files(tmp_path)
    files = [tmp_path / n for n in ["full.png", "notes.png", "full.jpg", "missing.jpg", "half.png", "empty.png",
                                    "half.jpg"]]
    bad = verify_images([str(f) for f in files], num_workers=num_workers)
    assert [f for f, _ in bad] == [files[i] for i in (1, 3, 4, 5, 6)]
    assert all(reasons[f.name] in why for f, why in bad)


def test_decode_images_stacks_and_reports_bad(tmp_path):
    files = [save(tmp_path / f"{i}.png", noise(6, 5, seed=i)) for i in range(5)]
    (tmp_path / "bad.png").write_text("nope")
    order = files[:2] + [tmp_path / "bad.png"] + files[2:]
    images, bad = decode_images(order, on_bad="skip", num_workers=2)
    assert isinstance(images, torch.Tensor) and images.shape == (5, 3, 6, 5)
    assert torch.equal(images, torch.stack([load_image(f) for f in files]))
    assert [f for f, _ in bad] == [tmp_path / "bad.png"]
    with pytest.raises(ImageLoadError, match=r"bad.png.*on_bad='skip'"):
        decode_images(order)
    gray, _ = decode_images(files, mode="L", size=(4, 4), num_workers=0)
    assert gray.shape == (5, 1, 4, 4)


def test_decode_images_gives_a_list_when_shapes_differ(tmp_path):
    files = [save(tmp_path / f"{i}.png", noise(6, 5 + (i == 2), seed=i)) for i in range(4)]
    images, bad = decode_images(files, num_workers=2)
    assert isinstance(images, list) and not bad
    assert [tuple(x.shape) for x in images] == [(3, 6, 5), (3, 6, 5), (3, 6, 6), (3, 6, 5)]
    assert all(torch.equal(x, load_image(f)) for x, f in zip(images, files))
    same, _ = decode_images(files, size=6, num_workers=2)
    assert same.shape == (4, 3, 6, 6)


# --- ImageBlock ------------------------------------------------------------------------------------------

def test_image_block_encodes_exports_and_shows(tmp_path):
    import matplotlib.pyplot as plt
    path = save(tmp_path / "x.png", noise(5, 4))
    block = ImageBlock(mode="L", max_pixels=1000)
    assert block.encode(path).shape == (1, 5, 4) and block.n_channels == 1
    assert ImageBlock().n_channels == 3 and ImageBlock(mode=None).n_channels is None
    clone = block_from_config(block.to_config())
    assert isinstance(clone, ImageBlock) and (clone.mode, clone.max_pixels) == ("L", 1000)
    assert repr(clone) == "ImageBlock(mode='L')"
    with pytest.raises(ImageLoadError, match="max_pixels=10"):
        ImageBlock(max_pixels=10).encode(path)
    with pytest.raises(ValueError, match="mode='CMYK'"):
        ImageBlock(mode="CMYK")
    fig, (ax1, ax2) = plt.subplots(1, 2)
    block.show(torch.randn(1, 5, 4) * 3, ax1)  # a normalized float image: rescaled for display
    shown = ax1.images[0]
    assert shown.get_cmap().name == "gray" and 0 <= shown.get_array().min() and shown.get_array().max() <= 1
    ImageBlock().show(load_image(path), ax2)
    assert ax2.images[0].get_array().shape == (5, 4, 3)
    with pytest.raises(ValueError, match="not a batch"):
        block.show(torch.zeros(2, 3, 5, 4), ax1)


@pytest.mark.parametrize("process_min_files", [10_000, 8])  # threads, then the fork process pool
def test_encode_many_streams_what_encode_gives_in_order(tmp_path, monkeypatch, process_min_files):
    import learnkit.data.parallel as parallel_module
    monkeypatch.setattr(parallel_module, "PROCESS_MIN_VALUES", process_min_files)
    rng = np.random.default_rng(0)
    files = []
    for i in range(20):
        f = tmp_path / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (6 + i % 3, 5, 3), dtype=np.uint8)).save(f)
        files.append(str(f) if i % 2 else f)
    block = ImageBlock(mode="L")
    got = list(block.encode_many(files, num_workers=2))
    assert len(got) == 20
    for f, x in zip(files, got):
        assert torch.equal(x, block.encode(f))
    arrays = [np.zeros((4, 4, 3), dtype=np.uint8)] * 3  # not paths: encoded one by one
    assert [tuple(x.shape) for x in block.encode_many(arrays)] == [(1, 4, 4)] * 3
    (tmp_path / "07.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="07.png"):
        list(block.encode_many(files, num_workers=2))


# --- links, FIFOs and damaged PNGs: nothing listed twice, nothing that hangs, nothing half black (issue 14) ----

def _classes(root, names=("cat", "dog"), n=2):
    for c in names:
        for i in range(n):
            save(root / c / f"{c}{i}.png", noise(4, 4, seed=i))
    return root


def test_a_symlink_loop_in_a_class_folder_is_refused_naming_the_link(tmp_path):
    from learnkit.vision.data import ImageDataBunch
    root = _classes(tmp_path / "data")
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)  # cat/loop/dog/* would become "cat"
    with pytest.raises(ValueError, match=r"the link .*cat/loop points to .*data, a folder that contains the link"):
        get_image_files(root / "cat")
    with pytest.raises(ValueError, match=r"cat/loop .*symlink loop"):
        ImageDataBunch.from_folder(root, valid_pct=0.5, on_bad="skip", device="cpu", verbose=False)
    (root / "cat" / "loop").unlink()
    (root / "cat" / "deep").mkdir()
    (root / "cat" / "deep" / "up").symlink_to(root / "cat", target_is_directory=True)  # a loop below the root
    with pytest.raises(ValueError, match=r"cat/deep/up points to"):
        get_image_files(root)
    (root / "cat" / "deep" / "up").unlink()
    (root / "mirror").symlink_to(root, target_is_directory=True)  # a "class folder" that is the root itself
    with pytest.raises(ValueError, match=r"mirror points to"):
        get_image_files(root / "mirror")


def test_links_are_followed_inside_the_root_once_and_reported_outside_it(tmp_path):
    from learnkit.vision.image import find_image_files
    root, outside = _classes(tmp_path / "data", ("a", "b"), n=1), _classes(tmp_path / "elsewhere", ("x",), n=1)
    save(root / ".hidden" / "h.png", noise(4, 4))
    (root / "a" / "alias").symlink_to(root / "b", target_is_directory=True)  # b is walked as b, not again as a/alias
    (root / "c").mkdir()
    (root / "c" / "ext").symlink_to(outside / "x", target_is_directory=True)  # outside: not followed, reported
    (root / "c" / "same.png").symlink_to(root / "a" / "a0.png")  # the same real file: listed once, by its own path
    (root / "c" / "far.png").symlink_to(outside / "x" / "x0.png")  # a file link goes wherever it points
    (root / "c" / "h").symlink_to(root / ".hidden", target_is_directory=True)  # inside, not walked yet: followed
    (root / "c" / "gone.png").symlink_to(root / "nothing.png")
    files, problems = find_image_files(root)
    assert [f.relative_to(root).as_posix() for f in files] == ["a/a0.png", "b/b0.png", "c/far.png", "c/h/h.png"]
    assert [(p.relative_to(root).as_posix(), why.split(" (")[0]) for p, why in problems] == [
        ("c/ext", f"a link to the folder {outside / 'x'}, outside {root}: not followed"), ("c/gone.png", "a broken link")]
    with pytest.warns(UserWarning, match=r"(?s)left out 2 path\(s\).*c/ext: a link to the folder"):
        assert get_image_files(root) == files


_FIFO_SCRIPT = r"""
import os, sys, warnings
from pathlib import Path
import numpy as np
from PIL import Image
from learnkit.vision.data import ImageDataBunch
from learnkit.vision.image import ImageLoadError, find_image_files, load_image, verify_images
root = Path(sys.argv[1])
for c in ("cat", "dog"):
    for i in range(3):
        (root / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
os.mkfifo(root / "cat" / "x.png")  # nobody ever writes to it: opening it for reading blocks forever
os.symlink(root / "cat" / "x.png", root / "dog" / "link.png")
try:
    load_image(root / "cat" / "x.png")
except ImageLoadError as e:
    print("load_image:", e.reason)
print("verify_images:", verify_images([root / "dog" / "link.png"], num_workers=0))
print("find:", [(p.name, why) for p, why in find_image_files(root)[1]])
try:
    ImageDataBunch.from_folder(root, valid_pct=0.5, device="cpu", verbose=False)
except ValueError as e:
    print("error:", str(e).splitlines()[0])
with warnings.catch_warnings(record=True):
    warnings.simplefilter("always")
    data = ImageDataBunch.from_folder(root, valid_pct=0.5, on_bad="skip", device="cpu", verbose=False)
from learnkit.data.bunch import n_items
print("items:", n_items(data.train_dl) + n_items(data.valid_dl))
"""


def test_a_fifo_named_png_is_skipped_and_reported_instead_of_hanging(tmp_path):
    import os
    import subprocess
    import sys
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    try:  # a subprocess with a timeout: a regression fails here instead of hanging the suite
        run = subprocess.run([sys.executable, "-c", _FIFO_SCRIPT, str(tmp_path / "data")], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail("reading a folder with a FIFO named x.png hung")
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    assert out[0] == "load_image: not a regular file (a FIFO (named pipe))"
    assert out[1].startswith("verify_images: [(PosixPath(") and "link.png'), 'not a regular file (a FIFO" in out[1]
    assert out[2] == ("find: [('x.png', 'not a regular file (a FIFO (named pipe))'), ('link.png', 'not a regular "
                      f"file (a FIFO (named pipe), through a link to {tmp_path / 'data' / 'cat' / 'x.png'})')]")
    assert out[3] == "error: 2 files without a label or empty class folders:"
    assert out[4] == "items: 6"  # the six real images, neither the FIFO nor the link to it


def _png_chunks(data):
    """[(kind, payload)] of a PNG."""
    pos, out = 8, []
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def _png_from_chunks(chunks):
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
                                           for k, d in chunks)


def test_a_truncated_png_is_refused_even_with_load_truncated_images(tmp_path, monkeypatch):
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "IEND")  # the bytes 'IEND' early in the file: a file cut in half still holds them
    full = save(tmp_path / "full.png", noise(64, 64), pnginfo=info).read_bytes()
    (tmp_path / "cut.png").write_bytes(full[:len(full) // 2])
    # Cut inside the pixel data, yet every chunk is whole and the file ends with IEND (a repaired download).
    chunks = _png_chunks(full)
    idat = b"".join(d for k, d in chunks if k == b"IDAT")
    short = [(k, d) for k, d in chunks if k != b"IDAT" and k != b"IEND"] + [(b"IDAT", idat[:len(idat) // 2]),
                                                                              (b"IEND", b"")]
    (tmp_path / "short.png").write_bytes(_png_from_chunks(short))
    damaged = bytearray(full)
    damaged[full.index(b"IDAT") + 100] ^= 0xFF  # one flipped byte in the pixel data: the chunk's CRC fails
    (tmp_path / "flipped.png").write_bytes(bytes(damaged))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert Image.open(tmp_path / "short.png").load() is not None  # Pillow itself loads it (half black)
    for name, why in [("cut.png", r"PNG data is truncated \(chunk b'IDAT' at byte \d+ declares"),
                      ("short.png", "truncated .its compressed pixel data ends before the image does"),
                      ("flipped.png", "damaged .the CRC of chunk b'IDAT'")]:
        with pytest.raises(ImageLoadError, match=why):
            load_image(tmp_path / name)
    assert torch.equal(load_image(tmp_path / "full.png"), torch.from_numpy(np.array(noise(64, 64))).permute(2, 0, 1))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # and by default, too
    for name in ("cut.png", "short.png", "flipped.png"):
        with pytest.raises(ImageLoadError):
            load_image(tmp_path / name)
