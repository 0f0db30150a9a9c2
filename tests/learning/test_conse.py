"""ConSE embedding: the vectorised numpy version equals the paper's definition computed one image at a time."""

from __future__ import annotations

import numpy as np
import pytest

from edgecvm.formats.anchors import normalise_rows
from edgecvm.learning.conse import ConseCodes, build_conse_branch, conse_embed, conse_weights


def reference_conse(feature: np.ndarray, fc_w: np.ndarray, fc_b: np.ndarray, anchors: np.ndarray, t: int) -> np.ndarray:
    """Norouzi et al. 2014, eq. 1: (1/Z) sum over the T most probable classes of p(y|x) s(y), Z = sum of those p."""
    logits = fc_w @ feature + fc_b  # torch layout: (classes, features)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p)[:t]
    return (p[top, None] * anchors[top]).sum(axis=0) / p[top].sum()


@pytest.mark.parametrize("top_t", [1, 3, 10, 50])
def test_conse_embed_matches_the_definition(top_t: int) -> None:
    rng = np.random.default_rng(top_t)
    fc_w, fc_b = rng.standard_normal((50, 16)).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    anchors = normalise_rows(rng.standard_normal((50, 8)))
    features = rng.random((7, 16)).astype(np.float32) * 3
    branch = build_conse_branch(fc_w, fc_b, anchors, top_t=top_t)
    got = conse_embed(features, branch)
    want = np.stack([reference_conse(f, fc_w, fc_b, anchors, top_t) for f in features])
    assert got.shape == (7, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_weights_are_the_top_classes_renormalised() -> None:
    rng = np.random.default_rng(0)
    branch = build_conse_branch(rng.standard_normal((20, 4)), rng.standard_normal(20), normalise_rows(np.eye(20, 3) + 0.1))
    branch.top_t = 25  # more than there are classes: all of them
    top, w = conse_weights(rng.random((3, 4)).astype(np.float32), branch)
    assert top.shape == w.shape == (3, 20)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    assert all(sorted(row) == list(range(20)) for row in top.tolist())


def test_branch_is_stored_in_feature_major_layout() -> None:
    fc_w = np.arange(12, dtype=np.float64).reshape(3, 4)  # torch Linear: (classes, features)
    branch = build_conse_branch(fc_w, np.zeros(3), np.eye(3, dtype=np.float32), top_t=2)
    assert branch.fc_w.shape == (4, 3) and branch.fc_w.dtype == np.float32 and branch.fc_w.flags.c_contiguous
    assert branch.top_t == 2 and branch.weight == 1.0


def test_codes_embed_as_conse_embed_and_compute_each_row_once_while_it_is_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecvm.learning import conse

    rng = np.random.default_rng(3)
    branch = build_conse_branch(rng.standard_normal((40, 16)), rng.standard_normal(40),
                                normalise_rows(rng.standard_normal((40, 8))), top_t=5)
    rows = (rng.random((12, 16)) * 3).astype(np.float16)  # pooled rows are float16, as the replay buffer's
    want = [conse_embed(rows[i: i + 4].astype(np.float32), branch) for i in (0, 4, 8)]  # chunk by chunk
    computed: list[int] = []
    real = conse.conse_weights
    monkeypatch.setattr(conse, "conse_weights", lambda x, b: computed.append(len(x)) or real(x, b))
    codes = conse.ConseCodes(branch, chunk=4)

    first = codes.embed(rows[:8])
    np.testing.assert_array_equal(first, np.concatenate(want[:2]))
    assert computed == [4, 4]
    again = codes.embed(rows[4:12])  # rows 4-7 kept, 8-11 new
    assert computed == [4, 4, 4]
    np.testing.assert_array_equal(again, np.concatenate(want[1:]))
    codes.embed(rows[:4])  # rows 0-3 were dropped when the second call did not ask for them
    assert computed == [4, 4, 4, 4]
    assert codes.embed(rows[:0]).shape == (0, 8)


def test_kept_codes_saved_and_loaded_continue_exactly_as_the_run_that_kept_them() -> None:
    """A resumed state must not recompute the pool's codes in other groups: BLAS may round a row differently beside
    other rows, and the resumed run would drift from the one that wrote the state."""
    rng = np.random.default_rng(4)
    branch = build_conse_branch(rng.standard_normal((1000, 1280)), rng.standard_normal(1000),
                                normalise_rows(rng.standard_normal((1000, 16))), top_t=10)
    rows = rng.standard_normal((48, 1280)).astype(np.float16)
    running = ConseCodes(branch, chunk=32)
    for end in range(5, 40, 5):  # a few new rows per fit, as a stream adds them
        running.embed(rows[max(0, end - 20): end])
    resumed = ConseCodes(branch, chunk=32)
    resumed.load_state_arrays(running.state_arrays())
    for window in (rows[20:40], rows[25:48], rows[:48]):
        np.testing.assert_array_equal(resumed.embed(window), running.embed(window))


@pytest.mark.parametrize("damage", ["class out of range", "weight not finite", "rows disagree", "wrong top-T"])
def test_kept_codes_that_do_not_fit_the_branch_are_refused(damage: str) -> None:
    rng = np.random.default_rng(5)
    branch = build_conse_branch(rng.standard_normal((40, 16)), rng.standard_normal(40),
                                normalise_rows(rng.standard_normal((40, 8))), top_t=5)
    codes = ConseCodes(branch, chunk=4)
    codes.embed(rng.standard_normal((6, 16)).astype(np.float16))
    arrays = {k: v.copy() for k, v in codes.state_arrays().items()}
    assert arrays["keys"].shape == (6, 16) and arrays["top"].shape == arrays["w"].shape == (6, 5)
    if damage == "class out of range":
        arrays["top"][0, 0] = 40
    elif damage == "weight not finite":
        arrays["w"][1, 2] = np.nan
    elif damage == "rows disagree":
        arrays["w"] = arrays["w"][:5]
    else:
        arrays["top"], arrays["w"] = arrays["top"][:, :4], arrays["w"][:, :4]
    with pytest.raises(ValueError, match="kept ConSE codes"):
        ConseCodes(branch, chunk=4).load_state_arrays(arrays)
