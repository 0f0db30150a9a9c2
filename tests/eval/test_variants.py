"""The evaluation runs the research head variants by name; the device's registry holds only the product methods."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.device.profiles import load_profile
from edgecvm.errors import BadInputError
from edgecvm.eval.harness import (
    CVM_HEAD_METHOD,
    HarnessConfig,
    LearnerMethod,
    MethodContext,
    build_method,
    method_names,
)
from edgecvm.eval.variants import VARIANTS, head_method_names, make_variant
from edgecvm.learning.analytic_head import AnalyticHead
from edgecvm.learning.head_methods import DEFAULT_METHOD, HEAD_METHODS

F, D = 32, 16


def _ctx() -> MethodContext:
    config = HarnessConfig(profile=load_profile("host"), backbone_bytes=0, input_size=224)
    return MethodContext(config, head_params("linear", F, D, conse=True), anchor_set(D), tuple(CONCEPTS[:4]), F)


def test_the_product_offers_lda_and_sgd_and_the_variants_are_eval_only():
    assert list(HEAD_METHODS) == ["lda", "sgd"] and DEFAULT_METHOD == CVM_HEAD_METHOD == "lda"
    assert set(VARIANTS) == {"lda-noconse", "lda-prequential"}
    assert not set(VARIANTS) & set(HEAD_METHODS)
    assert head_method_names() == ["lda", "sgd", "lda-noconse", "lda-prequential"]


def test_cvm_names_resolve_from_both_registries_and_an_unknown_one_lists_them():
    names = "cvm,cvm:sgd,cvm:lda-noconse,cvm-noreplay:lda-prequential"
    assert method_names(names) == names.split(",")
    for gone in ("lda-float64", "lda-calibrate-all", "lda-shrink1e-4", "sgd-momentum"):
        with pytest.raises(BadInputError, match="lda, sgd, lda-noconse, lda-prequential"):
            method_names(f"cvm:{gone}")
    with pytest.raises(BadInputError, match="did you mean 'lda-noconse'"):
        make_variant("lda-noconse2", head_params("linear", F, D), 0)


@pytest.mark.parametrize(("head_method", "cls", "use_conse"), [
    (None, AnalyticHead, True), ("lda-noconse", AnalyticHead, False), ("lda-prequential", AnalyticHead, True)])
def test_a_variant_runs_in_the_device_learner(head_method, cls, use_conse):
    name = "cvm" if head_method is None else f"cvm:{head_method}"
    method = build_method(name, _ctx())
    assert isinstance(method, LearnerMethod)
    head = method.learner.method
    assert isinstance(head, cls) and head.name == (head_method or "lda") and head.use_conse is use_conse
    clusters = Clusters(4, F, seed=0)
    labels = np.repeat(np.arange(4), 20)
    method.learn(clusters.draw(labels), labels)
    assert np.mean(method.predict(clusters.draw(labels)) == labels) > 0.5
    if head_method == "lda-prequential":
        assert head.pool.capacity == 0
