"""Which open-set score: candidate "is this a taught concept?" scores of the device's head, compared by AUROC.

    python tools/open_set_scores.py --bundle B --data ZIP [--seed 0] [--holdout val]

Teaches the device's ``Learner`` (head ``lda``, profile ``host``) half of the
classes (a seeded choice, one pass, shuffled), then scores every held-out
image with each candidate and prints AUROC (known against unknown) and the FPR
at 95 % TPR. Candidates: the maximum posterior, maximum logit and energy of the
blended logits; the discriminant alone; the cosine of the embedding to the
nearest taught anchor; Mahalanobis distance to the nearest class mean under
the head's shrunk covariance, and relative to the mean of the class means;
ConSE agreement (best taught minus best untaught concept by the ConSE
embedding); k-NN cosine to the replay buffer; calibrated stacking (energy
minus ``a`` x gain x the best untaught ConSE logit) for several ``a``.
Features come from the evaluation's cache (``edgecvm eval`` fills it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgecvm import resources
from edgecvm.device.profiles import learner_config, load_profile
from edgecvm.eval.feature_cache import list_dataset, load_features
from edgecvm.eval.open_set import auroc, fpr_at_tpr
from edgecvm.eval.scenarios import split_table
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.learner import Learner


def _energy(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", choices=("val", "dev"), default="val")
    args = parser.parse_args()
    bundle, profile = load_bundle(args.bundle), load_profile("host")
    table = load_features(bundle, profile, args.data, resources.user_cache_dir(), list_dataset(args.data))
    train, held_out = split_table(table, args.holdout)
    head, anchors = load_head_and_anchors(bundle)
    rng = np.random.default_rng(args.seed)
    n = len(table.concepts)
    known = rng.permutation(n)[: n // 2]
    learner = Learner(head, anchors, learner_config(profile, unknown=False))
    for row in rng.permutation(np.flatnonzero(np.isin(train.labels, known))):
        learner.observe_features(train.features[row: row + 1], [table.concepts[train.labels[row]]])
    x, is_known = held_out.features, np.isin(held_out.labels, known)
    method = learner.method
    evidence = method.evidence(x)
    logits = evidence.known_logits.astype(np.float64)
    untaught = np.ones(len(anchors), dtype=bool)
    untaught[anchors.indices_of(learner.known)] = False
    zero_shot = evidence.zero_shot @ anchors.vectors.T
    best_untaught = zero_shot[:, untaught].max(axis=1)
    discriminant = method._solved.discriminant(x).astype(np.float64)
    s_inv_x, _ = method._solve_covariance(x.T.astype(np.float32))
    x_s_x = np.einsum("fn,nf->n", s_inv_x, x).astype(np.float64)
    means = method.stats.sums / method.stats.counts[:, None]
    centre = means.mean(axis=0)
    s_inv_c = method._solve_covariance(centre[:, None].astype(np.float32))[0][:, 0]
    replay = learner.replay.features[: learner.replay.size].astype(np.float32)
    replay /= np.linalg.norm(replay, axis=1, keepdims=True)
    cosine_to_replay = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ replay.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    candidates = {
        "max posterior": (p / p.sum(axis=1, keepdims=True)).max(axis=1),
        "max logit": logits.max(axis=1),
        "energy": _energy(logits),
        "discriminant alone, max": discriminant.max(axis=1),
        "cosine to the nearest taught anchor": (method.embed(x) @ learner.known_anchors.T).max(axis=1),
        "Mahalanobis, nearest class": 2.0 * discriminant.max(axis=1) - x_s_x,
        "relative Mahalanobis (mean of class means)": discriminant.max(axis=1) - (x @ s_inv_c - 0.5 * s_inv_c @ centre),
        "ConSE agreement": zero_shot[:, ~untaught].max(axis=1) - best_untaught,
        "k-NN cosine to replay, k = 1": cosine_to_replay.max(axis=1),
        "k-NN cosine to replay, k = 10": np.sort(cosine_to_replay, axis=1)[:, -10:].mean(axis=1),
    }
    gain = evidence.gain
    for a in (1, 2, 4, 8, 16, 32):
        candidates[f"energy - {a} x gain x best untaught ConSE"] = _energy(logits) - a * gain * best_untaught
    answers = np.array(learner.known)[logits.argmax(axis=1)]
    closed = np.mean(answers[is_known] == np.array(table.concepts)[held_out.labels[is_known]])
    print(f"{int(is_known.sum())} known / {int((~is_known).sum())} unknown {args.holdout} images, "
          f"{len(known)} known classes, seed {args.seed}; ConSE gain {gain:.3f}; closed-set accuracy {closed:.4f}")
    print("| score | AUROC | FPR at 95 % TPR |\n|---|---:|---:|")
    for name, score in candidates.items():
        print(f"| {name} | {auroc(score[is_known], score[~is_known]):.3f} | "
              f"{100 * fpr_at_tpr(score[is_known], score[~is_known], 0.95):.1f} |")


if __name__ == "__main__":
    main()
