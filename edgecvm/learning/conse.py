"""ConSE zero-shot embedding (Norouzi et al. 2014): classifier probabilities → a point in concept space.

The frozen ImageNet classifier scores 1,000 classes; the top-T probabilities,
renormalised, weight the anchors of those classes. The result lies in the
same concept space as every anchor, so an unseen concept ("tabby cat" when
the classifier knows "tiger cat" and "Egyptian cat") can be named before the
device has seen a single labelled example.
"""

from __future__ import annotations

import numpy as np

from edgecvm.formats.head_file import ConseBranch


def conse_weights(features: np.ndarray, branch: ConseBranch) -> tuple[np.ndarray, np.ndarray]:
    """Top-T class indices (n, T) and their renormalised softmax weights (n, T)."""
    logits = features @ branch.fc_w
    logits += branch.fc_b  # in place, and no negated copy below: (n, 1000) arrays are the memory here
    t = min(branch.top_t, logits.shape[1])
    top = np.argpartition(logits, logits.shape[1] - t, axis=1)[:, -t:]
    top_logits = np.take_along_axis(logits, top, axis=1)
    # Softmax over all classes, restricted to the top T and renormalised = softmax over the top T.
    w = np.exp(top_logits - top_logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return top, w.astype(np.float32)


def conse_embed(features: np.ndarray, branch: ConseBranch) -> np.ndarray:
    """(n, D) probability-weighted mean of the anchors of each feature's top-T ImageNet classes."""
    top, w = conse_weights(features, branch)
    return np.einsum("nt,ntd->nd", w, branch.anchors[top]).astype(np.float32)


def build_conse_branch(fc_w: np.ndarray, fc_b: np.ndarray, class_anchors: np.ndarray, top_t: int = 10) -> ConseBranch:
    """Branch from an (n_classes, F) torch-layout classifier and (n_classes, D) anchors in classifier order."""
    return ConseBranch(fc_w=np.ascontiguousarray(fc_w.T, dtype=np.float32), fc_b=fc_b.astype(np.float32),
                       anchors=class_anchors.astype(np.float32), top_t=top_t, weight=1.0)
