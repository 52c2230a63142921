"""Normalize refuses statistics that would silently turn every input into NaN, inf, zero or its negative
(issue 14): a NaN/inf mean, a NaN/inf/zero/negative std, also when rebuilt from an exported recipe."""
import math

import pytest
import torch

from learnkit.data.transforms import Normalize, transform_from_config


@pytest.mark.parametrize("mean,std,message", [
    ([0.1, math.nan], [0.5, 0.5], r"mean must be finite, got \[0\.1.*, nan\]"),
    ([math.inf], [0.5], r"mean must be finite, got \[inf\]"),
    ([0.1, 0.2], [math.nan, 0.5], r"std must be finite, got \[nan, 0\.5\]"),
    ([0.1], [math.inf], r"std must be finite, got \[inf\]"),
    ([0.1], [-0.3], r"std must be positive, got \[-0\.3"),
    ([0.1], [0.0], r"std must be positive, got \[0\.0\]"),
    ([], [], r"mean and std are empty"),
])
def test_normalize_refuses_non_finite_or_non_positive_statistics(mean, std, message):
    with pytest.raises(ValueError, match=message):
        Normalize(mean, std)
    with pytest.raises(ValueError, match=message):  # a tampered or damaged recipe is refused the same way
        transform_from_config({"type": "Normalize", "mean": mean, "std": std})


def test_normalize_from_batches_of_nan_inputs_is_refused_and_good_statistics_still_work():
    with pytest.raises(ValueError, match="mean must be finite"):
        Normalize.from_batches([torch.tensor([[1.0, math.nan], [2.0, 3.0]])])
    out = Normalize([0.5], [0.25])(torch.tensor([[0.0, 1.0]]))
    assert out.tolist() == [[-2.0, 2.0]]
