"""The head-method registry: the product's two methods, and a clear refusal of any other name."""

from __future__ import annotations

import pytest
from synthetic_data import anchor_set, head_params

from edgecvm.device.state import StateIdentity, load_state, save_state
from edgecvm.errors import BadInputError
from edgecvm.eval.variants import make_variant
from edgecvm.learning.head_methods import DEFAULT_METHOD, HEAD_METHODS, make_head_method
from edgecvm.learning.learner import Learner, LearnerConfig

F, D = 32, 16


def test_only_the_product_methods_are_offered():
    assert list(HEAD_METHODS) == ["lda", "sgd"] and DEFAULT_METHOD == "lda"
    for name in HEAD_METHODS:
        assert make_head_method(name, head_params("linear", F, D, conse=True)).name == name


@pytest.mark.parametrize("name", ["lda-noconse", "lda-float64", "sgd-momentum", "LDA"])
def test_another_name_is_bad_input_listing_the_product_methods(name):
    with pytest.raises(BadInputError, match=f"unknown head method '{name}'.*available: lda, sgd"):
        make_head_method(name, head_params("linear", F, D))


def test_a_state_learned_with_a_research_variant_is_refused_by_name(tmp_path):
    """The state file names its head method; a device resumes only product methods."""
    head, anchors = head_params("linear", F, D, conse=True), anchor_set(D)
    identity = StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64)
    learner = Learner(head, anchors, LearnerConfig(replay_bytes=50 * F * 2, batch_size=4))
    learner.method = make_variant("lda-noconse", head, learner.replay.capacity)
    save_state(tmp_path, learner, identity)
    with pytest.raises(BadInputError, match=r"head method 'lda-noconse'.*\(lda, sgd\)"):
        load_state(tmp_path, head, anchors, identity, LearnerConfig())


@pytest.mark.parametrize("features, pooled", [(0, 256), (400, 256), (1000, 500), (2000, 1000), (8000, 1024)])
def test_the_lda_head_pools_half_the_learners_replay_buffer_within_256_and_1024(features: int, pooled: int):
    """A profile with a smaller replay budget (the Pi Zero 2 W's 1,000 features) holds a smaller calibration pool."""
    learner = Learner(head_params("linear", F, D, conse=True), anchor_set(D),
                      LearnerConfig(replay_bytes=features * F * 2, method="lda"))
    assert learner.replay.capacity == features and learner.method.pool.capacity == pooled
