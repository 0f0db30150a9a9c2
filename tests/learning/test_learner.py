"""Learner: learns synthetic clustered classes online, grows its known set, refuses bad input, skips NaN."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.errors import BadInputError
from edgecvm.learning.conse import conse_embed
from edgecvm.learning.head_methods import HEAD_METHODS, GradientHead
from edgecvm.learning.learner import Learner, LearnerConfig
from edgecvm.learning.optim import Adam

F, D = 32, 16


def _learner(replay_bytes: int = 200 * F * 2, conse: bool = False, zero_proj: bool = False, **kw) -> Learner:
    config = LearnerConfig(replay_bytes=replay_bytes, batch_size=16, **kw)
    return Learner(head_params("linear", F, D, conse=conse, zero_proj=zero_proj), anchor_set(D), config)


def _teach(learner: Learner, clusters: Clusters, classes: list[int], per_class: int, seed: int = 0) -> None:
    labels = np.random.default_rng(seed).permutation(np.repeat(classes, per_class))
    for label, row in zip(labels, clusters.draw(labels), strict=True):
        learner.observe_features(row[None], [CONCEPTS[label]])


def _accuracy(learner: Learner, clusters: Clusters, classes: list[int], per_class: int = 40) -> float:
    labels = np.repeat(classes, per_class)
    predictions = learner.predict_features(clusters.draw(labels))
    return float(np.mean([p.concept == CONCEPTS[c] for p, c in zip(predictions, labels, strict=True)]))


def test_learns_several_classes_online_to_high_accuracy():
    learner, clusters = _learner(), Clusters(8, F, seed=0)
    _teach(learner, clusters, list(range(8)), per_class=30)
    assert learner.known == sorted(learner.known, key=lambda n: learner.known.index(n))  # teaching order kept
    assert set(learner.known) == set(CONCEPTS[:8])
    assert learner.counters.updates == 240 and learner.counters.frames_seen == 240
    assert learner.counters.per_concept == {c: 30 for c in CONCEPTS[:8]}
    assert _accuracy(learner, clusters, list(range(8))) > 0.9  # chance is 0.125


def test_replay_keeps_old_classes_in_class_incremental_learning():
    """Task A (4 classes), then task B (4 others): with replay, the gradient head still recognises task A."""
    accuracies = {}
    for name, replay_bytes in (("replay", 200 * F * 2), ("no-replay", 0)):
        learner, clusters = _learner(replay_bytes=replay_bytes, method="sgd"), Clusters(8, F, seed=0)
        _teach(learner, clusters, [0, 1, 2, 3], per_class=30, seed=1)
        _teach(learner, clusters, [4, 5, 6, 7], per_class=30, seed=2)
        accuracies[name] = _accuracy(learner, clusters, [0, 1, 2, 3])
    assert accuracies["replay"] > 0.8  # measured 0.94 (4 of 8 known classes: chance 0.125)
    assert accuracies["replay"] > accuracies["no-replay"] + 0.3  # measured 0.24 without replay


def test_the_default_head_does_not_forget_old_classes_even_without_replay():
    """The default (lda) keeps statistics that are only added to: task A survives task B with no replay at all."""
    learner, clusters = _learner(replay_bytes=0), Clusters(8, F, seed=0)
    assert learner.method.name == "lda"
    _teach(learner, clusters, [0, 1, 2, 3], per_class=30, seed=1)
    before = _accuracy(learner, clusters, [0, 1, 2, 3])
    _teach(learner, clusters, [4, 5, 6, 7], per_class=30, seed=2)
    assert before > 0.9 and _accuracy(learner, clusters, [0, 1, 2, 3]) > 0.9  # 4 of 8 known: chance 0.125


def test_each_update_mixes_the_new_samples_with_a_replay_minibatch(monkeypatch):
    calls = []

    class Spy(GradientHead):
        def update(self, features, targets, known_anchors, replay):
            calls.append((features.copy(), targets.copy(), known_anchors.shape[0],
                          None if replay is None else (replay.features.copy(), replay.labels.copy())))
            return super().update(features, targets, known_anchors, replay)

    monkeypatch.setitem(HEAD_METHODS, "spy", lambda head, replay_capacity: Spy("spy", head, lambda p: Adam(p)))
    learner, clusters = _learner(method="spy"), Clusters(3, F)
    _teach(learner, clusters, [0, 1, 2], per_class=20)
    assert calls[0][3] is None  # nothing to replay before the first sample
    sizes = [0 if c[3] is None else len(c[3][1]) for c in calls]
    assert sizes[:17] == list(range(17)) and set(sizes[17:]) == {16}  # min(stored, batch_size)
    for features, targets, n_known, replay in calls:
        assert features.shape == (1, F) and targets.max() < n_known
        if replay is not None:
            assert replay[0].dtype == np.float16 and replay[1].max() < n_known
    # what is replayed is what was taught: every replayed row is one of the earlier new samples
    taught = {calls[i][0].astype(np.float16).tobytes() for i in range(30)}
    assert all(row.tobytes() in taught for row in calls[30][3][0])


def test_unknown_concept_is_refused_with_close_names_and_nothing_changes():
    learner = _learner()
    with pytest.raises(BadInputError, match="coffee mug"):
        learner.observe_features(np.ones((1, F), np.float32), ["coffee mugg"])
    assert learner.known == [] and learner.counters.frames_seen == 0 and learner.replay.size == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_skip_the_step_and_keep_the_weights(bad):
    learner, clusters = _learner(), Clusters(2, F)
    _teach(learner, clusters, [0, 1], per_class=5)
    weights = {k: v.copy() for k, v in learner.method.state_arrays().items()}
    features = clusters.draw(np.array([0]))
    features[0, 3] = bad
    result = learner.observe_features(features, ["cat"])
    assert result.skipped and np.isnan(result.loss)
    assert learner.counters.skipped_nonfinite == 1 and learner.counters.updates == 10
    for k, v in learner.method.state_arrays().items():
        np.testing.assert_array_equal(v, weights[k])
        assert np.isfinite(v).all()
    assert learner.replay.size == 10  # the bad frame did not enter replay


def test_a_non_finite_loss_skips_the_step_and_does_not_add_the_concept():
    learner = _learner()
    learner.observe_features(Clusters(1, F).draw(np.array([0])), ["cat"])
    before = {k: v.copy() for k, v in learner.method.state_arrays().items()}
    huge = np.full((1, F), 3e38, np.float32)  # finite, but the projection overflows to inf
    result = learner.observe_features(huge, ["dog"])
    assert result.skipped and learner.counters.skipped_nonfinite == 1
    assert learner.known == ["cat"]
    for k, v in learner.method.state_arrays().items():
        np.testing.assert_array_equal(v, before[k])


def test_known_set_grows_and_vocab_chooses_what_predictions_range_over():
    learner, clusters = _learner(), Clusters(3, F)
    with pytest.raises(BadInputError, match="vocabulary 'all'"):
        learner.predict_features(clusters.draw(np.array([0])))
    result = learner.observe_features(clusters.draw(np.array([0, 1])), ["cat", "DOG"])
    assert result.new_concepts == ("cat", "dog") and learner.known == ["cat", "dog"]
    assert learner.observe_features(clusters.draw(np.array([1])), ["dog"]).new_concepts == ()
    known = learner.predict_features(clusters.draw(np.array([0, 1, 2])), top_k=5)
    assert all({c for c, _ in p.top_k} <= {"cat", "dog"} and len(p.top_k) == 2 for p in known)
    everything = learner.predict_features(clusters.draw(np.array([2])), top_k=5, vocab="all")[0]
    assert len(everything.top_k) == 5
    scores = [s for _, s in everything.top_k]
    assert scores == sorted(scores, reverse=True) and everything.score == scores[0]
    assert everything.concept == everything.top_k[0][0] and -1.0 <= everything.score <= 1.0


def test_anchors_held_as_int8_teach_and_predict_like_their_float32_rows(tmp_path):
    from edgecvm.formats.anchors import AnchorSet, load_anchors, save_anchors

    save_anchors(tmp_path / "a.npz", anchor_set(D), "int8")
    held = load_anchors(tmp_path / "a.npz")
    dense = AnchorSet(held.names, held.vectors, held.model, held.templates, "int8")
    learners = [Learner(head_params("linear", F, D, conse=True), anchors, LearnerConfig(replay_bytes=200 * F * 2))
                for anchors in (held, dense)]
    for learner in learners:
        _teach(learner, Clusters(6, F, seed=2), [0, 1, 2], per_class=10)  # the same frames for both
    np.testing.assert_allclose(learners[0].known_anchors, learners[1].known_anchors, atol=1e-6)
    frames = Clusters(6, F, seed=3).draw(np.arange(6))
    for vocab in ("known", "all"):
        got, want = (learner.predict_features(frames, top_k=3, vocab=vocab) for learner in learners)
        assert [p.top_k[0][0] for p in got] == [p.top_k[0][0] for p in want]
        np.testing.assert_allclose([p.score for p in got], [p.score for p in want], atol=1e-5)
        assert all(p.known_margin is not None for p in got)  # the open-set decision ran, over int8 rows too
        np.testing.assert_allclose([p.known_margin for p in got], [p.known_margin for p in want], atol=1e-4)
    assert learners[0].open_set_threshold() == pytest.approx(learners[1].open_set_threshold(), abs=1e-4)


def test_zero_shot_conse_head_names_the_concept_nearest_to_the_conse_embedding():
    learner = _learner(conse=True, zero_proj=True)
    features = Clusters(4, F).draw(np.arange(4))
    spec = head_params("linear", F, D, conse=True, zero_proj=True)
    expected = conse_embed(features, spec.conse)
    sims = (expected / np.linalg.norm(expected, axis=1, keepdims=True)) @ learner.anchors.vectors.T
    predictions = learner.predict_features(features, top_k=3, vocab="all")
    assert [p.concept for p in predictions] == [CONCEPTS[i] for i in sims.argmax(axis=1)]
    np.testing.assert_allclose([p.score for p in predictions], sims.max(axis=1), rtol=1e-5)


def test_predicting_a_non_finite_frame_names_the_row():
    learner = _learner()
    features = np.ones((3, F), np.float32)
    features[1, 0] = np.nan
    with pytest.raises(BadInputError, match=r"rows \[1\]"):
        learner.predict_features(features, vocab="all")


def test_wrong_feature_width_is_a_clear_error():
    with pytest.raises(BadInputError, match=f"\\(n, {F}\\)"):
        _learner().observe_features(np.ones((1, F + 1), np.float32), ["cat"])


def test_image_level_observe_and_predict_go_through_the_extractor():
    clusters = Clusters(2, F)

    class FakeExtractor:
        def __init__(self):
            self.calls = 0

        def extract(self, images):
            self.calls += 1
            assert all(isinstance(im, Image.Image) for im in images)
            return clusters.draw(np.array([int(im.getpixel((0, 0))[0] > 127) for im in images]))

    extractor = FakeExtractor()
    learner = Learner(head_params("linear", F, D), anchor_set(D), LearnerConfig(replay_bytes=100 * F * 2),
                      extractor=extractor)
    white, black = Image.new("RGB", (8, 8), "white"), Image.new("RGB", (8, 8), "black")
    for _ in range(30):
        learner.observe(white, "dog")
        learner.observe(black, "cat")
    assert learner.predict(white).concept == "dog" and learner.predict(black).concept == "cat"
    assert extractor.calls == 62
    with pytest.raises(BadInputError, match="extractor"):
        _learner().predict(white, vocab="all")


def test_bad_frames_are_counted_for_the_io_layer():
    learner = _learner()
    learner.count_bad_frame()
    learner.count_bad_frame()
    assert learner.counters.bad_frames == 2


def test_unknown_head_method_lists_the_available_ones():
    with pytest.raises(BadInputError, match="did you mean 'sgd'"):
        _learner(method="sdg")
