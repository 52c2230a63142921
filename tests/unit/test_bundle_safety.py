"""Bundles, checkpoints and loads that never lose data or lie (issue 14): atomic re-export, no temp files left,
NaN refusal, all-or-nothing learn.load, the recipe's meaning hash and schema, regular files only, one-sentence
errors for damaged files and full disks, labels with undecodable bytes. Real files on disk throughout."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import learnkit as lk
from learnkit import Learner, load_learner
from learnkit.core.registry import register_model
from learnkit.core.serialization import atomic_write, save_tensors
from learnkit.export import bundle as bundle_module
from learnkit.export.recipe import meaning_sha256
from learnkit.testing import classification_items, synthetic_classification, tiny_mlp

REPO = Path(__file__).resolve().parents[2]


def _learner(tmp_path, hidden=16, seed=0):
    lk.set_seed(seed)
    data = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock), batch_tfms=[lk.Normalize(0.1, 2.0)],
                        splitter=lk.RandomSplitter(0.25, seed=0)).databunch(
        classification_items(96), batch_size=32, device="cpu", seed=0)
    return Learner(data, tiny_mlp(hidden=hidden), path=tmp_path, progress=False)


def _probs(predictor, learn):
    return predictor.predict_batch([x for x, _ in learn.data.valid_dl.dataset.items[:8]])[1]


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def _rewrite(folder, recipe, rehash=True):
    if rehash:
        recipe["meaning_sha256"] = meaning_sha256(recipe)
    (folder / "recipe.json").write_text(json.dumps(recipe))


@pytest.fixture
def exported(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(1, 1e-2)
    return learn, learn.export("bundle")


# ------------------------------------------------------------------ 2. atomic re-export
@pytest.mark.parametrize("exc", [RuntimeError("card writer crashed"), KeyboardInterrupt(),
                                 OSError(errno.ENOSPC, "No space left on device")])
def test_failed_re_export_keeps_old_bundle_loadable_and_leaves_no_temp(exported, monkeypatch, exc):
    learn, folder = exported
    old = _probs(load_learner(folder, device="cpu"), learn)
    learn.fit(1, 1e-1)  # new weights
    new = _probs_of_model(learn)
    assert not torch.allclose(old, new)

    def fail(*args, **kwargs):  # after the new weights and recipe are written, before the swap
        raise exc
    monkeypatch.setattr(bundle_module, "_write_card", fail)
    with pytest.raises(type(exc)) as info:
        learn.export("bundle")
    if isinstance(exc, OSError):  # full disk: one sentence naming the bundle
        assert f"could not write {folder}: no space left on device; the previous bundle" in str(info.value)
    assert torch.equal(_probs(load_learner(folder, device="cpu"), learn), old)
    assert _leftovers(folder.parent) == [] and sorted(p.name for p in folder.iterdir()) == \
        ["model_card.json", "model_card.md", "recipe.json", "weights.safetensors"]
    monkeypatch.undo()
    learn.export("bundle")  # a complete re-export replaces it
    assert torch.allclose(_probs(load_learner(folder, device="cpu"), learn), new, atol=1e-6)
    assert _leftovers(folder.parent) == []


def _probs_of_model(learn):
    xs = torch.stack([x for x, _ in learn.data.valid_dl.dataset.items[:8]])
    learn.model.eval()
    with torch.no_grad():
        return torch.softmax(learn.model((xs - 0.1) / 2.0), 1)


def test_crash_between_the_swap_renames_keeps_the_old_bundle_and_says_where(exported, monkeypatch):
    learn, folder = exported
    old = _probs(load_learner(folder, device="cpu"), learn)
    real_rename, calls = os.rename, []

    def rename(src, dst):  # the second rename (new bundle into place) never happens: a kill at that moment
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)
    monkeypatch.setattr(bundle_module.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        learn.export("bundle")
    monkeypatch.undo()
    assert torch.equal(_probs(load_learner(folder, device="cpu"), learn), old)  # put back
    assert _leftovers(folder.parent) == []
    # if the process had died right there: the old bundle is aside, and load_learner says where
    aside = folder.with_name(f".bundle.{os.getpid()}-0000abcd.learnkit-previous")
    os.rename(folder, aside)
    with pytest.raises(FileNotFoundError, match=rf"an interrupted export left the previous bundle at {aside}: "
                                                "rename it to bundle"):
        load_learner(folder, device="cpu")
    learn.export("bundle")  # the next complete export removes it
    assert _leftovers(folder.parent) == [] and (folder / "recipe.json").exists()


def test_export_refuses_a_folder_holding_other_files(exported):
    learn, folder = exported
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"bundle holds files that are not part of a bundle \(notes.txt\)"):
        learn.export("bundle")
    assert (folder / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ 3. temp files
def test_atomic_write_interrupted_leaves_no_temp_and_old_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_temp_files_of_a_killed_writer_are_removed_at_the_next_write(tmp_path):
    # A real process killed (SIGKILL) in the middle of an atomic write and of an export.
    script = textwrap.dedent(f"""
        import importlib.util, os, signal
        # the module alone (it needs torch only), not the whole package: a quicker subprocess
        spec = importlib.util.spec_from_file_location("serialization", {str(REPO / "learnkit/core/serialization.py")!r})
        serialization = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(serialization)
        with serialization.atomic_write({str(tmp_path / "f.bin")!r}) as tmp:
            tmp.write_bytes(b"x" * 100000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = _leftovers(tmp_path)
    assert len(left) == 1 and left[0].startswith(".f.bin.") and left[0].endswith(".learnkit-tmp")
    (tmp_path / f".bundle.{proc.pid}-0badf00d.learnkit-tmp").mkdir()  # a killed export's folder
    (tmp_path / f".bundle.{proc.pid}-0badf00d.learnkit-tmp" / "weights.safetensors").write_bytes(b"x")
    (tmp_path / ".f.bin.ab12cd34.tmp").write_bytes(b"x")  # what learnkit <= this version left (mkstemp)
    mine = tmp_path / f".other.{os.getpid()}-12345678.learnkit-tmp"  # a live writer's (this process): kept
    mine.write_bytes(b"x")
    with atomic_write(tmp_path / "f.bin") as tmp:
        tmp.write_bytes(b"new")
    assert (tmp_path / "f.bin").read_bytes() == b"new"
    assert _leftovers(tmp_path) == [mine.name]


# ------------------------------------------------------------------ 4. NaN / inf
def test_model_with_nan_or_inf_weights_refuses_to_export(tmp_path):
    learn = _learner(tmp_path)
    with torch.no_grad():
        learn.model[3].weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"parameter '3.weight' holds 1 NaN/inf value\(s\) of 48.*diverged"):
        learn.export("nan_bundle")
    with pytest.raises(ValueError, match=r"serving export: .*parameter '3.weight' holds 1 NaN/inf"):
        learn.export_torch(tmp_path / "nan.pt2")
    assert not (tmp_path / "nan_bundle").exists() and not (tmp_path / "nan.pt2").exists()
    with torch.no_grad():
        learn.model[3].weight[1, 2] = 0.0
        learn.model[1].bias[0] = float("inf")
    with pytest.raises(ValueError, match="parameter '1.bias' holds 1 NaN/inf"):
        learn.export("nan_bundle")
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------ 5. all-or-nothing learn.load
def test_load_of_mismatching_checkpoint_leaves_model_and_optimizer_untouched(tmp_path):
    saved = _learner(tmp_path, hidden=16)
    saved.fit(1, 1e-2)
    file = saved.save("m")
    other = _learner(tmp_path, hidden=12, seed=1)
    other.fit(1, 1e-2)
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"load: {file} does not fit the model: parameter '1.weight' has shape "
                                         r"\(16, 8\) in the file but \(12, 8\) in the model; the model was left"):
        other.load("m")
    assert all(torch.equal(v, before[k]) for k, v in other.model.state_dict().items())
    # the model fits but the optimizer state does not (a momentum of another shape): nothing is loaded
    state = torch.load(file, weights_only=True)
    same = _learner(tmp_path, hidden=16, seed=2)
    same.fit(1, 1e-2)
    p0 = state["opt"]["param_groups"][0]["params"][0]
    key = next(k for k, v in state["opt"]["state"][p0].items() if torch.is_tensor(v) and v.ndim > 0)
    state["opt"]["state"][p0][key] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "models" / "bad_opt.pth")
    before = {k: v.clone() for k, v in same.model.state_dict().items()}
    opt_before = [{k: v.clone() for k, v in s.items()} for s in same.opt.state.values()]
    with pytest.raises(ValueError, match=r"bad_opt.pth does not fit the optimizer: its '\w+' of parameter \d+ has "
                                         r"shape \(3, 3\) but the optimizer expects \(16, 8\) \(a parameter of shape \(16, 8\)\); nothing "
                                         "was loaded"):
        same.load("bad_opt")
    assert all(torch.equal(v, before[k]) for k, v in same.model.state_dict().items())
    assert all(torch.equal(v, b[k]) for s, b in zip(same.opt.state.values(), opt_before) for k, v in s.items())
    # with_opt=False loads the fitting model alone
    same.load("bad_opt", with_opt=False)
    assert all(torch.equal(v, state["model"][k]) for k, v in same.model.state_dict().items())


# ------------------------------------------------------------------ 6. the recipe's meaning is hashed
@pytest.mark.parametrize("edit,fields", [
    (lambda r: r["classes"].__setitem__(0, "cat"), "classes"),
    (lambda r: r["blocks"][1]["classes"].__setitem__(0, "cat"), "blocks"),
    (lambda r: r["batch_tfms"][0]["std"].__setitem__(0, 3.0), "batch_tfms"),
    (lambda r: r.__setitem__("n_inp", 1) or r["model"]["kwargs"].__setitem__("dropout", 0.5), "model"),
])
def test_edited_recipe_is_reported_as_tampering(exported, edit, fields):
    _, folder = exported
    recipe = json.loads((folder / "recipe.json").read_text())
    edit(recipe)
    _rewrite(folder, recipe, rehash=False)
    with pytest.raises(ValueError, match=rf"{folder / 'recipe.json'} was edited after export: its {fields} no "
                                         "longer match the sha256 recorded in its meaning_sha256 \\(tampering"):
        load_learner(folder, device="cpu")


# ------------------------------------------------------------------ 7. schema before building
BUILT = []


@register_model("test_bundle_counting_mlp")
def counting_mlp(n_in: int = 8, n_out: int = 3, hidden: list = (16,)) -> torch.nn.Module:
    device = torch.empty(0).device.type  # "meta" inside load_learner's dry run
    BUILT.append(device)
    if max(hidden) > 10_000 and device != "meta":  # a regression must fail here, not exhaust the test machine
        raise MemoryError(f"test guard: a model with hidden={hidden} was built for real")
    return lk.create_model("mlp", n_in=n_in, n_out=n_out, hidden=list(hidden))


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.__setitem__("exec", "rm -rf /"), r"unknown key\(s\) \['exec'\]"),
    (lambda r: r.pop("weights"), "is damaged: it has no 'weights' entry"),
    (lambda r: r.__setitem__("n_inp", "1"), "n_inp is str \"1\", expected int"),
    (lambda r: r["model"]["kwargs"].__setitem__("checkpoint_path", "/etc/passwd"),
     "model 'test_bundle_counting_mlp' has no parameter 'checkpoint_path'"),
    (lambda r: r["model"]["kwargs"].__setitem__("hidden", [10**7]),
     r"argument 'hidden' of model 'test_bundle_counting_mlp'\[0\] = 10000000 is outside the allowed range"),
    (lambda r: r["model"]["kwargs"].__setitem__("hidden", {"__class__": "os.system"}),
     "argument 'hidden' of model 'test_bundle_counting_mlp' holds"),
    (lambda r: r["blocks"][0].__setitem__("dtype", "from_file"), "asks for dtype 'from_file'; allowed"),
    (lambda r: r.__setitem__("mixed_precision", "Tensor"), "mixed_precision 'Tensor' is not one of"),
    (lambda r: r.__setitem__("requires", ["os"]), "asks to import 'os'; only learnkit's own modules"),
    (lambda r: r["weights"].__setitem__("file", "../../etc/passwd"), "must be a plain file name"),
])
def test_recipe_schema_is_checked_before_anything_is_built(tmp_path, edit, message):
    lk.set_seed(0)
    learn = Learner(synthetic_classification(n=64), lk.create_model("test_bundle_counting_mlp"), path=tmp_path,
                    progress=False)
    folder = learn.export("bundle")
    load_learner(folder, device="cpu")  # as exported: loads (and builds: meta, then real)
    BUILT.clear()
    recipe = json.loads((folder / "recipe.json").read_text())
    edit(recipe)
    _rewrite(folder, recipe)  # re-hashed: a recipe crafted to pass the meaning check
    with pytest.raises(ValueError, match=message) as info:
        load_learner(folder, device="cpu")
    assert str(folder / "recipe.json") in str(info.value) and BUILT == []


def test_recipe_cannot_pass_unchecked_dicts_to_third_party_constructors(exported):
    _, folder = exported
    recipe = json.loads((folder / "recipe.json").read_text())
    recipe["model"] = {"name": "vision_model", "kwargs": {"arch": "resnet18", "n_out": 3,
                                                         "arch_kwargs": {"checkpoint_path": "/tmp/evil.pth"}}}
    recipe["requires"].append("learnkit.vision.models")
    _rewrite(folder, recipe)
    with pytest.raises(ValueError, match=r"argument 'arch_kwargs' of model 'vision_model' holds \['checkpoint_path'\]"
                                         r": this builder accepts no dict entries in a recipe"):
        load_learner(folder, device="cpu")


def test_recipe_asking_for_a_huge_model_is_refused_on_the_meta_device(tmp_path):
    learn = Learner(synthetic_classification(n=64), lk.create_model("test_bundle_counting_mlp"), path=tmp_path,
                    progress=False)
    folder = learn.export("bundle")
    recipe = json.loads((folder / "recipe.json").read_text())
    recipe["model"]["kwargs"]["hidden"] = [60000, 60000, 60000]  # within the ints' limit: ~7e9 parameters
    _rewrite(folder, recipe)
    BUILT.clear()
    with pytest.raises(ValueError, match=r"weights.safetensors lacks tensor '5.weight', which model "
                                         "'test_bundle_counting_mlp' built from recipe.json needs"):
        load_learner(folder, device="cpu")
    assert BUILT == ["meta"]


# ------------------------------------------------------------------ 8. regular files only (subprocess: no hang)
def test_fifo_device_link_and_folder_in_a_bundle_are_refused_without_hanging(exported, tmp_path):
    learn, folder = exported
    learn.save("ckpt")
    script = textwrap.dedent(f"""
        import os, shutil, sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        import learnkit as lk
        import learnkit.testing
        folder = Path({str(folder)!r})
        def attempt(label, fn):
            try:
                fn()
                print(label, "LOADED")
            except Exception as e:
                print(label, type(e).__name__, str(e).replace(chr(10), " "))
        for name in ("weights.safetensors", "recipe.json"):
            original = (folder / name).read_bytes()
            (folder / name).unlink()
            for kind in ("fifo", "zero", "dir"):
                if kind == "fifo":
                    os.mkfifo(folder / name)
                elif kind == "zero":
                    os.symlink("/dev/zero", folder / name)
                else:
                    (folder / name).mkdir()
                attempt(name + ":" + kind, lambda: lk.load_learner(folder, device="cpu"))
                (folder / name).rmdir() if kind == "dir" else (folder / name).unlink()
            (folder / name).write_bytes(original)
        with open(folder / "recipe.json", "ab") as f:
            f.truncate(65 * 2**20)  # sparse: 65 MB
        attempt("recipe.json:huge", lambda: lk.load_learner(folder, device="cpu"))
        ckpt = Path({str(tmp_path / "models" / "ckpt.pth")!r})
        ckpt.unlink()
        os.mkfifo(ckpt)
        learn = lk.Learner(lk.testing.synthetic_classification(n=64), lk.testing.tiny_mlp(), path={str(tmp_path)!r},
                           progress=False)
        attempt("ckpt:fifo", lambda: learn.load("ckpt"))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert len(lines) == 8, out.stdout + out.stderr
    for name in ("weights.safetensors", "recipe.json"):
        assert lines[f"{name}:fifo"] == f"ValueError {folder / name} is a FIFO (named pipe), not a regular file; " \
            f"the {'bundle weights file' if name.startswith('w') else 'bundle recipe'} must be a plain file. " \
            "Replace it with the file written by learnkit"
        assert lines[f"{name}:zero"].startswith(f"ValueError {folder / name} (a link to /dev/zero) is a device, not")
        assert lines[f"{name}:dir"].startswith(f"ValueError {folder / name} is a folder, not a regular file")
    assert lines["recipe.json:huge"] == f"ValueError {folder / 'recipe.json'} is {65 * 2**20} bytes, more than the " \
        "67108864 a bundle recipe may have; it is not a file learnkit wrote"
    assert lines["ckpt:fifo"].startswith("ValueError ") and "is a FIFO (named pipe)" in lines["ckpt:fifo"]


# ------------------------------------------------------------------ 9. damaged files, full disk
def test_damaged_bundle_files_are_one_sentence_naming_the_file(exported):
    learn, folder = exported
    weights = folder / "weights.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-100])  # truncated
    with pytest.raises(ValueError, match=rf"{weights} is {len(raw) - 100} bytes but {len(raw)} were recorded when "
                                         "it was written: the bundle weights file is truncated"):
        load_learner(folder, device="cpu")
    # a weights file lacking a tensor, with a recipe updated to match it (sha256, size, meaning hash)
    weights.write_bytes(raw)
    state = lk.load_tensors(weights)
    del state["3.bias"]
    save_tensors(state, weights)
    recipe = json.loads((folder / "recipe.json").read_text())
    recipe["weights"].update(sha256=lk.core.sha256_file(weights), bytes=weights.stat().st_size)
    _rewrite(folder, recipe)
    with pytest.raises(ValueError, match=rf"{weights} lacks tensor '3.bias', which model 'mlp' built from "
                                         "recipe.json needs"):
        load_learner(folder, device="cpu")


def test_truncated_checkpoint_is_one_sentence_for_load_and_resume(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[lk.Checkpoint("ckpt.pth")])
    for name in ("m.pth", "ckpt.pth"):
        file = tmp_path / "models" / name
        if name == "m.pth":
            learn.save("m")
        file.write_bytes(file.read_bytes()[:300])
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        learn.load("m")
    assert str(info.value) == (f"load: {tmp_path / 'models' / 'm.pth'} is truncated or damaged (not a complete torch "
                               "checkpoint file); use an earlier checkpoint or save it again")
    assert info.value.__cause__ is None and "inline_container" not in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())
    with pytest.raises(ValueError, match=rf"resume_from='{tmp_path / 'models' / 'ckpt.pth'}': .*ckpt.pth is truncated "
                                         "or damaged"):
        _learner(tmp_path).fit(1, 1e-2, resume_from=tmp_path / "models" / "ckpt.pth")
    torch.save({"format": "learnkit-checkpoint-1", "model": {}}, tmp_path / "models" / "partial.pth")
    with pytest.raises(ValueError, match="partial.pth is damaged: it has no 'opt' entry"):
        _learner(tmp_path).fit(1, 1e-2, resume_from=tmp_path / "models" / "partial.pth")


def test_full_disk_during_save_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    learn = _learner(tmp_path)
    file = learn.save("m")
    old = file.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as info:
        learn.save("m")
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno {errno.ENOSPC}] could not write {file}: no space left on device; the " \
        "previous file there (if any) is untouched. Fix: free some space and run again"
    assert file.read_bytes() == old and sorted(p.name for p in file.parent.iterdir()) == ["m.pth"]


# ------------------------------------------------------------------ 10. labels that are not valid UTF-8
def test_class_folder_with_undecodable_bytes_exports_and_round_trips(tmp_path):
    import numpy as np
    from PIL import Image
    from learnkit.vision import ImageDataBunch
    root = os.fsencode(tmp_path / "data")
    rng = np.random.default_rng(0)
    for split in (b"train", b"valid"):
        for cls in (b"caf\xff", b"plain"):
            os.makedirs(os.path.join(root, split, cls))
            for i in range(4):
                name = os.fsdecode(os.path.join(root, split, cls, b"%d.png" % i))
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(name)
    data = ImageDataBunch.from_folder(tmp_path / "data", batch_size=4, device="cpu", seed=0)
    assert data.classes == ["caf\udcff", "plain"]
    lk.set_seed(0)
    learn = Learner(data, lk.create_model("simple_cnn", n_in=3, n_out=2, widths=(4,)), path=tmp_path, progress=False)
    learn.fit(1, 1e-3)
    folder = learn.export("bundle")
    raw = (folder / "recipe.json").read_bytes()
    raw.decode("utf-8")  # strict UTF-8 JSON
    assert b'{"$fsencoded": "636166ff"}' in raw.replace(b"\n", b"").replace(b"  ", b"")
    json.loads((folder / "model_card.json").read_bytes().decode("utf-8"))
    assert "caf\\udcff" in (folder / "model_card.md").read_text(encoding="utf-8")
    predictor = load_learner(folder, device="cpu")
    assert predictor.classes == ["caf\udcff", "plain"]
    image = next((tmp_path / "data" / "valid").glob("*/0.png"))
    assert predictor.predict(image)[0] == learn.predict(image)[0]


def test_check_model_kwargs_declared_ranges_and_dict_params():
    from learnkit.core.registry import check_model_kwargs
    import learnkit.text.transformer  # noqa: F401  (registers bert_classifier with dict_params={"config": None})
    import learnkit.vision.models  # noqa: F401
    check_model_kwargs("mlp", {"n_in": 8, "n_out": 3, "hidden": [16, 16], "dropout": 0.1, "batch_norm": True})
    with pytest.raises(ValueError, match=r"argument 'hidden' of model 'mlp'\[1\] = 70000 is outside the allowed "
                                         r"range \[0, 65536\]"):
        check_model_kwargs("mlp", {"n_in": 8, "n_out": 3, "hidden": [16, 70000]})
    with pytest.raises(ValueError, match=r"argument 'dropout' of model 'mlp' = 1.5 is outside"):
        check_model_kwargs("mlp", {"n_in": 8, "n_out": 3, "dropout": 1.5})
    with pytest.raises(ValueError, match="model 'mlp' has no parameter 'n_inn'"):
        check_model_kwargs("mlp", {"n_inn": 8, "n_out": 3})
    check_model_kwargs("bert_classifier", {"config": {"hidden_size": 16, "vocab_size": 30522}, "n_out": 2,
                                           "pad_id": 0})
    check_model_kwargs("vision_model", {"arch": "resnet18", "n_out": 3, "arch_kwargs": None})
    with pytest.raises(ValueError, match="'arch_kwargs' of model 'vision_model' holds \\['pretrained_cfg_overlay'\\]"):
        check_model_kwargs("vision_model", {"arch": "timm:resnet18", "n_out": 3,
                                            "arch_kwargs": {"pretrained_cfg_overlay": {"file": "/x.pth"}}})
    with pytest.raises(ValueError, match="model builder 'os.system' is not registered"):
        check_model_kwargs("os.system", {})
