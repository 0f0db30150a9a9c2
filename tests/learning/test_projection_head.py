"""Projection head: hand-written gradients against finite differences, cosine/temperature, ConSE branch."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import anchor_set, head_params

from edgecvm.formats.anchors import normalise_rows
from edgecvm.learning.conse import conse_embed
from edgecvm.learning.projection_head import ProjectionHead

F, D = 12, 8


def _batch(n: int = 7, k: int = 5, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = np.maximum(rng.normal(0.5, 1.0, size=(n, F)), 0)
    anchors = normalise_rows(rng.normal(size=(k, D))).astype(np.float64)
    targets = rng.integers(0, k, size=n)
    return features, targets, anchors


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("conse", [False, True], ids=["proj-only", "with-conse"])
def test_gradients_match_finite_differences(kind, conse):
    head = ProjectionHead(head_params(kind, F, D, hidden_dim=10, conse=conse), dtype=np.float64)
    features, targets, anchors = _batch()
    _, grads = head.loss_and_grads(features, targets, anchors)
    assert set(grads) == set(head.params)
    eps = 1e-6
    for name, param in head.params.items():
        numeric = np.zeros_like(param)
        for i in np.ndindex(param.shape):
            orig = param[i]
            param[i] = orig + eps
            up, _ = head.loss_and_grads(features, targets, anchors)
            param[i] = orig - eps
            down, _ = head.loss_and_grads(features, targets, anchors)
            param[i] = orig
            numeric[i] = (up - down) / (2 * eps)
        err = np.abs(numeric - grads[name]).max() / max(1e-8, np.abs(numeric).max())
        assert err < 1e-6, f"{kind} {name}: relative error {err:.2e}"


def test_loss_is_cross_entropy_of_temperature_scaled_cosines():
    head = ProjectionHead(head_params("linear", F, D), dtype=np.float64)
    features, targets, anchors = _batch()
    e = features @ head.params["w"] + head.params["b"]
    cos = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ anchors.T
    np.testing.assert_allclose(head.logits(features, anchors), 16.0 * cos, rtol=1e-10)
    logp = 16.0 * cos - np.log(np.exp(16.0 * cos).sum(axis=1, keepdims=True))
    loss, _ = head.loss_and_grads(features, targets, anchors)
    assert loss == pytest.approx(-logp[np.arange(len(targets)), targets].mean(), rel=1e-10)


def test_higher_temperature_sharpens_a_correct_prediction():
    features, _, anchors = _batch()
    losses = []
    for temperature in (4.0, 16.0, 64.0):
        spec = head_params("linear", F, D)
        spec.temperature = temperature
        head = ProjectionHead(spec, dtype=np.float64)
        predicted = head.logits(features, anchors).argmax(axis=1)  # targets = the head's own answer
        losses.append(head.loss_and_grads(features, predicted, anchors)[0])
    assert losses[0] > losses[1] > losses[2]


def test_scaling_features_changes_nothing_without_bias_direction_change():
    """Cosine logits ignore the embedding's length: doubling w leaves predictions unchanged."""
    spec = head_params("linear", F, D)
    head = ProjectionHead(spec, dtype=np.float64)
    features, _, anchors = _batch()
    before = head.logits(features, anchors)
    head.params["w"] *= 2.0
    head.params["b"] *= 2.0
    np.testing.assert_allclose(head.logits(features, anchors), before, rtol=1e-10)


def test_zero_proj_conse_head_embeds_exactly_the_conse_direction():
    spec = head_params("linear", F, D, conse=True, zero_proj=True)
    head = ProjectionHead(spec)
    features, _, _ = _batch()
    features = features.astype(np.float32)
    expected = conse_embed(features, spec.conse)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(head.embed_unit(features), expected, rtol=1e-5, atol=1e-6)


def test_conse_branch_is_frozen_and_bundle_params_are_not_mutated():
    spec = head_params("linear", F, D, conse=True)
    original = {k: v.copy() for k, v in spec.params.items()}
    fc_w = spec.conse.fc_w.copy()
    head = ProjectionHead(spec)
    features, targets, anchors = _batch()
    _, grads = head.loss_and_grads(features.astype(np.float32), targets, anchors.astype(np.float32))
    assert set(grads) == {"w", "b"}
    for name, g in grads.items():
        head.params[name] -= 0.1 * g
    for name, value in original.items():
        np.testing.assert_array_equal(spec.params[name], value)
    np.testing.assert_array_equal(spec.conse.fc_w, fc_w)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_float32_hot_path_stays_float32(kind):
    head = ProjectionHead(head_params(kind, F, D, conse=True))
    features, targets, anchors = _batch()
    features, anchors = features.astype(np.float32), anchors.astype(np.float32)
    assert head.embed_unit(features).dtype == np.float32
    loss, grads = head.loss_and_grads(features, targets, anchors)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert np.isfinite(loss)


def test_gradient_steps_lower_the_loss():
    head = ProjectionHead(head_params("mlp", F, D, hidden_dim=16), dtype=np.float64)
    features, targets, anchors = _batch(n=20)
    first, _ = head.loss_and_grads(features, targets, anchors)
    for _ in range(50):
        loss, grads = head.loss_and_grads(features, targets, anchors)
        for name, g in grads.items():
            head.params[name] -= 0.05 * g
    assert loss < 0.5 * first


def test_zero_embedding_stays_finite():
    """A conse-less head with proj = 0 embeds every frame to 0: the normalisation must not divide by zero."""
    head = ProjectionHead(head_params("linear", F, D, zero_proj=True))
    features, targets, _ = _batch()
    anchors = anchor_set(D).vectors[:5]
    loss, grads = head.loss_and_grads(features.astype(np.float32), targets, anchors)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    assert np.isfinite(head.embed_unit(features.astype(np.float32))).all()
