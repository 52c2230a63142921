"""One vocabulary in the learner and its factories: `epochs`, `final_div_factor`, `weight_decay`; fastai's
spellings warn (naming the new word) and still work; unknown keywords fail at once with the nearest name;
factories leave the user's data and the process's cuDNN setting alone."""
import copy

import pytest
import torch
import torch.nn.functional as F

import learnkit as lk
from learnkit import Callback, Learner
from learnkit.testing import synthetic_classification, tiny_mlp

TINY = {"emb_size": 8, "hidden_size": 8, "n_layers": 1}


class Untouchable:
    """Stands for the data: any use of it fails the test, so an error raised with it came before any work."""

    def __getattr__(self, name):
        raise AssertionError(f"the data was used (.{name}) before the keyword arguments were checked")


class Record(Callback):
    def __init__(self):
        self.lrs, self.decay, self.no_decay, self.benchmark = [], set(), set(), set()

    def after_batch(self, learn):
        if learn.training:
            self.lrs.append(learn.opt.param_groups[0]["lr"])
            self.decay |= {g["weight_decay"] for g in learn.opt.param_groups if g["decay"]}
            self.no_decay |= {g["weight_decay"] for g in learn.opt.param_groups if not g["decay"]}
        self.benchmark.add(torch.backends.cudnn.benchmark)


def _learner(**kwargs):
    return Learner(synthetic_classification(n=96), tiny_mlp(), progress=False, **kwargs)


# ---------------------------------------------------------------- fastai's spellings
def test_fit_recipes_take_epochs_and_fastai_spellings_warn_and_work():
    learn = _learner()
    with pytest.warns(DeprecationWarning, match=r"fit\(n_epoch=\.\.\.\) is deprecated: use epochs="):
        learn.fit(n_epoch=2)
    assert len(learn.history.epoch_records) == 2
    rec = Record()
    with pytest.warns(DeprecationWarning) as warned:
        learn.fit_one_cycle(n_epochs=1, lr_max=1e-2, cbs=[rec])
    assert {str(w.message).split(" is ")[0] for w in warned} == {
        "fit_one_cycle(n_epochs=...)", "fit_one_cycle(lr_max=...)", "fit_one_cycle(cbs=...)"}
    assert len(learn.history.epoch_records) == 3
    new = Record()
    learn.fit_one_cycle(epochs=1, max_lr=1e-2, callbacks=[new])
    assert rec.lrs == pytest.approx(new.lrs) and max(new.lrs) > 5e-3  # the same schedule, peaking near 1e-2
    with pytest.raises(TypeError, match="got both 'n_epoch' and 'epochs'"):
        learn.fit(2, n_epoch=2)
    with pytest.raises(ValueError, match=r"fit\(epochs=0\)"):
        learn.fit(0)


def test_final_div_factor_in_every_recipe():
    learn, rec = _learner(), Record()
    learn.fit_flat_cos(2, lr=1e-2, final_div_factor=10, callbacks=[rec])
    assert rec.lrs[0] == pytest.approx(1e-2) and rec.lrs[-1] == pytest.approx(1e-3)
    old = Record()
    with pytest.warns(DeprecationWarning, match=r"fit_flat_cos\(div_final=\.\.\.\) is deprecated: use final_div_factor="):
        learn.fit_flat_cos(2, lr=1e-2, div_final=10, cbs=[old])
    assert old.lrs == pytest.approx(rec.lrs)
    sgdr = Record()
    learn.fit_sgdr(2, 1, max_lr=[1e-2], final_div_factor=100, callbacks=[sgdr])  # one lr per group, as a list
    n = len(learn.data.train_dl)
    assert len(sgdr.lrs) == 3 * n and sgdr.lrs[0] == pytest.approx(1e-2) and sgdr.lrs[-1] == pytest.approx(1e-4)
    assert any(b > a for a, b in zip(sgdr.lrs, sgdr.lrs[1:]))  # a warm restart
    one_cycle = Record()
    learn.fit_one_cycle(1, max_lr=1e-2, div_factor=10, final_div_factor=10, callbacks=[one_cycle])
    assert one_cycle.lrs[-1] == pytest.approx(1e-4)
    tune = Record()
    learn.fine_tune(1, base_lr=1e-2, freeze_epochs=1, final_div_factor=10, callbacks=[tune])
    assert tune.lrs[n - 1] == pytest.approx(1e-2 / 25 / 10) and tune.lrs[-1] == pytest.approx(1e-2 / 2 / 5 / 10)


def test_learner_takes_fastai_spellings_with_one_warning_each():
    data, model = synthetic_classification(n=96), tiny_mlp()
    cb = Record()
    with pytest.warns(DeprecationWarning) as warned:
        learn = Learner(dls=data, model=model, loss_func=F.cross_entropy, opt_func=torch.optim.SGD, cbs=[cb], wd=0.1,
                        progress=False)
    assert sorted(str(w.message).split(" is ")[0] for w in warned) == [
        "Learner(cbs=...)", "Learner(dls=...)", "Learner(loss_func=...)", "Learner(opt_func=...)", "Learner(wd=...)"]
    assert learn.data is data and learn.loss_fn is F.cross_entropy and learn.opt_fn is torch.optim.SGD
    assert cb in learn.callbacks and learn.weight_decay == 0.1
    opt = learn.create_opt()
    assert type(opt) is torch.optim.SGD
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # weights decay, biases do not
    with pytest.raises(TypeError, match="got both 'loss_func' and 'loss_fn'"):
        Learner(data, model, loss_fn=F.cross_entropy, loss_func=F.cross_entropy)


def test_unknown_keywords_fail_at_once_naming_the_nearest_valid_one():
    data = synthetic_classification(n=96)
    with pytest.raises(TypeError, match="unexpected keyword argument 'metrix'; did you mean 'metrics'"):
        Learner(data, tiny_mlp(), metrix=[lk.accuracy])
    with pytest.raises(TypeError, match="'batch_size' belongs to the data, not the learner"):
        Learner(data, tiny_mlp(), batchsize=3)
    with pytest.raises(TypeError, match="did you mean 'resume_from'"):
        _learner().fit_one_cycle(1, resume_form="x.pth")
    from learnkit.text import language_model_learner, text_classifier_learner
    from learnkit.vision import vision_learner
    with pytest.raises(TypeError, match=r"vision_learner\(\) got an unexpected keyword argument 'batchsize': "
                                        "'batch_size' belongs to the data"):
        vision_learner(Untouchable(), "resnet18", pretrained=False, batchsize=3)
    with pytest.raises(TypeError, match="did you mean 'metrics'"):
        vision_learner(Untouchable(), "resnet18", pretrained=False, metrix=[lk.accuracy])
    with pytest.raises(TypeError, match="did you mean 'drop_mult'"):
        text_classifier_learner(Untouchable(), drop_mul=0.3)
    with pytest.raises(TypeError, match="did you mean 'mixed_precision'"):
        language_model_learner(Untouchable(), mixed_precison=None)


def test_factories_show_their_options_in_the_signature():
    import inspect
    from learnkit.text import language_model_learner, text_classifier_learner
    from learnkit.vision import vision_learner
    for factory in (vision_learner, text_classifier_learner, language_model_learner):
        params = inspect.signature(factory).parameters
        for name in ("callbacks", "path", "mixed_precision", "progress", "weight_decay", "opt_fn", "pretrained",
                     "weights", "cudnn_benchmark"):
            assert name in params, (factory.__name__, name)
        assert params["pretrained"].default is True and params["weights"].default is None


# ---------------------------------------------------------------- weight decay
def test_weight_decay_goes_to_the_decay_groups_and_equals_a_hand_written_adamw():
    model = tiny_mlp()
    reference = copy.deepcopy(model)
    learn = Learner(synthetic_classification(seed=3, batch_size=16), model, progress=False, weight_decay=0.3)
    learn.fit(2, lr=1e-2)
    data = synthetic_classification(seed=3, batch_size=16)
    decay = [p for p in reference.parameters() if p.ndim > 1]
    no_decay = [p for p in reference.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2,
                            betas=(0.9, 0.99), eps=1e-5, weight_decay=0.3)
    for _ in range(2):
        for xb, yb in data.train_dl:
            F.cross_entropy(reference(xb), yb).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    default = Learner(synthetic_classification(seed=3, batch_size=16), tiny_mlp(), progress=False)
    default.fit(1, lr=1e-2)
    assert {g["weight_decay"] for g in default.opt.param_groups if g["decay"]} == {0.01}  # AdamW's default kept


def test_fit_weight_decay_is_for_that_fit_and_wd_warns():
    learn, rec = _learner(weight_decay=0.1), Record()
    learn.fit(1, weight_decay=0.5, callbacks=[rec])
    assert rec.decay == {0.5} and rec.no_decay == {0.0}
    assert {g["weight_decay"] for g in learn.opt.param_groups} == {0.1, 0.0}  # restored after the fit
    again = Record()
    with pytest.warns(DeprecationWarning, match=r"fit_one_cycle\(wd=\.\.\.\) is deprecated: use weight_decay="):
        learn.fit_one_cycle(1, 1e-3, wd=0.25, callbacks=[again])
    assert again.decay == {0.25}


# ---------------------------------------------------------------- factories leave inputs and the process alone
def test_cudnn_benchmark_is_scoped_to_the_fit():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        learn, rec = _learner(cudnn_benchmark=True), Record()
        learn.fit(1, callbacks=[rec])
        assert rec.benchmark == {True} and torch.backends.cudnn.benchmark is False
        learn.get_preds()
        learn.validate()
        assert torch.backends.cudnn.benchmark is False
        untouched, rec = _learner(), Record()  # None: the process setting as it is
        torch.backends.cudnn.benchmark = True
        untouched.fit(1, callbacks=[rec])
        assert rec.benchmark == {True} and torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_vision_learner_leaves_the_data_and_the_cudnn_flag_alone(tmp_path):
    from test_vision_data import make_folder
    from learnkit.vision import ImageDataBunch, aug_transforms, vision_learner
    make_folder(tmp_path, n=12, size=16)
    augment = aug_transforms(max_rotate=0, max_warp=0, max_lighting=0)
    data = ImageDataBunch.from_folder(tmp_path, batch_size=8, seed=0, verbose=False, batch_tfms=augment)
    user_tfms = list(data.batch_tfms)
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        learn = vision_learner(data, "resnet9", pretrained=False, progress=False)
        rec = Record()
        learn.fit(1, callbacks=[rec])
        assert torch.backends.cudnn.benchmark is False and rec.benchmark == {False}  # CPU: not turned on
        asked = vision_learner(data, "resnet9", pretrained=False, progress=False, cudnn_benchmark=True)
        rec = Record()
        asked.fit(1, callbacks=[rec])
        assert rec.benchmark == {True} and torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
    assert list(data.batch_tfms) == user_tfms and all(a is b for a, b in zip(data.batch_tfms, user_tfms))
    assert learn.data is not data and learn.data.train_dl is data.train_dl  # a view sharing the loaders
    assert type(learn.data.batch_tfms[-1]).__name__ == "Normalize"
    with pytest.warns(DeprecationWarning, match=r"vision_learner\(cbs=\.\.\.\) is deprecated: use callbacks="):
        vision_learner(dls=data, arch="resnet9", pretrained=False, progress=False, cbs=[Record()])


def test_with_batch_tfms_is_a_view_that_leaves_the_bunch_alone():
    data = synthetic_classification(n=64)
    norm = lk.Normalize(0.5, 2.0)
    view = data.with_batch_tfms([norm])
    assert len(data.batch_tfms) == 0 and list(view.batch_tfms) == [norm]
    assert view.train_dl is data.train_dl and view.blocks == data.blocks and view.blocks is not data.blocks
    x = next(iter(data.valid_dl))[0]
    assert torch.equal(view.transfer((x,), training=False)[0], (x - 0.5) / 2.0)
    assert torch.equal(data.transfer((x,), training=False)[0], x)


def test_text_classifier_reencodes_on_a_new_bunch_and_says_so(tmp_path, caplog, capsys):
    from test_transformer import write_model_dir
    from learnkit.text import TextDataBunch, text_classifier_learner
    folder = write_model_dir(tmp_path / "tiny-bert")
    texts = ["the cat sat on the mat", "hello world big dog"] * 8
    data = TextDataBunch.from_lists(texts, ["cat", "dog"] * 8, seed=0, batch_size=4, device="cpu", min_freq=1)
    block, train_dl = data.x_block, data.train_dl
    with caplog.at_level("INFO", logger="learnkit.text.learner"):
        learn = text_classifier_learner(data, weights=folder, max_len=12, path=tmp_path)
    line = "re-encoded the 16 texts with tiny-bert's WordPiece tokenizer"
    assert line in caplog.text and line in capsys.readouterr().out
    assert data.x_block is block and data.train_dl is train_dl and learn.data is not data
    assert isinstance(learn.data.x_block, lk.text.SubwordTextBlock)
    old = text_classifier_learner(data, folder, max_len=12, progress=False)  # the one-liner: the folder as arch
    first = next(iter(learn.model.encoder.state_dict()))
    assert torch.equal(old.model.encoder.state_dict()[first], learn.model.encoder.state_dict()[first])
    scratch = text_classifier_learner(data, weights=folder, pretrained=False, max_len=12, progress=False)
    assert not torch.equal(scratch.model.encoder.state_dict()[first], learn.model.encoder.state_dict()[first])
    with pytest.raises(ValueError, match="pass encoder="):
        text_classifier_learner(data, "awd_lstm", weights=folder, progress=False)


def test_language_model_learner_pretrained_is_a_bool(tmp_path):
    from learnkit.text import TextDataBunch, language_model_learner
    data = TextDataBunch.from_lists(["a b c d e f g"] * 20, is_lm=True, seed=0, batch_size=4, bptt=4, min_freq=1,
                                    device="cpu")
    with pytest.warns(DeprecationWarning, match=r"pretrained=<folder>\) is deprecated: use weights=<folder>"):
        with pytest.raises(FileNotFoundError, match="weights=.*no recipe.json"):
            language_model_learner(data, config=TINY, pretrained=tmp_path / "nowhere", progress=False)
    with pytest.raises(ValueError, match="drop one of them"):
        language_model_learner(data, config=TINY, pretrained=False, weights=tmp_path, progress=False)
    with pytest.raises(TypeError, match="pretrained is True or False"):
        language_model_learner(data, config=TINY, pretrained=1, weights=tmp_path, progress=False)
