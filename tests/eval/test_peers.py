"""Peers: NCM, Streaming LDA (against Hayes & Kanan's per-sample recurrence), softmax with and without replay."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import Clusters

from edgecvm.eval.peers import NearestClassMean, SoftmaxHead, StreamingLDA, train_joint
from edgecvm.learning.replay import ReplayBuffer

F = 16


def _stream(clusters: Clusters, classes: list[int], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.random.default_rng(seed).permutation(np.repeat(classes, per_class))
    return clusters.draw(labels), labels


def _accuracy(method, clusters: Clusters, classes: list[int]) -> float:
    labels = np.repeat(classes, 50)
    return float(np.mean(method.predict(clusters.draw(labels)) == labels))


def _reference_slda(features: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Hayes & Kanan's StreamingLDA.fit, one sample at a time, transcribed from their PyTorch code."""
    mu = np.zeros((n_classes, features.shape[1]))
    counts = np.zeros(n_classes)
    sigma = np.ones((features.shape[1], features.shape[1]))  # their init; multiplied by 0 at the first update
    num_updates = 0
    for x, y in zip(features.astype(np.float64), labels, strict=True):
        x_minus_mu = (x - mu[y])[None, :]
        delta = (x_minus_mu.T @ x_minus_mu) * num_updates / (num_updates + 1)
        sigma = (num_updates * sigma + delta) / (num_updates + 1)
        mu[y] += (x - mu[y]) / (counts[y] + 1)
        counts[y] += 1
        num_updates += 1
    return mu, sigma


def test_streaming_lda_matches_the_reference_recurrence_whatever_the_chunking():
    clusters = Clusters(5, F, seed=3)
    features, labels = _stream(clusters, [0, 1, 2, 3, 4], per_class=30, seed=1)
    ref_mu, ref_sigma = _reference_slda(features, labels, 5)
    for chunk in (1, 7, 150):
        slda = StreamingLDA(F, 5)
        for start in range(0, labels.size, chunk):
            slda.learn(features[start : start + chunk], labels[start : start + chunk])
        np.testing.assert_allclose(slda.means, ref_mu, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(slda.covariance(), ref_sigma, rtol=1e-9, atol=1e-12)


def test_streaming_lda_predicts_with_the_shrunk_precision_among_seen_classes():
    clusters = Clusters(6, F, seed=0)
    slda = StreamingLDA(F, 6)
    slda.learn(*_stream(clusters, [0, 1, 2], per_class=40, seed=2))
    test = clusters.draw(np.repeat([0, 1, 2], 20))
    precision = np.linalg.inv((1 - 1e-4) * slda.covariance() + 1e-4 * np.eye(F))
    w = slda.means[:3] @ precision
    expected = np.argmax(test @ w.T - 0.5 * np.sum(w * slda.means[:3], axis=1), axis=1)
    np.testing.assert_array_equal(slda.predict(test), expected)
    assert set(np.unique(slda.predict(clusters.draw(np.repeat([3, 4, 5], 20))))) <= {0, 1, 2}  # never unseen classes
    assert _accuracy(slda, clusters, [0, 1, 2]) > 0.9


def test_ncm_is_the_nearest_running_mean_and_order_free():
    clusters = Clusters(4, F, seed=5)
    features, labels = _stream(clusters, [0, 1, 2, 3], per_class=25, seed=0)
    a, b = NearestClassMean(F, 4), NearestClassMean(F, 4)
    a.learn(features, labels)
    for i in range(labels.size)[::-1]:
        b.learn(features[i : i + 1], labels[i : i + 1])
    np.testing.assert_allclose(a.sums, b.sums)
    test = clusters.draw(np.repeat([0, 1, 2, 3], 10))
    means = a.sums / a.counts[:, None]
    expected = np.argmin(((test[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    np.testing.assert_array_equal(a.predict(test), expected)
    assert _accuracy(a, clusters, [0, 1, 2, 3]) > 0.9


def test_softmax_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    head = SoftmaxHead(6, 4)
    head.params["w"][...] = rng.normal(size=(6, 4))
    head.seen[:3] = True  # class 3 unseen: masked out of the softmax
    x, y = rng.normal(size=(5, 6)).astype(np.float32), np.array([0, 1, 2, 1, 0])
    head._loss_and_grads(x, y)
    analytic = head._grads["w"].copy()
    numeric = np.zeros_like(analytic)
    eps = 1e-2
    for index in np.ndindex(*analytic.shape):
        for sign in (1, -1):
            head.params["w"][index] += sign * eps
            numeric[index] += sign * head._loss_and_grads(x, y) / (2 * eps)
            head.params["w"][index] -= sign * eps
    np.testing.assert_allclose(analytic, numeric, atol=2e-3)
    assert np.all(analytic[:, 3] == 0)


def test_softmax_forgets_without_replay_and_keeps_old_classes_with_it():
    accuracy = {}
    for name, replay in (("softmax", None), ("softmax-replay", ReplayBuffer(200, F, seed=0))):
        clusters = Clusters(8, F, seed=0)
        head = SoftmaxHead(F, 8, lr=1e-2, replay=replay, replay_batch=16, name=name)
        head.learn(*_stream(clusters, [0, 1, 2, 3], per_class=40, seed=1))
        head.learn(*_stream(clusters, [4, 5, 6, 7], per_class=40, seed=2))
        accuracy[name] = _accuracy(head, clusters, [0, 1, 2, 3])
    assert accuracy["softmax-replay"] > 0.7  # measured 0.97
    assert accuracy["softmax-replay"] > accuracy["softmax"] + 0.4  # measured 0.00: the new task took over


def test_joint_training_learns_all_classes():
    clusters = Clusters(8, F, seed=0)
    head = SoftmaxHead(F, 8, lr=1e-2)
    features, labels = _stream(clusters, list(range(8)), per_class=40, seed=1)
    train_joint(head, features, labels, epochs=3, batch=16, rng=np.random.default_rng(0))
    assert _accuracy(head, clusters, list(range(8))) > 0.9


@pytest.mark.parametrize("method", [NearestClassMean(F, 3), StreamingLDA(F, 3), SoftmaxHead(F, 3)])
def test_state_size_is_reported(method):
    assert method.nbytes() >= F * 3 * 4
