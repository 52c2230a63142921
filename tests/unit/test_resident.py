import pytest
import torch

from learnkit.data.resident import ResidentLoader, memory_budget


def _tensors(n=10):
    return torch.arange(n * 4, dtype=torch.uint8).reshape(n, 1, 2, 2), torch.arange(n)


def test_batches_cover_every_item_once_and_keep_pairs():
    x, y = _tensors(10)
    dl = ResidentLoader((x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(dl) == 3 and dl.n_items == 10
    seen = []
    for xb, yb in dl:
        assert torch.equal(xb, x[yb])  # each image travels with its own label
        seen += yb.tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


def test_drop_last_and_ordered_validation_batches():
    x, y = _tensors(10)
    assert len(ResidentLoader((x, y), 4, drop_last=True)) == 2
    batches = list(ResidentLoader((x, y), 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_same_generator_state_gives_same_order():
    x, y = _tensors(20)
    g = torch.Generator().manual_seed(3)
    dl = ResidentLoader((x, y), 5, shuffle=True, generator=g)
    state = g.get_state()
    first = [b[1].tolist() for b in dl]
    g.set_state(state)
    assert [b[1].tolist() for b in dl] == first
    assert [b[1].tolist() for b in dl] != first  # and the next epoch is a new order


def test_errors_name_the_problem():
    x, y = _tensors(10)
    with pytest.raises(ValueError, match="different lengths"):
        ResidentLoader((x, y[:5]), 4)
    with pytest.raises(ValueError, match="batch_size"):
        ResidentLoader((x, y), 0)


def test_memory_budget_is_a_share_of_host_memory_on_cpu():
    budget = memory_budget(torch.device("cpu"))
    assert 0 < budget < memory_budget(torch.device("cpu"), share=0.9)
