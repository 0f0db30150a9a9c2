"""The backbone runtime: one ORT session from the profile, features as at export, clear refusals."""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecvm.device.profiles import DeviceProfile, load_profile
from edgecvm.device.runtime import FeatureExtractor, select_providers
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.bundle import BACKBONE, load_bundle, write_manifest
from edgecvm.formats.integrity import sha256_file


@pytest.fixture(scope="module")
def bundle(test_bundle: Path):
    return load_bundle(test_bundle)


@pytest.fixture(scope="module")
def profile(bundle) -> DeviceProfile:
    return dataclasses.replace(load_profile("host"), resolution=bundle.manifest.input_size)


@pytest.fixture(scope="module")
def extractor(bundle, profile) -> FeatureExtractor:
    return FeatureExtractor(bundle, profile)


@pytest.fixture(scope="module")
def images(samples_dir: Path) -> list[Image.Image]:
    paths = sorted((samples_dir / "val").glob("*/*.JPEG"))[::25]
    return [Image.open(p).convert("RGB") for p in paths]


def test_features_are_pooled_finite_float32_per_image(extractor: FeatureExtractor, images) -> None:
    features = extractor.extract(images)
    assert features.shape == (len(images), extractor.bundle.manifest.feature_dim) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert (features >= 0).mean() > 0.5  # pooled post-activation features are mostly non-negative
    one_by_one = np.concatenate([extractor.extract([image]) for image in images])
    np.testing.assert_allclose(features, one_by_one, rtol=1e-4, atol=1e-4)
    assert not np.allclose(features[0], features[1])  # different images, different features
    assert extractor.extract([]).shape == (0, extractor.bundle.manifest.feature_dim)


def test_any_image_mode_and_size_is_accepted(extractor: FeatureExtractor, images) -> None:
    rgb = images[0]
    variants = [rgb.convert("L"), rgb.convert("RGBA"), rgb.resize((17, 300)), rgb.resize((512, 512)), images[1]]
    features = extractor.extract(variants)
    assert features.shape[0] == 5 and np.isfinite(features).all()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    original = extractor.extract([rgb])[0]
    original /= np.linalg.norm(original)
    assert unit[3] @ original > 0.9  # an upscaled copy of the same photo stays close ...
    assert unit[3] @ original > unit[4] @ original  # ... closer than another photo


def test_low_memory_and_default_settings_give_the_same_features(bundle, profile, extractor, images) -> None:
    fast = FeatureExtractor(bundle, dataclasses.replace(profile, ort_cpu_arena=True, graph_optimization="basic"))
    np.testing.assert_allclose(fast.extract(images[:2]), extractor.extract(images[:2]), rtol=1e-3, atol=1e-3)


def test_resolution_mismatch_is_refused_naming_both_sizes(bundle, profile) -> None:
    other = 160 if bundle.manifest.input_size != 160 else 224
    with pytest.raises(BadInputError, match=rf"runs at {other} px but .* exported at {bundle.manifest.input_size} px"):
        FeatureExtractor(bundle, dataclasses.replace(profile, resolution=other))


def test_missing_execution_provider_falls_back_to_cpu_with_a_warning(caplog, bundle, profile) -> None:
    with caplog.at_level(logging.WARNING, logger="edgecvm.device.runtime"):
        assert select_providers(["NoSuchExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
        extractor = FeatureExtractor(bundle, dataclasses.replace(
            profile, execution_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider")))
    assert "NoSuchExecutionProvider is not available" in caplog.text
    assert "TensorrtExecutionProvider is not available" in caplog.text
    assert extractor.providers == ["CPUExecutionProvider"]


def test_backbone_whose_graph_disagrees_with_the_manifest_is_refused(test_bundle: Path, tmp_path: Path, profile) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    copy = tmp_path / "bundle"
    shutil.copytree(test_bundle, copy)
    size = load_bundle(copy).manifest.input_size
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    pooled = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["image"], ["p"]),
                               helper.make_node("Flatten", ["p"], ["features"])], "wrong", [image], [pooled])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), copy / BACKBONE)
    manifest = load_bundle(copy, verify=False).manifest
    write_manifest(copy, dataclasses.replace(manifest, files={**manifest.files, BACKBONE: sha256_file(copy / BACKBONE)}))
    with pytest.raises(IntegrityError, match=r"backbone.onnx: graph signature .* does not match the manifest"):
        FeatureExtractor(load_bundle(copy), profile)


@pytest.mark.parametrize("learning", [False, True])
def test_a_device_keeps_the_backbone_threads_from_spinning(test_bundle: Path, learning: bool) -> None:
    """The update thread and the pipeline's worker need the cores ORT's waiting threads would spin on."""
    from edgecvm.device.device import open_device

    device = open_device(test_bundle, "host", None, read_only=not learning)
    options = device.extractor.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_spinning_does_not_change_the_features(bundle, profile, extractor, images) -> None:
    quiet = FeatureExtractor(bundle, profile, spinning=False)
    np.testing.assert_array_equal(quiet.extract(images[:3]), extractor.extract(images[:3]))


def test_without_the_arena_a_runs_activations_are_planned_as_one_block(bundle, profile, extractor, images) -> None:
    """The memory pattern stays on when the profile turns ORT's arena off (runtime.py); the features are the same."""
    import onnxruntime as ort

    from edgecvm.device.runtime import session_options

    assert not profile.ort_cpu_arena
    options = session_options(profile)
    assert options.enable_mem_pattern and not options.enable_cpu_mem_arena
    options.enable_mem_pattern = False
    unplanned = ort.InferenceSession(str(bundle.backbone_path), sess_options=options,
                                     providers=["CPUExecutionProvider"])
    batch = extractor.preprocess.batch(images[:3])
    np.testing.assert_array_equal(extractor.run(batch), unplanned.run(None, {extractor.input_name: batch})[0])


def test_large_frames_decoded_smaller_give_the_features_of_the_whole_frame(extractor: FeatureExtractor, images,
                                                                          test_bundle: Path, tmp_path: Path) -> None:
    """A JPEG decoded at 1/2 or 1/4 of its size (``Preprocessor.decode_size``) gives the backbone what the whole
    decode gives it, to feature cosine >= 0.999 (the parity a preprocessing change must keep)."""
    from edgecvm.device.device import open_device
    from edgecvm.device.image_files import decode_image

    preprocess = extractor.preprocess
    for size, scaled in (((1920, 1080), (960, 540)), ((4032, 3024), (1008, 756))):
        files = []
        for image in images:
            buf = io.BytesIO()
            image.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
            files.append(buf.getvalue())
        whole = [decode_image(data)[0] for data in files]
        smaller = [decode_image(data, preprocess.decode_size)[0] for data in files]
        assert {image.size for image in smaller} == {scaled}
        a, b = extractor.extract(whole), extractor.extract(smaller)
        cosine = np.einsum("nf,nf->n", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.mean() >= 0.999, (size, cosine)
    path = tmp_path / "photo.jpg"
    path.write_bytes(files[0])
    with open_device(test_bundle, "host") as device:  # the Python API decodes a path the same way
        np.testing.assert_array_equal(device.features(path), extractor.extract(smaller[:1]))
