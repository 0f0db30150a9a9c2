"""Optimizers: agree with PyTorch's, minimise, and resume exactly from their state arrays."""

from __future__ import annotations

import numpy as np
import pytest

from edgecvm.learning.optim import Adam

SHAPES = {"w": (6, 4), "b": (4,)}


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def _grad_sequence(steps: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(steps)]


def test_matches_torch():
    torch = pytest.importorskip("torch")
    params = _params()
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    ours = Adam(params, lr=1e-2)
    theirs = torch.optim.Adam(list(tparams.values()), lr=1e-2)
    for grads in _grad_sequence(20):
        ours.step(params, grads)
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
    for k, v in params.items():
        np.testing.assert_allclose(v, tparams[k].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_minimises_a_quadratic():
    params = _params()
    target = {k: np.ones(s, np.float32) for k, s in SHAPES.items()}
    opt = Adam(params, lr=0.05)
    for _ in range(300):
        opt.step(params, {k: 2 * (params[k] - target[k]) for k in params})
    for k in params:
        np.testing.assert_allclose(params[k], target[k], atol=0.05)


@pytest.mark.parametrize("cls", [Adam])
def test_resuming_from_state_arrays_continues_the_same_trajectory(cls):
    grads = _grad_sequence(10)
    straight = _params()
    opt = cls(straight)
    for g in grads:
        opt.step(straight, g)

    resumed = _params()
    first = cls(resumed)
    for g in grads[:4]:
        first.step(resumed, g)
    saved = {k: v.copy() for k, v in first.state_arrays().items()}
    second = cls(resumed)
    second.load_state_arrays(saved)
    for g in grads[4:]:
        second.step(resumed, g)
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k])


@pytest.mark.parametrize("cls", [Adam])
def test_state_with_wrong_shape_or_missing_key_is_refused(cls):
    opt = cls(_params())
    state = {k: v.copy() for k, v in opt.state_arrays().items()}
    key = next(k for k in state if k != "t")
    with pytest.raises(ValueError, match="shape"):
        cls(_params()).load_state_arrays({**state, key: np.zeros((1, 1), np.float32)})
    with pytest.raises(ValueError, match="lacks"):
        cls(_params()).load_state_arrays({k: v for k, v in state.items() if k != key})
    with pytest.raises(ValueError, match="step counter"):
        cls(_params()).load_state_arrays({k: v for k, v in state.items() if k != "t"})


def test_nbytes_counts_moments_and_scratch():
    params = _params()
    param_bytes = sum(v.nbytes for v in params.values())
    largest = max(v.nbytes for v in params.values())
    assert Adam(params).nbytes() == 2 * param_bytes + largest
