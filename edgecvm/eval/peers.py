"""The on-device learners edgecvm is compared against, on the same frozen features.

Each peer sees the training stream once, in order, one sample at a time (the
harness hands it chunks; a peer never looks ahead inside a chunk in a way that
changes its result), and predicts among the classes seen so far (no task id):

- ``NearestClassMean``: running mean per class, nearest mean by Euclidean distance.
- ``StreamingLDA``: Hayes & Kanan 2020, "Lifelong machine learning with deep
  streaming linear discriminant analysis" (CVPRW): running class means and one
  shared covariance updated per sample exactly as their reference code does
  (``Sigma = (n Sigma + n/(n+1) d d^T) / (n+1)`` with ``d = x - mu_y`` before
  the mean update), shrinkage 1e-4 at prediction. One difference: scores are
  taken over seen classes only, as for every method here (their code also
  scores never-seen classes, with a zero mean).
- ``SoftmaxHead``: a linear softmax classifier fine-tuned on the stream with
  Adam (the device's optimizer code), one sample per step, logits of unseen
  classes masked; optionally mixing a replay minibatch from the device's
  class-balanced latent replay buffer (``edgecvm.learning.replay``), same budget as CVM.
- ``joint`` (in the harness): ``SoftmaxHead`` trained on the union of all
  tasks, shuffled, several epochs, minibatches: the non-continual upper bound.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgecvm.learning.optim import Adam
from edgecvm.learning.replay import ReplayBuffer


class ContinualMethod(Protocol):
    """What the harness drives: learn from an ordered chunk of the stream, predict class ids."""

    name: str

    def learn(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Learn from (n, F) float32 features with class ids (n,), one sample after the other."""
        ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class id (among classes learned so far) for each row."""
        ...

    def nbytes(self) -> int:
        """Bytes of the state the method keeps between samples."""
        ...


class NearestClassMean:
    def __init__(self, feature_dim: int, n_classes: int, name: str = "ncm") -> None:
        self.name = name
        self.sums = np.zeros((n_classes, feature_dim), dtype=np.float64)
        self.counts = np.zeros(n_classes, dtype=np.int64)

    def learn(self, features: np.ndarray, labels: np.ndarray) -> None:
        np.add.at(self.sums, labels, features)  # order-independent: the same as one sample at a time
        self.counts += np.bincount(labels, minlength=self.counts.size)

    def scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The seen class ids and, per frame and seen class, minus the squared distance to its mean."""
        seen = np.flatnonzero(self.counts)
        means = self.sums[seen] / self.counts[seen, None]
        return seen, (2.0 * features @ means.T - np.einsum("cf,cf->c", means, means)
                      - np.einsum("nf,nf->n", features, features)[:, None])

    def predict(self, features: np.ndarray) -> np.ndarray:
        seen, scores = self.scores(features)
        return seen[np.argmax(scores, axis=1)]

    def nbytes(self) -> int:
        return self.sums.nbytes + self.counts.nbytes


class StreamingLDA:
    """Deep SLDA (Hayes & Kanan 2020); see the module docstring.

    The covariance recurrence is kept as ``P = n * Sigma``, which turns each
    update into adding ``n/(n+1) d d^T``; the ``d`` of a chunk are computed
    sample by sample (each needs the class mean just before it), then added
    in one matrix product: the same sum as adding them one at a time.
    """

    def __init__(self, feature_dim: int, n_classes: int, shrinkage: float = 1e-4, name: str = "slda") -> None:
        self.name = name
        self.shrinkage = shrinkage
        self.means = np.zeros((n_classes, feature_dim), dtype=np.float64)
        self.counts = np.zeros(n_classes, dtype=np.int64)
        self.scatter = np.zeros((feature_dim, feature_dim), dtype=np.float64)  # P = n * Sigma
        self.n = 0
        self._precision: np.ndarray | None = None  # cached until the next update

    def learn(self, features: np.ndarray, labels: np.ndarray) -> None:
        deltas = np.empty(features.shape, dtype=np.float64)
        weights = np.empty(features.shape[0], dtype=np.float64)
        for i, (x, y) in enumerate(zip(features, labels, strict=True)):
            deltas[i] = x - self.means[y]
            weights[i] = self.n / (self.n + 1)
            self.means[y] += deltas[i] / (self.counts[y] + 1)
            self.counts[y] += 1
            self.n += 1
        self.scatter += (deltas * weights[:, None]).T @ deltas
        self._precision = None

    def covariance(self) -> np.ndarray:
        return self.scatter / max(self.n, 1)

    def scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The seen class ids and the discriminant score of each frame for each of them."""
        if self._precision is None:
            eye = np.eye(self.scatter.shape[0])
            self._precision = np.linalg.inv((1 - self.shrinkage) * self.covariance() + self.shrinkage * eye)
        seen = np.flatnonzero(self.counts)
        w = self.means[seen] @ self._precision  # (C, F)
        c = 0.5 * np.einsum("cf,cf->c", w, self.means[seen])
        return seen, features @ w.T - c

    def predict(self, features: np.ndarray) -> np.ndarray:
        seen, scores = self.scores(features)
        return seen[np.argmax(scores, axis=1)]

    def nbytes(self) -> int:
        return self.means.nbytes + self.counts.nbytes + self.scatter.nbytes


class SoftmaxHead:
    """Linear softmax over the classes seen so far, Adam steps of one new sample (+ a replay minibatch)."""

    def __init__(
        self,
        feature_dim: int,
        n_classes: int,
        lr: float = 1e-3,
        replay: ReplayBuffer | None = None,
        replay_batch: int = 32,
        seed: int = 0,
        name: str = "softmax",
    ) -> None:
        self.name = name
        self.params = {"w": np.zeros((feature_dim, n_classes), dtype=np.float32),
                       "b": np.zeros(n_classes, dtype=np.float32)}
        self.optimizer = Adam(self.params, lr=lr)
        self.seen = np.zeros(n_classes, dtype=bool)
        self.replay = replay
        self.replay_batch = replay_batch
        self.rng = np.random.default_rng(seed)
        self._grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def learn(self, features: np.ndarray, labels: np.ndarray) -> None:
        for i in range(features.shape[0]):
            self.step(features[i : i + 1], labels[i : i + 1])

    def step(self, features: np.ndarray, labels: np.ndarray) -> float:
        """One Adam step on ``features`` (+ a replay minibatch); the new samples then join the replay buffer."""
        self.seen[labels] = True
        x, y = features, labels
        if self.replay is not None:
            batch = self.replay.sample(self.replay_batch, self.rng)
            if batch is not None:
                x = np.concatenate([x, batch.features], dtype=np.float32)
                y = np.concatenate([y, batch.labels])
        loss = self._loss_and_grads(x, y)
        self.optimizer.step(self.params, self._grads)
        if self.replay is not None:
            self.replay.add(features, labels)
        return loss

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n, classes) softmax over the seen classes (0 for the others)."""
        logits = self._logits(features).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def _logits(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.params["w"] + self.params["b"]
        logits[:, ~self.seen] = -np.inf
        return logits

    def _loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float:
        rows = np.arange(y.size)
        logits = self._logits(x)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        loss = float(-np.mean(np.log(np.maximum(p[rows, y], 1e-30))))
        p[rows, y] -= 1.0
        p /= y.size
        np.matmul(x.T, p, out=self._grads["w"])
        np.sum(p, axis=0, out=self._grads["b"])
        return loss

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(self._logits(features), axis=1)

    def nbytes(self) -> int:
        replay = self.replay.nbytes if self.replay is not None else 0
        return sum(v.nbytes for v in self.params.values()) + self.optimizer.nbytes() + replay


def train_joint(head: SoftmaxHead, features: np.ndarray, labels: np.ndarray, epochs: int, batch: int,
                rng: np.random.Generator) -> None:
    """Offline upper bound: ``epochs`` shuffled passes of minibatches over everything at once."""
    head.seen[np.unique(labels)] = True
    for _ in range(epochs):
        order = rng.permutation(labels.size)
        for start in range(0, order.size, batch):
            rows = order[start : start + batch]
            head.step(features[rows], labels[rows])
