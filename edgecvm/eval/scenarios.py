"""Continual-learning scenarios over cached features: which samples arrive when, and what is tested.

- class-incremental: the classes are split into T tasks by a seeded permutation;
  task t's training images arrive shuffled among themselves, one pass by default
  (online), ``epochs`` passes over the task (each reshuffled) before the next
  task starts; no task id at test time.
- few-shot: the same, with only K training images per class (a seeded choice),
  the "show it the object a few times" case on the device.
- zero-shot: no training at all; the test set is every class's held-out images.

Training streams hold only training-split rows and test sets only held-out
rows: the two are built from disjoint tables here, so the harness cannot
evaluate on training images or read a training label at test time by accident.

``holdout="dev"`` replaces the held-out (val) images by the last quarter of
each class's training images (by file number) and trains on the rest: method
settings are chosen on that split, so the reported val figures are not tuned
on the val images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.eval.feature_cache import FeatureTable

SCENARIOS = ("class-incremental", "few-shot", "zero-shot")
HOLDOUTS = ("val", "dev")
DEV_FRACTION = 0.25  # of each class's training images, held out by ``holdout="dev"``


@dataclass(frozen=True)
class TrainStream:
    """Rows of a training table in arrival order (a view: features are not copied per task)."""

    features: np.ndarray  # (n_train, F) float32, the whole training table
    labels: np.ndarray  # (n_train,) class ids
    order: np.ndarray  # row indices in arrival order; may repeat rows (epochs)

    def __len__(self) -> int:
        return int(self.order.size)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features, labels) chunks of ``size`` rows, in arrival order."""
        for start in range(0, self.order.size, size):
            rows = self.order[start : start + size]
            yield self.features[rows], self.labels[rows]


@dataclass(frozen=True)
class TestSet:
    features: np.ndarray  # (m, F) float32, held-out images only
    labels: np.ndarray  # (m,) class ids


@dataclass(frozen=True)
class Task:
    index: int
    classes: np.ndarray  # class ids taught in this task
    train: TrainStream
    test: TestSet  # held-out images of ``classes``


@dataclass(frozen=True)
class Scenario:
    name: str
    concepts: tuple[str, ...]  # class id -> concept name
    tasks: tuple[Task, ...]  # empty for zero-shot
    test: TestSet  # every held-out image of every class (zero-shot evaluation)
    seed: int
    epochs: int
    shots: int | None  # training images per class, None = all
    holdout: str  # what ``test`` holds: "val" images or the "dev" part of training (module docstring)


def split_table(table: FeatureTable, holdout: str = "val") -> tuple[FeatureTable, FeatureTable]:
    """(training rows, held-out rows): the val split, or the dev split carved out of training (module docstring)."""
    if holdout not in HOLDOUTS:
        raise BadInputError(f"unknown holdout {holdout!r}; choose one of {', '.join(HOLDOUTS)}")
    train_rows = np.flatnonzero(table.is_train)
    if holdout == "val":
        return table.select(train_rows), table.select(np.flatnonzero(~table.is_train))
    dev = np.zeros(table.labels.size, dtype=bool)
    for c in range(len(table.concepts)):
        rows = train_rows[table.labels[train_rows] == c]
        rows = rows[np.argsort(table.numbers[rows], kind="stable")]
        dev[rows[rows.size - int(round(rows.size * DEV_FRACTION)) :]] = True
    return table.select(np.flatnonzero(table.is_train & ~dev)), table.select(np.flatnonzero(dev))


def build_scenario(
    table: FeatureTable,
    name: str,
    n_tasks: int = 10,
    seed: int = 0,
    epochs: int = 1,
    shots: int | None = None,
    holdout: str = "val",
) -> Scenario:
    """The scenario called ``name`` (one of ``SCENARIOS``) over a table of train and held-out features."""
    if name not in SCENARIOS:
        raise BadInputError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    if epochs < 1:
        raise BadInputError(f"--epochs must be >= 1, got {epochs}")
    if name == "few-shot" and (shots is None or shots < 1):
        raise BadInputError("the few-shot scenario needs --shots K (K >= 1 training images per class)")
    if name != "few-shot" and shots is not None:
        raise BadInputError(f"--shots only applies to the few-shot scenario, not {name}")
    n_classes = len(table.concepts)
    if name != "zero-shot" and not 1 <= n_tasks <= n_classes:
        raise BadInputError(f"--tasks must be between 1 and the number of classes ({n_classes}), got {n_tasks}")
    train, held_out = split_table(table, holdout)
    test = TestSet(held_out.features, held_out.labels)
    if name == "zero-shot":
        return Scenario(name, table.concepts, (), test, seed, epochs, None, holdout)
    rng = np.random.default_rng(seed)
    class_order = rng.permutation(n_classes)
    rows = _rows_per_class(train.labels, table.concepts, rng, shots)
    tasks = []
    for index, classes in enumerate(np.array_split(class_order, n_tasks)):
        task_rows = np.concatenate([rows[c] for c in classes])
        order = np.concatenate([rng.permutation(task_rows) for _ in range(epochs)])
        in_task = np.isin(held_out.labels, classes)
        tasks.append(Task(index, np.sort(classes), TrainStream(train.features, train.labels, order),
                          TestSet(held_out.features[in_task], held_out.labels[in_task])))
    return Scenario(name, table.concepts, tuple(tasks), test, seed, epochs, shots, holdout)


def _rows_per_class(labels: np.ndarray, concepts: tuple[str, ...], rng: np.random.Generator,
                    shots: int | None) -> list[np.ndarray]:
    """Training rows of each class: all of them, or ``shots`` chosen at random (seeded)."""
    rows = [np.flatnonzero(labels == c) for c in range(len(concepts))]
    if shots is None:
        return rows
    short = [c for c, r in enumerate(rows) if r.size < shots]
    if short:
        raise BadInputError(f"--shots {shots}: {len(short)} class(es) have fewer training images (e.g. "
                            f"{concepts[short[0]]!r} has {rows[short[0]].size}); each class needs {shots}")
    return [np.sort(rng.choice(r, size=shots, replace=False)) for r in rows]
