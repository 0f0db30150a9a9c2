"""How much to weigh the zero-shot evidence in the open-set score: a sweep over a 10-task class-incremental run.

    python tools/open_set_weights.py --bundle B --data ZIP [--seed 0] [--holdout dev] [--calibration-pool N]

The device's ``Learner`` (head ``lda``, profile ``host``) learns the classes in
10 tasks (the ``class-incremental`` scenario of ``edgecvm eval``). After every
task each held-out image and each of the head's replayed samples (scored
leave-one-out, as the device calibrates) get the score of
learning/open_set.py with the weight ``w`` in place of ``ZERO_SHOT_WEIGHT``
and the log-sum-exp at temperature ``T``:

    T * logsumexp_k(z_k / T) - w * gain * max_u conse(f) . a_u

and the threshold is set for 95 % TPR on the replayed samples (the head's
calibration pool: the host profile's, or ``--calibration-pool N``). Printed per
(T, w): mean H over tasks 1-9 (answers over every concept: the taught concept
the head puts first when accepted, the zero-shot branch's untaught concept when
not), the smallest U after a task over U before learning, AUROC taught
against untaught after task 5 (100 of the 200 classes taught) and its mean
over tasks 1-9, and the share of the taught classes' images accepted after
task 5 and its range over tasks 1-9 (how well the threshold holds the 95 %). One run of the learner serves every (T, w). Features come from the
evaluation's cache (``edgecvm eval`` fills it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgecvm import resources
from edgecvm.device.profiles import learner_config, load_profile
from edgecvm.eval.feature_cache import list_dataset, load_features
from edgecvm.eval.gzsl import answers_over_vocabulary, harmonic_mean, seen_mask
from edgecvm.eval.open_set import auroc
from edgecvm.eval.scenarios import build_scenario
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.analytic_head import AnalyticHead
from edgecvm.learning.learner import Learner
from edgecvm.learning.open_set import Evidence, calibrate_threshold

TEMPERATURES = (0.5, 1.0, 2.0)
WEIGHTS = (2, 3, 4, 5, 6, 8, 10, 12, 16)
TARGET_TPR = 0.95


def _energy(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    top = z.max(axis=1)
    return temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def _best_untaught(evidence: Evidence, vectors: np.ndarray, taught: np.ndarray) -> np.ndarray:
    sims = evidence.zero_shot @ vectors.T
    sims[:, taught] = -np.inf
    return evidence.gain * sims.max(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", choices=("val", "dev"), default="dev")
    parser.add_argument("--calibration-pool", type=int, help="replayed samples the threshold is set on "
                        "(default: what the lda head pools for the host profile's replay buffer)")
    args = parser.parse_args()
    bundle, profile = load_bundle(args.bundle), load_profile("host")
    table = load_features(bundle, profile, args.data, resources.user_cache_dir(), list_dataset(args.data))
    scenario = build_scenario(table, "class-incremental", 10, args.seed, holdout=args.holdout)
    head, anchors = load_head_and_anchors(bundle)
    vectors = anchors.vectors.astype(np.float32)
    truth = np.array([c.casefold() for c in scenario.concepts])[scenario.test.labels]
    names = np.array([n.casefold() for n in anchors.names])
    before_right = answers_over_vocabulary(Learner(head, anchors, learner_config(profile)), scenario)
    config = learner_config(profile)
    method = AnalyticHead("lda", head, calibration_pool=args.calibration_pool) if args.calibration_pool else None
    learner = Learner(head, anchors, config, method=method)
    per_task = []  # (taught mask, known right, zero-shot right, U before, held-out and calibration (energy, untaught))
    for task in scenario.tasks[:-1]:  # after the last task nothing is untaught
        order = task.train.order
        for row in order:
            learner.observe_features(task.train.features[row: row + 1], [scenario.concepts[task.train.labels[row]]])
        method = learner.method
        evidence, calibration = method.evidence(scenario.test.features), method.calibration_evidence()
        taught = anchors.indices_of(learner.known)
        untaught = _best_untaught(evidence, vectors, taught)
        sims = evidence.zero_shot @ vectors.T
        sims[:, taught] = -np.inf
        seen = seen_mask(scenario, task.index)
        known_right = np.array([n.casefold() for n in learner.known])[evidence.known_logits.argmax(axis=1)] == truth
        per_task.append((seen, known_right, names[sims.argmax(axis=1)] == truth, before_right[~seen].mean(),
                         evidence.known_logits, untaught, calibration.known_logits,
                         _best_untaught(calibration, vectors, taught)))
    half = len(per_task) // 2
    print(f"{args.holdout} images, {len(scenario.concepts)} classes in 10 tasks, seed {args.seed}; "
          f"threshold for {TARGET_TPR:.0%} TPR on the replayed samples")
    print(f"calibration pool: {learner.method.pool.capacity} replayed samples")
    print("| T | w | mean H | min U / U before | AUROC after task 5 | mean AUROC | accepted after task 5 "
          "| accepted, tasks 1-9 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for temperature in TEMPERATURES:
        for weight in WEIGHTS:
            rows = []
            for seen, known_right, zero_shot_right, before, logits, untaught, cal_logits, cal_untaught in per_task:
                score = _energy(logits, temperature) - weight * untaught
                threshold = calibrate_threshold(_energy(cal_logits, temperature) - weight * cal_untaught, TARGET_TPR)
                accepted = score >= (-np.inf if threshold is None else threshold)
                s = float((accepted & known_right)[seen].mean())
                u = float((~accepted & zero_shot_right)[~seen].mean())
                rows.append((harmonic_mean(s, u), u / before, auroc(score[seen], score[~seen]),
                             float(accepted[seen].mean())))
            h, ratio, area, accepted_share = np.array(rows).T
            print(f"| {temperature:g} | {weight} | {h.mean():.3f} | {ratio.min():.3f} | {area[half]:.3f} | "
                  f"{area.mean():.3f} | {accepted_share[half]:.3f} | "
                  f"{accepted_share.min():.3f}-{accepted_share.max():.3f} |")


if __name__ == "__main__":
    main()
