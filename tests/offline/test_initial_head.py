"""The head the export writes: linear or MLP projection, random or zero-output under the ConSE branch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from device_cli import run_cli
from synthetic_data import CONCEPTS, Clusters, anchor_set

from edgecvm.learning.conse import conse_embed
from edgecvm.learning.learner import Learner, LearnerConfig
from edgecvm.learning.projection_head import ProjectionHead
from edgecvm.offline.export import initial_head

F, D = 32, 16


class _Array:
    """What initial_head reads of a torch parameter: ``.detach().numpy()``."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def detach(self) -> _Array:
        return self

    def numpy(self) -> np.ndarray:
        return self.values


def _model(classes: int) -> SimpleNamespace:
    rng = np.random.default_rng(1)
    fc = SimpleNamespace(in_features=F, weight=_Array(rng.normal(size=(classes, F)).astype(np.float32)),
                         bias=_Array(np.zeros(classes, np.float32)))
    return SimpleNamespace(_fc=fc)


@pytest.mark.parametrize("hidden", [0, 24])
def test_random_projection_has_unit_variance_outputs(hidden: int) -> None:
    head = initial_head(_model(4), anchor_set(D), None, hidden=hidden)
    assert head.kind == ("mlp" if hidden else "linear") and head.hidden_dim == hidden and head.conse is None
    out = ProjectionHead(head).embed(np.random.default_rng(0).normal(size=(2000, F)).astype(np.float32))
    assert 0.5 < float(out.std()) < 1.5


def test_conse_mlp_head_starts_as_pure_conse_and_the_gradient_head_trains_it() -> None:
    imagenet = anchor_set(D, seed=3)
    head = initial_head(_model(len(imagenet)), anchor_set(D), imagenet, hidden=24)
    assert head.kind == "mlp" and head.params["w1"].shape == (F, 24) and not head.params["w"].any()
    x = np.random.default_rng(0).normal(size=(5, F)).astype(np.float32)
    np.testing.assert_allclose(ProjectionHead(head).embed(x), conse_embed(x, head.conse), rtol=1e-5, atol=1e-6)

    learner = Learner(head, anchor_set(D), LearnerConfig(method="sgd", replay_bytes=100 * F * 2, batch_size=8))
    clusters = Clusters(4, F, seed=0)
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(4), 40))
    for label, row in zip(labels, clusters.draw(labels), strict=True):
        learner.observe_features(row[None], [CONCEPTS[label]])
    test = np.repeat(np.arange(4), 20)
    answers = [p.concept for p in learner.predict_features(clusters.draw(test))]
    assert np.mean([a == CONCEPTS[t] for a, t in zip(answers, test, strict=True)]) > 0.9  # chance 0.25
    assert learner.method.head.params["w"].any()  # the MLP's last layer moved off zero


def test_negative_hidden_width_is_one_line_and_exit_2(capsys, tmp_path) -> None:
    run = run_cli(capsys, "export", "--recipe", "edgecvm/resources/recipes/lite0-224.yaml", "--anchors", "x.npz", "--out", tmp_path / "b",
                  "--head-hidden", "-3")
    assert run.code == 2 and "--head-hidden must be >= 0" in run.stderr and run.stderr.count("\n") == 1
