"""Open-set answers: the threshold's calibration, "unknown" among the taught concepts, zero-shot names for the rest."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.errors import BadInputError
from edgecvm.learning.learner import Learner, LearnerConfig
from edgecvm.learning.open_set import UNKNOWN, ZERO_SHOT_WEIGHT, Evidence, calibrate_threshold, known_score

F, D = 32, 16
HEAD = head_params("linear", F, D, conse=True)
ANCHORS = anchor_set(D)
TAUGHT = 6  # the first six of the twelve clusters are taught; the other six are never seen
CLUSTERS_SEED = 3


def _taught_learner(config: LearnerConfig | None = None, per_class: int = 120) -> tuple[Learner, Clusters]:
    clusters = Clusters(len(CONCEPTS), F, seed=CLUSTERS_SEED)
    learner = Learner(HEAD, ANCHORS, config or LearnerConfig(replay_bytes=600 * F * 2, batch_size=8))
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(TAUGHT), per_class))
    for label, row in zip(labels, clusters.draw(labels), strict=True):
        learner.observe_features(row[None], [CONCEPTS[label]])
    return learner, clusters


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_the_threshold_of_gaussian_scores_accepts_the_target_share_of_new_ones(target: float):
    rng = np.random.default_rng(0)
    threshold = calibrate_threshold(rng.normal(size=2000), target)
    assert threshold is not None
    assert np.mean(rng.normal(size=100_000) >= threshold) == pytest.approx(target, abs=0.015)


def test_the_score_is_the_energy_of_the_taught_logits_minus_the_weighted_best_untaught_logit():
    evidence = Evidence(np.array([[0.0, 0.0], [3.0, -50.0]], np.float32), np.zeros((2, D), np.float32), gain=2.0)
    scores = known_score(evidence, np.array([0.1, 0.0]))
    np.testing.assert_allclose(scores, [np.log(2.0) - ZERO_SHOT_WEIGHT * 0.1, 3.0], atol=1e-6)
    # the same taught evidence, more zero-shot evidence for an untaught concept: less likely a taught one
    assert np.all(np.diff(known_score(Evidence(evidence.known_logits[[0, 0]], evidence.zero_shot, 2.0),
                                      np.array([0.1, 0.2]))) < 0)


def test_too_few_or_non_finite_calibration_scores_set_no_threshold():
    assert calibrate_threshold(np.arange(10.0), 0.95) is None
    assert calibrate_threshold(np.full(100, np.nan), 0.95) is None


def test_new_frames_of_taught_gaussian_classes_are_accepted_at_the_target_rate():
    """Calibrated on replayed samples scored leave-one-out, the threshold holds for frames the device never saw."""
    learner, clusters = _taught_learner()
    known = clusters.draw(np.repeat(np.arange(TAUGHT), 300))
    unseen = clusters.draw(np.repeat(np.arange(TAUGHT, len(CONCEPTS)), 300))
    accepted = np.mean([not p.unknown for p in learner.predict_features(known, top_k=1)])
    rejected = np.mean([p.unknown for p in learner.predict_features(unseen, top_k=1)])
    assert accepted == pytest.approx(0.95, abs=0.05)
    assert rejected > 0.5


def test_unknown_answers_keep_the_nearest_taught_concepts_and_off_restores_the_forced_answer():
    on, clusters = _taught_learner()
    off, _ = _taught_learner(LearnerConfig(replay_bytes=600 * F * 2, batch_size=8, unknown_tpr=None))
    frames = clusters.draw(np.arange(len(CONCEPTS)).repeat(20))
    answers_on, answers_off = on.predict_features(frames, top_k=3), off.predict_features(frames, top_k=3)
    unknown = [p for p in answers_on if p.unknown]
    assert unknown and all(p.concept == UNKNOWN and p.known_margin < 0 for p in unknown)
    assert all(p.known_margin is None and not p.unknown for p in answers_off)
    assert [p.top_k for p in answers_on] == [p.top_k for p in answers_off]  # the closed-set ranking is untouched
    assert all(p.concept == p.top_k[0][0] for p in answers_off)


def test_over_every_concept_a_frame_judged_untaught_is_named_among_the_untaught_concepts():
    learner, clusters = _taught_learner()
    frames = clusters.draw(np.arange(len(CONCEPTS)).repeat(20))
    margins = [p.known_margin for p in learner.predict_features(frames, top_k=1)]
    answers = learner.predict_features(frames, top_k=3, vocab="all")
    taught = set(learner.known)
    for answer, margin in zip(answers, margins, strict=True):
        assert answer.known_margin == margin and not answer.unknown
        names = {name for name, _ in answer.top_k}
        assert names <= taught if margin >= 0 else not names & taught


def test_a_bad_target_rate_is_refused_naming_it():
    with pytest.raises(BadInputError, match="between 0 and 1"):
        LearnerConfig(unknown_tpr=1.0)


def test_without_replay_there_is_no_calibration_and_every_answer_is_a_taught_concept():
    learner, clusters = _taught_learner(LearnerConfig(replay_bytes=0, batch_size=8), per_class=30)
    assert learner.open_set_threshold() is None
    answers = learner.predict_features(clusters.draw(np.arange(len(CONCEPTS))))
    assert all(not p.unknown and p.known_margin is None for p in answers)


def test_an_open_set_answer_computes_each_frames_conse_embedding_once(monkeypatch):
    """The decision's ConSE embedding is the one the head's own embedding adds: computed once per frame."""
    import edgecvm.learning.analytic_head as analytic_head
    import edgecvm.learning.projection_head as projection_head

    learner, clusters = _taught_learner()
    frames = clusters.draw(np.arange(len(CONCEPTS)).repeat(5))
    expected = learner.predict_features(frames, top_k=3, vocab="all")  # solved and calibrated by now
    calls, conse_embed = [], projection_head.conse_embed

    def counted(features: np.ndarray, branch):
        calls.append(len(features))
        return conse_embed(features, branch)

    monkeypatch.setattr(analytic_head, "conse_embed", counted)
    monkeypatch.setattr(projection_head, "conse_embed", counted)
    answers = learner.predict_features(frames, top_k=3, vocab="all")
    assert calls == [len(frames)]
    assert [(a.concept, a.top_k, a.known_margin) for a in answers] == [
        (e.concept, e.top_k, e.known_margin) for e in expected]
