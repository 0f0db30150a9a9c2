"""Coverage-guided fuzzing (atheris / libFuzzer) of every loader of an untrusted file.

Run: ``python tests/reliability/atheris_fuzz.py -runs=20000`` (any libFuzzer flags).
The first input byte picks the loader; the rest is the file *body*. The body
is re-sealed with a valid checksum (containers) or self-hash (manifests)
before loading, so the fuzzer explores the zip / npy / JSON parsing behind the
checksum gate instead of bouncing off it. Seeds are valid files of each kind.
A finding is any exception that is not an ``EdgeCVMError``: atheris prints
the input and exits non-zero.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np

    from edgecvm.device.state import StateIdentity, load_state
    from edgecvm.errors import EdgeCVMError
    from edgecvm.formats.anchors import load_anchors
    from edgecvm.formats.bundle import MANIFEST, _self_hash, load_bundle
    from edgecvm.formats.head_file import load_head
    from edgecvm.formats.integrity import sha256_bytes

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from faults import seal_bundle  # noqa: E402
from synthetic_data import anchor_set, head_params  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="edgecvm-atheris-"))
DIGEST_LEN = 64
IDENTITY = StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64)


def _reseal_container(body: bytes) -> bytes:
    return body + sha256_bytes(body).encode()


def _anchors(path: Path) -> None:
    load_anchors(path)


def _head(path: Path) -> None:
    load_head(path)


def _state(path: Path) -> None:
    folder = path.parent / "state_dir"
    folder.mkdir(exist_ok=True)
    path.replace(folder / "state.npz")
    load_state(folder, head_params(feature_dim=8, concept_dim=4), anchor_set(dim=4), IDENTITY)


TARGETS = [("anchors.npz", _anchors), ("head.npz", _head), ("state.npz", _state)]


def _manifest(body: bytes) -> None:
    folder = WORK / "bundle"
    if not (folder / "backbone.onnx").exists():
        folder.mkdir(exist_ok=True)
        (folder / "backbone.onnx").write_bytes(b"onnx")
        (folder / "a.anchors.npz").write_bytes(b"anchors")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):  # re-seal so the schema checks behind the self-hash are reached
        data["manifest_sha256"] = _self_hash(data)
        body = json.dumps(data).encode()
    (folder / MANIFEST).write_bytes(body)
    load_bundle(folder)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    choice, body = data[0] % (len(TARGETS) + 1), data[1:]
    try:
        if choice == len(TARGETS):
            _manifest(body)
            return
        name, load = TARGETS[choice]
        path = WORK / name
        path.write_bytes(_reseal_container(body))
        load(path)
    except EdgeCVMError:
        pass


def write_seeds(folder: Path) -> None:
    """Valid files of each kind, as (selector byte + body) inputs."""
    from edgecvm.device.state import save_state
    from edgecvm.formats.anchors import save_anchors
    from edgecvm.formats.head_file import save_head
    from edgecvm.learning.learner import Learner, LearnerConfig

    folder.mkdir(parents=True, exist_ok=True)
    tmp = WORK / "seeds"
    save_anchors(tmp / "a.npz", anchor_set(dim=4), dtype="int8")
    save_head(tmp / "h.npz", head_params(feature_dim=8, concept_dim=4, conse=True))
    learner = Learner(head_params(feature_dim=8, concept_dim=4), anchor_set(dim=4), LearnerConfig(replay_bytes=256))
    learner.observe_features(np.ones((1, 8), np.float32), ["cat"])
    save_state(tmp / "s", learner, IDENTITY)
    for i, path in enumerate((tmp / "a.npz", tmp / "h.npz", tmp / "s" / "state.npz")):
        (folder / f"seed{i}").write_bytes(bytes([i]) + path.read_bytes()[:-DIGEST_LEN])
    bundle = WORK / "seed_bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "backbone.onnx").write_bytes(b"onnx")
    (bundle / "a.anchors.npz").write_bytes(b"anchors")
    seal_bundle(bundle, "a.anchors.npz", feature_dim=8, concept_dim=4)
    (folder / "seed3").write_bytes(bytes([len(TARGETS)]) + (bundle / MANIFEST).read_bytes())


def main() -> None:
    corpus = WORK / "corpus"
    write_seeds(corpus)
    atheris.Setup([*sys.argv, str(corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
