"""The torch reference loop `edgecvm bench` compares `learn` with: what a plain PyTorch learner would cost.

Same weights (the Lite0 ImageNet state dict the bundle was exported from, via
``lite0_torch``), same preprocessing (the bundle's manifest), same head (the
bundle's ``head.npz``: trainable ``proj`` plus the frozen ConSE branch), same
loss (temperature-scaled cosine cross-entropy over the known concepts' anchors),
same optimizer (Adam, lr 1e-3) and the same replay mix (one new frame plus a
``batch_size`` minibatch from the same class-balanced ``ReplayBuffer``). The
difference is the implementation: the backbone runs in torch eager mode under
``inference_mode`` and the head step uses autograd, as a straightforward torch
learner would, with no cached ConSE part and no update overlapped with the
next frame.

The bench runs it as ``python -m edgecvm.cli.torch_ref`` in a child process
so its peak RSS is measured on its own (torch alone is ~300 MB). Needs the
export extra; the device side never imports this module.
"""

from __future__ import annotations

import time

import numpy as np

from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.streams import open_stream
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.replay import ReplayBuffer

LEARNING_RATE = 1e-3  # the device's "sgd" head method (head_methods._adam_head)


def run_reference(bundle_dir: str, stream: str, threads: int, replay_bytes: int, batch_size: int) -> dict[str, object]:
    """Learn from every frame of ``stream``; returns frames, elapsed seconds and frames/s (decode included)."""
    import torch
    from torch.nn import functional as F

    from edgecvm.offline.lite0_torch import load_pretrained

    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_dir)
    preprocess = Preprocessor.from_manifest(bundle.manifest)
    head, anchors = load_head_and_anchors(bundle)
    backbone = load_pretrained()
    params = {k: torch.tensor(v, requires_grad=True) for k, v in head.params.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=LEARNING_RATE)
    conse = head.conse
    fc_w = torch.from_numpy(conse.fc_w) if conse is not None else None
    fc_b = torch.from_numpy(conse.fc_b) if conse is not None else None
    conse_anchors = torch.from_numpy(conse.anchors) if conse is not None else None
    replay = ReplayBuffer.from_bytes(replay_bytes, head.feature_dim)
    rng = np.random.default_rng(0)
    known: dict[int, int] = {}  # anchor index -> row of the known-anchor matrix

    def embed(features: torch.Tensor) -> torch.Tensor:
        hidden = features if head.kind == "linear" else torch.relu(features @ params["w1"] + params["b1"])
        e = hidden @ params["w"] + params["b"]
        if conse is not None and conse.weight != 0.0:
            with torch.no_grad():  # frozen: no gradient flows into the ConSE branch
                top = torch.topk(features @ fc_w + fc_b, conse.top_t, dim=1)
                weights = torch.softmax(top.values, dim=1)
                frozen = conse.weight * torch.einsum("nt,ntd->nd", weights, conse_anchors[top.indices])
            e = e + frozen
        return e

    frames = 0
    started = time.monotonic()
    with open_stream(stream) as source:
        for frame in source:
            if frame.image is None:
                continue
            with torch.inference_mode():
                features = backbone.forward_features(torch.from_numpy(preprocess.batch([frame.image])))
            features = features.clone()  # out of inference mode, so autograd may use it
            anchor = anchors.index_of(frame.label or "")
            known.setdefault(anchor, len(known))
            targets = np.array([known[anchor]])
            batch = replay.sample(batch_size, rng)
            x = features
            if batch is not None:
                x = torch.cat([features, torch.from_numpy(batch.features.astype(np.float32))])
                targets = np.concatenate([targets, batch.labels])
            known_anchors = torch.from_numpy(anchors.vectors[list(known)])
            logits = head.temperature * F.normalize(embed(x), dim=1) @ known_anchors.T
            loss = F.cross_entropy(logits, torch.from_numpy(targets))
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            replay.add(features.numpy(), targets[:1])
            frames += 1
    elapsed = time.monotonic() - started
    return {"frames": frames, "elapsed_s": round(elapsed, 3),
            "frames_per_s": round(frames / elapsed, 2) if elapsed > 0 else None, "torch": torch.__version__}

