"""EfficientNet-Lite0 in torch: the packaged ImageNet weights load strictly and classify real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
skimage_data = pytest.importorskip("skimage.data")

from edgecvm import resources  # noqa: E402
from edgecvm.errors import OfflineModelError  # noqa: E402
from edgecvm.offline.export import load_recipe  # noqa: E402
from edgecvm.offline.lite0_torch import FEATURE_DIM, load_pretrained  # noqa: E402

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def model():
    return load_pretrained()


def imagenet_top5(model, image: Image.Image) -> list[int]:
    x = load_recipe(resources.recipe("lite0-224.yaml")).preprocessor().batch([image])
    with torch.no_grad():
        logits = model(torch.from_numpy(x))[0]
    return logits.topk(5).indices.tolist()


def test_chelsea_is_a_cat(model) -> None:
    top5 = imagenet_top5(model, Image.fromarray(skimage_data.chelsea()))
    assert top5[0] in CAT_CLASSES, top5


def test_coffee_is_espresso(model) -> None:
    top5 = imagenet_top5(model, Image.fromarray(skimage_data.coffee()))
    assert top5[0] == ESPRESSO, top5


@pytest.mark.parametrize("size", [160, 224, 225])
def test_features_are_pooled_1280_d_at_any_input_size(model, size: int) -> None:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32))
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    assert features.shape == (2, FEATURE_DIM) and logits.shape == (2, 1000)
    assert (features >= 0).all() and (features <= 6).all()  # mean of ReLU6 outputs


def test_weights_that_do_not_match_the_architecture_are_refused(tmp_path: Path, model) -> None:
    state = model.state_dict()
    state.pop("_fc.bias")
    bad = tmp_path / "lite0.pth"
    torch.save(state, bad)
    with pytest.raises(OfflineModelError, match=r"lite0\.pth: not EfficientNet-Lite0 ImageNet weights.*_fc\.bias"):
        load_pretrained(bad)
