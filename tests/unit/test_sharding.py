"""Per-rank views of loaders (data/sharding.py) and the torchrun environment checks (learner/distributed.py)."""
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from learnkit import Learner
from learnkit.data.resident import ResidentLoader
from learnkit.data.sharding import RankBatches, shard_loader
from learnkit.testing import synthetic_classification, tiny_mlp


class _Recording(Dataset):
    def __init__(self, n):
        self.n, self.seen = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.seen.append(i)
        return torch.tensor(i)


def _batches(dl):
    return [b.tolist() if isinstance(b, torch.Tensor) else b[0].tolist() for b in dl]


@pytest.mark.parametrize("n,bs,world", [(100, 8, 2), (100, 8, 3), (64, 8, 4), (10, 4, 2)])
def test_rank_batches_partition_the_single_process_order(n, bs, world):
    single = _batches(DataLoader(_Recording(n), batch_size=bs))
    views = [_batches(shard_loader(DataLoader(_Recording(n), batch_size=bs), r, world, even=False))
             for r in range(world)]
    assert [views[i % world][i // world] for i in range(len(single))] == single  # the gather rule
    even = [len(shard_loader(DataLoader(_Recording(n), batch_size=bs), r, world, even=True)) for r in range(world)]
    assert even == [len(single) // world] * world


def test_shuffled_order_is_shared_when_generators_agree():
    def loader():
        return DataLoader(_Recording(96), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
    single = _batches(loader())
    views = [_batches(shard_loader(loader(), r, 2, even=True)) for r in range(2)]
    assert [views[i % 2][i // 2] for i in range(12)] == single


def test_workers_only_load_this_ranks_batches():
    ds = _Recording(40)
    list(shard_loader(DataLoader(ds, batch_size=10), 1, 2, even=True))
    assert ds.seen == list(range(10, 20)) + list(range(30, 40))
    assert isinstance(shard_loader(DataLoader(ds, batch_size=10), 0, 2, True).batch_sampler, RankBatches)


def test_resident_training_shards_are_equal_and_disjoint():
    x = torch.arange(103)
    dl = ResidentLoader((x, x * 2), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    shards = [shard_loader(dl, r, 2, even=True) for r in range(2)]
    items = [torch.cat([b[0] for b in s]).tolist() for s in shards]
    assert [s.n_items for s in shards] == [51, 51] and len(shards[0]) == len(shards[1])
    assert not set(items[0]) & set(items[1])
    assert all(torch.equal(b[1], b[0] * 2) for s in shards for b in s)  # tensors stay aligned


def test_resident_validation_blocks_put_back_in_order():
    x = torch.arange(50)
    dl = ResidentLoader((x,), batch_size=8)
    views = [[b[0].tolist() for b in shard_loader(dl, r, 3, even=False)] for r in range(3)]
    assert [views[i % 3][i // 3] for i in range(len(dl))] == [b[0].tolist() for b in dl]


def test_databunch_shard_is_in_place_and_checked():
    data = synthetic_classification(n=256, batch_size=16)
    n = len(data.train_dl)
    assert data.shard(1, 2) is data and len(data.train_dl) == n // 2 and data.shard_of == (1, 2)
    data.shard(1, 2)  # same split again: no-op
    assert len(data.train_dl) == n // 2
    with pytest.raises(ValueError, match=r"already sharded as \(1, 2\)"):
        data.shard(0, 4)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        shard_loader(DataLoader(_Recording(4)), 2, 2, True)


def test_unsupported_loader_is_a_clear_error():
    class Stream:
        def __iter__(self):
            yield torch.zeros(1)
    with pytest.raises(NotImplementedError, match="cannot split a Stream"):
        shard_loader(Stream(), 0, 2, True)


def test_torchrun_environment_must_be_complete(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match=r"torchrun --nproc_per_node=N"):
        Learner(synthetic_classification(), tiny_mlp(), progress=False)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an int"):
        Learner(synthetic_classification(), tiny_mlp(), progress=False)


def test_single_process_has_no_distributed_state(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False)
    assert learn.dist is None and learn.data.shard_of is None


def test_worker_loader_close_stops_persistent_workers():
    import multiprocessing

    from learnkit.data.bunch import WorkerLoader
    dl = WorkerLoader(_Recording(32), batch_size=8, num_workers=2, persistent_workers=True)
    assert [len(b) for b in dl] == [8] * 4
    assert len(multiprocessing.active_children()) >= 2  # the persistent workers stay up between epochs
    assert [len(b) for b in dl] == [8] * 4
    dl.close()
    assert multiprocessing.active_children() == []
    assert [len(b) for b in dl] == [8] * 4  # new workers on the next iteration
    dl.close()
