"""A trained U-Net exported to ONNX gives the learner's probabilities through onnxruntime (the preprocessing and the
softmax inside the graph). The dynamo exporter takes ~12 s on this CPU for a U-Net, hence not a unit test."""
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_unet_onnx_matches_predict(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("timm")
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    from test_unet import trained_learner

    learn, _, x, _ = trained_learner()
    _, _, probs = learn.predict(x[60])
    session = ort.InferenceSession(str(learn.export_onnx(tmp_path / "seg.onnx")))
    out = session.run(None, {session.get_inputs()[0].name: x[60:62].numpy()})[0]
    assert out.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(out[0], probs.numpy(), atol=1e-4)
