"""The one place that chooses and builds loaders. `build_loaders` picks, for every `DataBlock.databunch` (and so
for every `from_*` constructor), one of five strategies, and says which and why in one line:

- *resident*: every input is encoded once (in parallel when the block can) and the batch tensors are kept on the
  device; `ResidentLoader` slices batches there (no workers, no per-epoch decoding). Chosen by `resident='auto'`
  when the input block can estimate its encoded size (`block.estimate_bytes`), it fits `memory_budget`, and no
  item transform is random.
- *device-decode*: not resident, on CUDA, and the input block offers a batch decoder for these values and item
  transforms (`block.batch_decoder`: JPEG files, deterministic Resize): a `DecodeLoader` decodes whole batches
  every epoch, in forked worker processes on the host (the default on CUDA with 8+ cores) or on the device from
  bytes read in threads (`num_workers=0`), in memory bounded by a few batches (so it streams data larger than host
  memory). Chosen by 'auto' on CUDA when the data is not made resident (measured
  faster than Pillow workers on the 16-core H200 host: the comment above `_want_device_decode`), by
  `device_decode=True` on any device; False never.
- *workers*: `BlockDataset` + a `WorkerLoader` (a DataLoader) whose workers run the per-item pipeline each epoch.
- *padded*: variable-length inputs (a block whose `batching` is 'pad', e.g. token ids) are encoded once, batched by
  similar length (`BucketBatchSampler`) and padded by the block's own `collate`.
- *stream*: a target block whose `batching` is 'stream' (language modelling): the encoded documents become one
  stream read in windows (`LMLoader`).

Data-parallel sharding (data/sharding.py) is applied to these loaders by `DataBunch.shard`. Nothing here knows what
an image or a token is: blocks say how their values batch and how to encode many at once.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from learnkit.data.blocks import TransformBlock
from learnkit.data.decode_loader import DecodeLoader
from learnkit.data.parallel import parallel_map, shared_tensor, uses_processes
from learnkit.data.pipeline import BlockDataset, Step
from learnkit.data.resident import ResidentLoader, memory_budget
from learnkit.data.worker_loader import make_loader

__all__ = ["BucketBatchSampler", "LMLoader", "LoaderPlan", "build_loaders", "n_items", "is_random", "eval_version"]


def n_items(dl: Any) -> int:
    """Items behind a loader (a DataLoader's dataset, or a GPU-resident loader's `n_items`)."""
    dataset = getattr(dl, "dataset", None)
    return len(dataset) if dataset is not None else int(getattr(dl, "n_items", 0))


def eval_version(tfm: Any) -> Any:
    """The deterministic version of an item transform used for validation, inference and exports."""
    make_eval = getattr(tfm, "eval_transform", None)
    return make_eval() if make_eval is not None else tfm


def is_random(tfm: Any) -> bool:
    """An item transform is random in training when its eval version differs from it."""
    if getattr(tfm, "eval_transform", None) is None:
        return False
    other = eval_version(tfm)
    if other is tfm:
        return False
    config = getattr(tfm, "to_config", None)
    return config is None or config() != other.to_config()


# ----------------------------------------------------------------------------------------- variable-length batches
class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar lengths (less padding). Training: shuffle, cut into chunks of 50 batches, sort
    each chunk by length, batch it, shuffle the batches, then put the longest batch first so an
    out-of-memory error shows on the first step. Validation: sorted by length, longest first."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None, chunk_batches: int = 50):
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.generator, self.chunk = generator, chunk_batches * batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            yield from (order[i:i + bs] for i in range(0, n, bs))
            return
        perm = torch.randperm(n, generator=self.generator).tolist()
        batches = []
        for c in range(0, n, self.chunk):
            chunk = sorted(perm[c:c + self.chunk], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        batches = [batches[i] for i in order]
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
        yield from batches


class LMLoader:
    """Language-model batches from a list of documents (1-D id tensors), a GPU-free iterable with the
    DataLoader contract (`__iter__` of (x, y) tuples, `__len__`, `batch_size`, `dataset`, `generator`).

    Each epoch: documents shuffled (training), concatenated into one stream, cut into `batch_size` rows
    (row b continues across batches), then read in windows of about `bptt` tokens (random lengths around
    bptt in training; their number is fixed, so `len()` is exact); y is x shifted by one token.
    """

    def __init__(self, docs: Sequence[torch.Tensor], batch_size: int = 64, bptt: int = 72, shuffle: bool = True,
                 generator: torch.Generator | None = None):
        self.dataset, self.batch_size, self.bptt = list(docs), batch_size, bptt
        self.shuffle, self.generator, self.drop_last = shuffle, generator, False
        self.n_tokens = sum(len(d) for d in self.dataset)
        if self.n_tokens // batch_size < 2:
            raise ValueError(f"LMLoader: {self.n_tokens} tokens cannot fill {batch_size} rows of at least 2 "
                             f"tokens; use a smaller batch_size or more text")

    def __len__(self) -> int:
        return math.ceil((self.n_tokens // self.batch_size - 1) / self.bptt)

    def _lengths(self, total: int) -> list[int]:
        n = len(self)
        if not self.shuffle:
            return [min(self.bptt, total - i * self.bptt) for i in range(n)]
        # Jittered lengths (mostly bptt, sometimes half; +-5%), rescaled so n windows cover the stream.
        base = torch.where(torch.rand(n, generator=self.generator) < 0.95, 1.0, 0.5) * self.bptt
        raw = base * (1 + 0.05 * torch.randn(n, generator=self.generator))
        ends = (raw.clamp_min(1).cumsum(0) / raw.clamp_min(1).sum() * total).round().long().tolist()
        lengths, prev = [], 0
        for e in ends:
            lengths.append(max(1, e - prev))
            prev += lengths[-1]
        lengths[-1] -= prev - total
        return [length for length in lengths if length > 0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.dataset), generator=self.generator).tolist() if self.shuffle \
            else range(len(self.dataset))
        stream = torch.cat([self.dataset[i] for i in order])
        per_row = len(stream) // self.batch_size
        rows = stream[:per_row * self.batch_size].view(self.batch_size, per_row)
        i = 0
        for length in self._lengths(per_row - 1):
            yield rows[:, i:i + length], rows[:, i + 1:i + 1 + length]
            i += length


class _Encoded(Dataset):
    """Items already encoded: one list of tensors per block."""

    def __init__(self, columns: Sequence[Sequence[torch.Tensor]]):
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(col[i] for col in self.columns)


# ----------------------------------------------------------------------------------------- the choice
@dataclass
class LoaderPlan:
    """Everything `build_loaders` needs, gathered by `DataBlock.databunch`.

    `values[b]` are block b's raw values (what its getter returned) for every item in `items`; `train` / `valid`
    index into `items`. `train_pipelines` run per item in training (random item transforms), `eval_pipelines`
    in validation (their eval versions)."""
    blocks: Sequence[TransformBlock]
    n_inp: int
    items: Sequence[Any]
    values: Sequence[Sequence[Any]]
    train: list[int]
    valid: list[int]
    train_pipelines: Sequence[Sequence[Step]]
    eval_pipelines: Sequence[Sequence[Step]]
    eval_tfms: Sequence[Any]
    batch_size: int
    device: torch.device
    num_workers: int | None = None
    generator: torch.Generator | None = None
    drop_last: bool | None = None
    resident: Any = "auto"
    device_decode: Any = "auto"
    memory_budget: int | None = None
    verify: bool = True
    random_items: bool = False
    bad: list[tuple[int, str]] = field(default_factory=list)  # (item index, reason): filled while building
    target_bad: list[tuple[int, str]] = field(default_factory=list)  # the same for masks/points that fail


def _encode_targets(block: TransformBlock, values: Sequence[Any]) -> list[torch.Tensor]:
    """block.encode per value, each distinct value encoded once (70,000 labels, 10 classes); unhashable
    values (multi-label lists) are encoded one by one."""
    encoded: dict[Any, torch.Tensor] = {}
    out = []
    for v in values:
        try:
            hash(v)
        except TypeError:
            out.append(block.encode(v))
            continue
        if v not in encoded:
            encoded[v] = block.encode(v)
        out.append(encoded[v])
    return out


def _follow_targets(plan: LoaderPlan, order: list[int], tfms: Sequence[Any], keep: bool = True,
                    sizes: Sequence[tuple[int, int]] | None = None) -> tuple[list[int], dict[int, list[torch.Tensor]]]:
    """Encode the targets that follow the input (masks, points: `block.follows_input`) of the items in `order`, each
    from (value, input value) through its `target_steps(tfms)`: (the items whose targets all encode, {block index:
    their encodings in that order} when `keep`). Items whose target fails (a missing or RGB mask, a size that
    differs from the image, values outside the codes) go to plan.target_bad with the block's message. `sizes`: the
    decoded inputs' (height, width) per item of `order`, given instead of the input values (no header read again)."""
    failed: dict[int, str] = {}
    columns: dict[int, list[Any]] = {}
    for b in range(plan.n_inp, len(plan.blocks)):
        block = plan.blocks[b]
        if not block.follows_input:
            continue
        steps = block.target_steps(tfms)

        def run(k: int, b: int = b, steps: Any = steps) -> tuple[Any, str | None]:
            i = order[k]
            value: Any = (plan.values[b][i], plan.values[0][i] if sizes is None else sizes[k])
            try:
                for _, fn in steps:
                    value = fn(value)
            except Exception as e:  # the blocks' messages name the file and the fix
                return None, str(e)
            return (value if keep else None), None
        into = None  # worker processes write same-shaped targets into one shared tensor (data/parallel.py)
        if order and uses_processes(len(order), plan.num_workers) and isinstance(first := run(0)[0], torch.Tensor):
            into = shared_tensor((len(order), *first.shape), first.dtype)
        results = list(parallel_map(run, range(len(order)), plan.num_workers, into=into))
        for i, (_, why) in zip(order, results):
            if why is not None:
                failed.setdefault(i, why)
        columns[b] = [v for v, _ in results]
    plan.target_bad += sorted(failed.items())
    kept = [i for i in order if i not in failed]
    encoded = {b: [v for i, v in zip(order, col) if i not in failed] for b, col in columns.items()} if keep else {}
    return kept, encoded


def _encode_inputs(plan: LoaderPlan, order: list[int]) -> tuple[list[int], Any]:
    """The input block's values of `order` encoded once: (items kept, their encodings in order — a list, or one
    stacked tensor when the block makes one). Bad items' reasons go to plan.bad."""
    block = plan.blocks[0]
    values = [plan.values[0][i] for i in order]
    encode_all: Callable | None = getattr(block, "encode_all", None)
    if encode_all is None:
        return list(order), [block.encode(v) for v in values]
    encoded, bad = encode_all(values, plan.num_workers)
    bad_pos = set()
    for pos, why in bad:
        plan.bad.append((order[pos], why))
        bad_pos.add(pos)
    return [i for k, i in enumerate(order) if k not in bad_pos], encoded


def _apply(tfms: Sequence[Any], x: torch.Tensor) -> torch.Tensor:
    for t in tfms:
        x = t(x)
    return x


def _want_resident(plan: LoaderPlan) -> tuple[bool, str]:
    if plan.resident not in ("auto", True, False):
        raise ValueError(f"resident={plan.resident!r}: use 'auto', True or False")
    if plan.device_decode is True:
        if plan.resident is True:
            raise ValueError("resident=True and device_decode=True ask for two loader paths; pick one")
        return False, "device_decode=True"
    if plan.resident is True and plan.random_items:
        raise ValueError("resident=True but some item transforms are random per item; use batch augmentation "
                         "(aug_transforms(min_scale=...)) instead, or resident=False")
    if plan.resident != "auto":
        return bool(plan.resident), f"resident={plan.resident}"
    if plan.random_items:
        return False, "item transforms are random per item"
    estimate = getattr(plan.blocks[0], "estimate_bytes", None)
    if estimate is None or plan.n_inp != 1:
        return False, f"{type(plan.blocks[0]).__name__} does not say its encoded size"
    order = plan.train + plan.valid
    need = estimate([plan.values[0][i] for i in order], plan.eval_tfms)
    budget = memory_budget(plan.device) if plan.memory_budget is None else int(plan.memory_budget)
    if need is None:
        return False, "items have different sizes"
    for b in range(plan.n_inp, len(plan.blocks)):  # masks are as many pixels again (as uint8): count them too
        target_estimate = getattr(plan.blocks[b], "estimate_bytes", None)
        if target_estimate is not None:
            more = target_estimate([plan.values[b][i] for i in order], plan.eval_tfms)
            need += more or 0
    fits = need <= budget
    return fits, (f"about {need / 2**20:.0f} MB decoded {'fits' if fits else 'exceeds'} the budget of "
                  f"{budget / 2**20:.0f} MB")


def _resident(plan: LoaderPlan, reason: str) -> tuple[Any, Any, str, str]:
    kept, x = _encode_inputs(plan, plan.train + plan.valid)  # decode only what is used
    if any(b.follows_input for b in plan.blocks[plan.n_inp:]):  # masks/points, checked against the decoded sizes
        sizes = [tuple(x.shape[-2:])] * len(kept) if isinstance(x, torch.Tensor) else [tuple(v.shape[-2:]) for v in x]
        good, follow = _follow_targets(plan, kept, plan.eval_tfms, sizes=[(int(h), int(w)) for h, w in sizes])
        if len(good) < len(kept):
            keep = set(good)
            rows = [k for k, i in enumerate(kept) if i in keep]
            x = x.index_select(0, torch.tensor(rows)) if isinstance(x, torch.Tensor) else [x[k] for k in rows]
            kept = good
    else:
        follow = {}
    order = kept
    if plan.eval_tfms or not isinstance(x, torch.Tensor):
        x = [_apply(plan.eval_tfms, v) for v in x]
        shapes = {tuple(t.shape) for t in x}
        if len(shapes) > 1:
            raise ValueError(f"resident=True needs inputs of one size, found {sorted(shapes)[:5]}; add an item "
                             "transform that gives every item the same shape (e.g. Resize(224)), or resident=False")
        x = torch.stack(x) if x else torch.zeros(0)
    position = {i: k for k, i in enumerate(order)}
    targets = [torch.stack([follow[b][position[i]] for i in kept] if b in follow else
                           _encode_targets(plan.blocks[b], [plan.values[b][i] for i in kept]))
               for b in range(1, len(plan.blocks))]
    tensors = [t.to(plan.device) for t in [x] + targets]
    train_set = set(plan.train)
    n_train = sum(1 for i in kept if i in train_set)
    drop_last = n_train > plan.batch_size if plan.drop_last is None else plan.drop_last
    train_dl = ResidentLoader(tuple(t[:n_train] for t in tensors), plan.batch_size, shuffle=True,
                              drop_last=drop_last, generator=plan.generator)
    valid_dl = ResidentLoader(tuple(t[n_train:] for t in tensors), plan.batch_size)
    where = "GPU-resident path" if plan.device.type == "cuda" else "resident path (host memory)"
    x0 = tensors[0]
    report = (f"{where}: {len(kept)} items encoded once, {str(x0.dtype).split('.')[-1]} {tuple(x0.shape[1:])}, "
              f"{x0.numel() * x0.element_size() / 2**20:.1f} MB on {plan.device}; no worker processes ({reason})")
    return train_dl, valid_dl, "resident", report


def _verified(plan: LoaderPlan) -> tuple[list[int], list[int]]:
    """(train, valid) without the items the input block's `verify_all` (and the following targets) find bad."""
    order = plan.train + plan.valid
    verify = getattr(plan.blocks[0], "verify_all", None)
    if plan.verify and verify is not None:
        for pos, why in verify([plan.values[0][i] for i in order], plan.num_workers):
            plan.bad.append((order[pos], why))
    if plan.verify:  # masks and points read once up front (without item transforms), so bad ones fail now
        _follow_targets(plan, order, [], keep=False)
    bad = {i for i, _ in plan.bad} | {i for i, _ in plan.target_bad}
    return [i for i in plan.train if i not in bad], [i for i in plan.valid if i not in bad]


def _workers(plan: LoaderPlan, reason: str) -> tuple[Any, Any, str, str]:
    train, valid = _verified(plan)
    drop_last = len(train) > plan.batch_size if plan.drop_last is None else plan.drop_last
    train_ds = BlockDataset([plan.items[i] for i in train], plan.train_pipelines, train)
    valid_ds = BlockDataset([plan.items[i] for i in valid], plan.eval_pipelines, valid)
    train_dl = make_loader(train_ds, plan.batch_size, True, plan.device, plan.num_workers, plan.blocks, drop_last,
                           plan.generator)
    valid_dl = make_loader(valid_ds, plan.batch_size, False, plan.device, plan.num_workers, plan.blocks)
    report = (f"DataLoader path: {len(train) + len(valid)} items through the item pipeline per epoch by "
              f"{train_dl.num_workers} worker process(es) ({reason})")
    return train_dl, valid_dl, "dataloader", report


# 'auto' decodes JPEGs on the GPU when it can: on the lent H200 host (16 cores), 40,000 256 px JPEGs to resnet34 at
# 224 px, the device-decode path gave 5,638 images/s against 3,859 for 8 Pillow workers and 4,533 for fastai's
# from_folder with 16 (benchmarks/jpeg_stream.py, results/jpeg_stream_h200_stop23.json). Before its readers were
# chunked per thread (data/decode_loader.py) it had lost to the workers (3,259 vs 4,579), and 'auto' kept them.


def _want_device_decode(plan: LoaderPlan) -> tuple[Any, str]:
    """(the input block's batch decoder, its description) for the device-decode path, or (None, why not)."""
    if plan.device_decode not in ("auto", True, False):
        raise ValueError(f"device_decode={plan.device_decode!r}: use 'auto', True or False")
    if plan.device_decode is False:
        return None, "device_decode=False"
    if plan.device_decode == "auto" and plan.device.type != "cuda":
        return None, f"no device decoding on {plan.device}"
    block, decoder, why = plan.blocks[0], None, "item transforms are random per item"
    if getattr(block, "batch_decoder", None) is None or plan.n_inp != 1:
        why = f"{type(block).__name__} cannot decode whole batches on the device"
    elif any(b.follows_input or getattr(b, "collate", None) is not None for b in plan.blocks[1:]):
        why = "a target follows the input or batches itself (masks, points, padded targets)"
    elif not plan.random_items:
        decoder, why = block.batch_decoder([plan.values[0][i] for i in plan.train + plan.valid], plan.eval_tfms,
                                           plan.device)
    if decoder is None and plan.device_decode is True:
        raise ValueError(f"device_decode=True but {why}. Fix: use device_decode='auto' (DataLoader workers then)")
    return decoder, why if decoder is not None else f"no device decoding: {why}"


def _decode_processes(plan: LoaderPlan, decoder: Any) -> int:
    """Worker processes of the device-decode path (0: reader threads, decoding on the device). `num_workers` when
    given; else, on CUDA with `fork` and at least 8 cores for this process (the cores it may run on, shared among
    torchrun's local ranks), all of them but one, at most 31: the GPU decoder's kernels take time from the training
    step while the host's cores are otherwise idle (jpeg_stream_variants.py: 12 and 15 processes 8,258 and 8,235
    images/s, 8 processes 7,592, nvJPEG 6,096-6,321)."""
    if not hasattr(decoder, "host_decoder") or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if plan.num_workers is not None:
        return plan.num_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return min(cores - 1, 31) if plan.device.type == "cuda" and cores >= 8 else 0


def _device_decode(plan: LoaderPlan, decoder: Any, reason: str) -> tuple[Any, Any, str, str]:
    """DecodeLoaders over the verified items; the decoder's positions index into plan.train + plan.valid."""
    train, valid = _verified(plan)
    position = {i: k for k, i in enumerate(plan.train + plan.valid)}

    def loader(order: list[int], pipelines: Sequence[Sequence[Step]], shuffle: bool, drop_last: bool) -> DecodeLoader:
        targets = [torch.stack(_encode_targets(plan.blocks[b], [plan.values[b][i] for i in order]))
                   if order else torch.zeros(0) for b in range(plan.n_inp, len(plan.blocks))]
        return DecodeLoader(decoder, targets, [position[i] for i in order], plan.batch_size, shuffle, drop_last,
                            plan.generator if shuffle else None, plan.device, num_threads=threads,
                            dataset=BlockDataset([plan.items[i] for i in order], pipelines, order),
                            num_workers=processes)
    processes = _decode_processes(plan, decoder)
    # num_workers means reader threads only for a decoder without a host decoder (else it counts processes)
    threads = None if hasattr(decoder, "host_decoder") else plan.num_workers or None
    train_dl = loader(train, plan.train_pipelines, True,
                      len(train) > plan.batch_size if plan.drop_last is None else plan.drop_last)
    valid_dl = loader(valid, plan.eval_pipelines, False, False)
    where = (f"read and decoded on the host in {processes} worker processes ({decoder.host_decoder().description}) "
             f"and copied to {plan.device} in whole batches" if processes else
             f"read in {train_dl.num_threads} threads and decoded in whole batches by {decoder.description}")
    report = (f"device-decode path: {len(train) + len(valid)} items {where}, every epoch (about {train_dl.prefetch} "
              f"batches in flight; {reason})")
    return train_dl, valid_dl, "device-decode", report


def _encoded_columns(plan: LoaderPlan, order: list[int]) -> tuple[list[int], list[list[Any]]]:
    kept, x = _encode_inputs(plan, order)
    x = [_apply(plan.eval_tfms, v) for v in x]
    targets = [_encode_targets(plan.blocks[b], [plan.values[b][i] for i in kept])
               for b in range(1, len(plan.blocks)) if getattr(plan.blocks[b], "batching", "stack") != "stream"]
    return kept, [x] + targets


def _padded(plan: LoaderPlan) -> tuple[Any, Any, str, str]:
    kept, columns = _encoded_columns(plan, plan.train + plan.valid)
    train_set = set(plan.train)
    split = sum(1 for i in kept if i in train_set)
    workers = 0 if plan.num_workers is None else plan.num_workers  # encoded already: workers only add start-up

    def loader(lo: int, hi: int, shuffle: bool) -> DataLoader:
        cols = [col[lo:hi] for col in columns]
        sampler = BucketBatchSampler([len(t) for t in cols[0]], plan.batch_size, shuffle, plan.generator)
        return make_loader(_Encoded(cols), plan.batch_size, shuffle, plan.device, workers, plan.blocks,
                           batch_sampler=sampler)
    report = (f"padded path: {len(kept)} items encoded once, batched by similar length "
              f"({type(plan.blocks[0]).__name__} inputs have different lengths)")
    return loader(0, split, True), loader(split, len(kept), False), "padded", report


def _stream(plan: LoaderPlan) -> tuple[Any, Any, str, str]:
    bptt = next(getattr(b, "bptt", 72) for b in plan.blocks if getattr(b, "batching", "stack") == "stream")
    kept, columns = _encoded_columns(plan, plan.train + plan.valid)
    train_set = set(plan.train)
    docs_train = [d for i, d in zip(kept, columns[0]) if i in train_set]
    docs_valid = [d for i, d in zip(kept, columns[0]) if i not in train_set]
    train_dl = LMLoader(docs_train, plan.batch_size, bptt, True, plan.generator)
    valid_dl: Any = LMLoader(docs_valid, plan.batch_size, bptt, False) if docs_valid else []
    report = f"stream path: {len(kept)} documents encoded once, read as one stream in windows of ~{bptt}"
    return train_dl, valid_dl, "stream", report


def build_loaders(plan: LoaderPlan) -> tuple[Any, Any, str, str]:
    """(train loader, valid loader, kind, one-line report). Items found bad while encoding or verifying are
    appended to `plan.bad` as (item index, reason) and left out; the caller reports them (on_bad)."""
    if any(getattr(b, "batching", "stack") == "stream" for b in plan.blocks[plan.n_inp:]):
        return _stream(plan)
    if getattr(plan.blocks[0], "batching", "stack") == "pad":
        return _padded(plan)
    want, reason = _want_resident(plan)
    if want:
        return _resident(plan, reason)
    decoder, why = _want_device_decode(plan)
    if decoder is not None:
        return _device_decode(plan, decoder, reason)
    return _workers(plan, f"{reason}; {why}")
