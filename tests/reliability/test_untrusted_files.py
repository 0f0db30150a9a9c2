"""Untrusted files: loaders never unpickle, and fuzzed input raises only EdgeCVMError.

Two layers of fuzzing. Random bytes exercise the checksum gate. Well-hashed
containers and self-hashed manifests with arbitrary or mutated content get past
that gate and exercise the parsers behind it: a file written by a buggy tool
or by an attacker carries a valid checksum too. A loader that accepts such a
file must hand back something its callers can use without crashing.
"""

from __future__ import annotations

import ast
import atexit
import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from faults import seal_bundle
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.state import (
    STATE_FORMAT,
    STATE_VERSION,
    StateIdentity,
    load_state,
    save_state,
    state_path,
)
from edgecvm.errors import EdgeCVMError
from edgecvm.formats.anchors import (
    ANCHORS_FORMAT,
    ANCHORS_VERSION,
    AnchorSet,
    load_anchors,
    normalise_rows,
    save_anchors,
)
from edgecvm.formats.bundle import MANIFEST, Manifest, _self_hash, load_bundle
from edgecvm.formats.head_file import HEAD_FORMAT, HEAD_VERSION, ConseBranch, HeadParams, load_head, save_head
from edgecvm.formats.integrity import encode_container, sha256_bytes
from edgecvm.learning.learner import Learner, LearnerConfig

PACKAGE = Path(__file__).resolve().parents[2] / "edgecvm"
# `make soak` raises the example count (EDGECVM_FUZZ_EXAMPLES) for a deeper search.
FUZZ = settings(max_examples=int(os.environ.get("EDGECVM_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORKDIR = Path(tempfile.mkdtemp(prefix="edgecvm-fuzz-"))
atexit.register(shutil.rmtree, WORKDIR, True)

json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)
dtypes = st.sampled_from(["float16", "float32", "float64", "int8", "uint8", "int64", "bool", "complex64"])
arrays = dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))


def _write(name: str, data: bytes) -> Path:
    path = WORKDIR / name
    path.write_bytes(data)
    return path


def _only_project_errors(load, path: Path):
    """Run a loader; anything but a clean result or an EdgeCVMError fails the test."""
    try:
        return load(path)
    except EdgeCVMError as exc:
        assert "\n" not in str(exc)
        return None


def _usable_anchors(anchors: AnchorSet) -> None:
    assert all(isinstance(n, str) for n in anchors.names)
    assert anchors.vectors.dtype == np.float32 and np.isfinite(anchors.vectors).all()
    for name in anchors.names[:3]:
        anchors.index_of(name)


def _usable_head(head: HeadParams) -> None:
    for value in head.params.values():
        assert value.dtype.kind == "f" and np.isfinite(value).all()
    assert np.isfinite(head.temperature) and head.temperature > 0


# --- random bytes: the checksum gate --------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_escape_as_other_errors(data):
    path = _write("random.npz", data)
    assert _only_project_errors(load_anchors, path) is None
    assert _only_project_errors(load_head, path) is None
    manifest_dir = WORKDIR / "random_bundle"
    manifest_dir.mkdir(exist_ok=True)
    (manifest_dir / MANIFEST).write_bytes(data)
    assert _only_project_errors(load_bundle, manifest_dir) is None


# --- well-hashed containers with arbitrary content: the parsers behind the gate ---------------------

def _container_parts(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Arrays and user metadata of a valid container, to mutate and re-seal."""
    with np.load(path) as npz:
        arrays = {k.removesuffix(".npy"): npz[k] for k in npz.files if k != "__meta__"}
        meta = json.loads(npz["__meta__"].tobytes())
    return arrays, {k: v for k, v in meta.items() if k not in ("format", "version")}


def _mutated(parts, arr_updates, meta_updates, drop, fmt: str, version: int, name: str) -> Path:
    """A well-hashed container: valid ``parts`` with fields replaced, added or dropped."""
    arrays, meta = {**parts[0], **arr_updates}, {**parts[1], **meta_updates}
    arrays = {k: v for k, v in arrays.items() if k not in drop}
    meta = {k: v for k, v in meta.items() if k not in drop}
    return _write(name, encode_container(fmt, version, arrays, meta))


def _valid_anchor_parts():
    path = WORKDIR / "valid.anchors.npz"
    save_anchors(path, AnchorSet(("cat", "dog", "mug"), normalise_rows(np.eye(3, 4)), "m", ("{}",), "int8"), "int8")
    return _container_parts(path)


def _valid_head_parts():
    rng = np.random.default_rng(1)
    conse = ConseBranch(fc_w=rng.normal(size=(4, 3)).astype(np.float32), fc_b=np.zeros(3, np.float32),
                        anchors=normalise_rows(rng.normal(size=(3, 2))), top_t=2)
    head = HeadParams(kind="linear", feature_dim=4, concept_dim=2,
                      params={"w": np.ones((4, 2), np.float32), "b": np.zeros(2, np.float32)}, conse=conse)
    save_head(WORKDIR / "valid_head.npz", head)
    return _container_parts(WORKDIR / "valid_head.npz")


ANCHOR_PARTS, HEAD_PARTS = _valid_anchor_parts(), _valid_head_parts()
ANCHOR_ARRAYS, ANCHOR_META = tuple(ANCHOR_PARTS[0]), tuple(ANCHOR_PARTS[1])
HEAD_ARRAYS = ("proj.w", "proj.b", "proj.w1", "proj.b1", "conse.fc_w", "conse.fc_b", "conse.anchors")
HEAD_META = tuple(HEAD_PARTS[1])


def _name_arrays(names):
    return st.lists(names, max_size=4).map(lambda n: np.frombuffer(json.dumps(n).encode(), np.uint8))


anchor_names_arrays = _name_arrays(json_values) | _name_arrays(st.text(max_size=5))


@FUZZ
@given(
    arr_updates=st.dictionaries(st.sampled_from(ANCHOR_ARRAYS), arrays | anchor_names_arrays, max_size=3),
    meta_updates=st.dictionaries(st.sampled_from(ANCHOR_META) | st.text(max_size=4), json_values, max_size=3),
    drop=st.sets(st.sampled_from(ANCHOR_ARRAYS + ANCHOR_META), max_size=2),
)
@example(arr_updates={}, meta_updates={"dtype": []}, drop=set())
@example(arr_updates={}, meta_updates={"count": "\n"}, drop=set())
@example(arr_updates={"names": np.frombuffer(b'["0", "\\r", "00"]', np.uint8)}, meta_updates={}, drop=set())
def test_fuzzed_anchor_containers(arr_updates, meta_updates, drop):
    path = _mutated(ANCHOR_PARTS, arr_updates, meta_updates, drop, ANCHORS_FORMAT, ANCHORS_VERSION, "f.anchors.npz")
    loaded = _only_project_errors(load_anchors, path)
    if loaded is not None:
        _usable_anchors(loaded)


@FUZZ
@given(
    arr_updates=st.dictionaries(st.sampled_from(HEAD_ARRAYS), arrays, max_size=3),
    meta_updates=st.dictionaries(st.sampled_from(HEAD_META) | st.text(max_size=4), json_values, max_size=3),
    drop=st.sets(st.sampled_from(HEAD_ARRAYS + HEAD_META), max_size=2),
)
@example(arr_updates={"proj.w": np.zeros((4, 2), np.int8)}, meta_updates={}, drop=set())
@example(arr_updates={"proj.b": np.full(2, np.nan, np.float32)}, meta_updates={}, drop=set())
@example(arr_updates={"conse.fc_b": np.zeros((), np.float32)}, meta_updates={}, drop=set())
@example(arr_updates={}, meta_updates={"feature_dim": float("inf")}, drop=set())
@example(arr_updates={}, meta_updates={"temperature": -1.0}, drop=set())
def test_fuzzed_head_containers(arr_updates, meta_updates, drop):
    path = _mutated(HEAD_PARTS, arr_updates, meta_updates, drop, HEAD_FORMAT, HEAD_VERSION, "fuzz_head.npz")
    loaded = _only_project_errors(load_head, path)
    if loaded is not None:
        _usable_head(loaded)


# --- learner state: the same, plus same-shape arrays with hostile values -------------------------

STATE_IDENTITY = StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64)
STATE_CONFIG = LearnerConfig(replay_bytes=8 * 8 * 2, batch_size=4)


def _small_head():
    """Small dims keep hypothesis' same-shape arrays (and its failure reports) short."""
    return head_params(feature_dim=8, concept_dim=4)


def _state_learner() -> Learner:
    return Learner(_small_head(), anchor_set(dim=4), STATE_CONFIG)


def _valid_state_parts():
    learner = _state_learner()
    clusters = Clusters(3, feature_dim=8)
    for i in range(12):
        learner.observe_features(clusters.draw(np.array([i % 3])), [CONCEPTS[i % 3]])
    folder = WORKDIR / "valid_state"
    save_state(folder, learner, STATE_IDENTITY)
    return _container_parts(state_path(folder))


STATE_PARTS = _valid_state_parts()
STATE_ARRAYS, STATE_META = tuple(STATE_PARTS[0]), tuple(STATE_PARTS[1])
hostile_floats = st.floats(allow_nan=True, allow_infinity=True, width=16)


@st.composite
def same_shape_arrays(draw, parts):
    """Replace some arrays by arrays of their own shape and dtype holding arbitrary values."""
    keys = draw(st.sets(st.sampled_from(tuple(parts[0])), max_size=2))
    out = {}
    for key in keys:
        like = parts[0][key]
        elements = hostile_floats if like.dtype.kind == "f" else None
        out[key] = draw(hnp.arrays(like.dtype, like.shape, elements=elements))
    return out


@FUZZ
@given(
    same_shape=same_shape_arrays(STATE_PARTS),
    arr_updates=st.dictionaries(st.sampled_from(STATE_ARRAYS), arrays, max_size=2),
    meta_updates=st.dictionaries(st.sampled_from(STATE_META) | st.text(max_size=4), json_values, max_size=2),
    drop=st.sets(st.sampled_from(STATE_ARRAYS + STATE_META), max_size=2),
)
# Hostile values found by this fuzzer (each once let a bad state load or crash a later step); always run.
@example(same_shape={"method.opt.m.w": np.full((8, 4), np.inf, np.float32)}, arr_updates={}, meta_updates={}, drop=set())
@example(same_shape={"method.opt.v.b": np.full(4, -1.0, np.float32)}, arr_updates={}, meta_updates={}, drop=set())
@example(same_shape={"replay.features": np.full((8, 8), np.inf, np.float16)}, arr_updates={}, meta_updates={},
         drop=set())
@example(same_shape={"method.opt.t": np.array([2**63 - 1])}, arr_updates={}, meta_updates={}, drop=set())
@example(same_shape={}, arr_updates={"method.param.b": np.full(4, 1e300)}, meta_updates={}, drop=set())
@example(same_shape={}, arr_updates={}, meta_updates={"known": [None]}, drop=set())
@example(same_shape={}, arr_updates={}, meta_updates={"bundle_sha256": "\nforged"}, drop=set())
@example(same_shape={}, arr_updates={}, meta_updates={"known": ["cat", "cat", "dog"]}, drop=set())
@example(same_shape={}, arr_updates={}, drop=set(), meta_updates={
    "counters": {"updates": 12, "frames_seen": 12, "per_concept": {"cat": "x"}}})
@example(same_shape={}, arr_updates={}, drop=set(), meta_updates={
    "counters": {"updates": -5, "frames_seen": 12, "per_concept": {}}})
def test_fuzzed_state_files(same_shape, arr_updates, meta_updates, drop):
    folder = WORKDIR / "fuzz_state"
    folder.mkdir(exist_ok=True)
    path = _mutated(STATE_PARTS, {**same_shape, **arr_updates}, meta_updates, drop, STATE_FORMAT, STATE_VERSION,
                    "fuzz_state/state.npz")
    learner = _only_project_errors(
        lambda _: load_state(folder, _small_head(), anchor_set(dim=4), STATE_IDENTITY, STATE_CONFIG), path)
    if learner is None:
        return
    # An accepted state must go on learning: a finite step is taken, and the weights stay finite.
    assert learner.counters.updates >= 0 and all(v >= 0 for v in learner.counters.per_concept.values())
    result = learner.observe_features(Clusters(3, feature_dim=8, seed=5).draw(np.array([0])), [CONCEPTS[0]])
    assert not result.skipped
    assert all(np.isfinite(v).all() for v in learner.method.state_arrays().values())
    if learner.known:
        learner.predict_features(np.ones((1, 8), np.float32))


# --- self-hashed manifests with mutated fields ---------------------------------------------------

def _valid_manifest_dict(folder: Path) -> dict[str, object]:
    folder.mkdir(exist_ok=True)
    (folder / "backbone.onnx").write_bytes(b"not parsed by load_bundle")
    (folder / "a.anchors.npz").write_bytes(b"anchor bytes")
    seal_bundle(folder, "a.anchors.npz", feature_dim=1280, concept_dim=384)
    return json.loads((folder / MANIFEST).read_text())


MANIFEST_FIELDS = tuple(f for f in Manifest.__dataclass_fields__ if f != "manifest_sha256")
number_lists = st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 3), max_size=4)


@FUZZ
@given(
    updates=st.dictionaries(st.sampled_from(MANIFEST_FIELDS) | st.text(max_size=4),
                            json_values | number_lists | st.integers(-5, 300), max_size=3),
    drop=st.sets(st.sampled_from(MANIFEST_FIELDS), max_size=2),
)
@example(updates={"mean": []}, drop=set())
@example(updates={"format": "edgecvm.formats.bundle\nv2"}, drop=set())
@example(updates={"files": {"backbone.onnx\n": "0" * 64}}, drop=set())
@example(updates={"files": {"../outside.onnx": "0" * 64}}, drop=set())
@example(updates={"std": [0.5, 0.0, 0.5]}, drop=set())
@example(updates={"mean": [0.0, 0.0, 1.7014117838986683e+38]}, drop=set())
@example(updates={"std": [0.5, 1e-40, 0.5]}, drop=set())
@example(updates={"input_size": 0}, drop=set())
def test_fuzzed_manifests(updates, drop):
    folder = WORKDIR / "fuzz_bundle"
    data = _valid_manifest_dict(folder)
    data.update(updates)
    data = {k: v for k, v in data.items() if k not in drop}
    data["manifest_sha256"] = _self_hash(data)
    (folder / MANIFEST).write_text(json.dumps(data))
    bundle = _only_project_errors(load_bundle, folder)
    if bundle is not None:
        # An accepted manifest must drive preprocessing without crashing or producing NaN/Inf.
        pixels = Preprocessor.from_manifest(bundle.manifest)(Image.new("RGB", (12, 9), (200, 10, 90)))
        assert np.isfinite(pixels).all()


# --- never unpickle -------------------------------------------------------------------------------

class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _with_raw_member(container: bytes, name: str, raw: bytes) -> bytes:
    """``container`` with member ``name`` replaced by ``raw`` bytes, re-sealed with a valid checksum.

    encode_container only writes plain arrays, so hostile members are put in by hand; the fresh
    checksum makes sure the loader's own parsing, not the checksum gate, has to refuse them.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(container)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info, src.read(info))
        dst.writestr(name, raw)
        dst.comment = b"0" * 64
    data = buf.getvalue()
    return data[:-64] + sha256_bytes(data[:-64]).encode()


def _pickled_container(fmt: str, version: int, marker: Path) -> bytes:
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    member = io.BytesIO()
    np.lib.format.write_array(member, payload, allow_pickle=True)
    data = encode_container(fmt, version, {"names": np.zeros(1, np.uint8)}, {})
    for name in ("vectors.npy", "proj.w.npy"):
        data = _with_raw_member(data, name, member.getvalue())
    return data


LOADERS = {
    "anchors": (ANCHOR_PARTS, ANCHORS_FORMAT, ANCHORS_VERSION, load_anchors),
    "head": (HEAD_PARTS, HEAD_FORMAT, HEAD_VERSION, load_head),
    "state": (STATE_PARTS, STATE_FORMAT, STATE_VERSION,
              lambda p: load_state(p.parent, _small_head(), anchor_set(dim=4), STATE_IDENTITY, STATE_CONFIG)),
}


@pytest.mark.parametrize("kind", list(LOADERS))
def test_members_that_are_not_arrays_are_refused(tmp_path, kind):
    """np.load hands back raw bytes for a zip member without the .npy magic (found by atheris)."""
    parts, fmt, version, load = LOADERS[kind]
    valid = encode_container(fmt, version, *parts)
    for name in parts[0]:
        path = tmp_path / "x" / "state.npz"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(_with_raw_member(valid, f"{name}.npy", b"not an npy member"))
        with pytest.raises(EdgeCVMError):
            load(path)


@pytest.mark.parametrize(("load", "fmt", "version"), [(load_anchors, ANCHORS_FORMAT, ANCHORS_VERSION),
                                                      (load_head, HEAD_FORMAT, HEAD_VERSION)])
def test_pickled_members_are_refused_without_running_code(tmp_path, load, fmt, version):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    path.write_bytes(_pickled_container(fmt, version, marker))
    assert pickle.loads(pickle.dumps(_Payload(tmp_path / "probe"))) is None  # the payload is live
    assert (tmp_path / "probe").exists()
    with pytest.raises(EdgeCVMError):
        load(path)
    assert not marker.exists()


UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}


def _unpickling_sites(source: str) -> list[str]:
    """Imports of pickle-like modules, ``allow_pickle=True``, and ``torch.load`` without ``weights_only=True``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"import {n}" for n in names if n.split(".")[0] in UNPICKLING_MODULES]
        elif isinstance(node, ast.Call):
            keywords = {k.arg: k.value for k in node.keywords}
            flag = keywords.get("allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"allow_pickle={ast.unparse(flag)}")
            if ast.unparse(node.func) == "torch.load":
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append("torch.load without weights_only=True")
    return found


def test_no_module_can_unpickle():
    """Static guard over the whole package: nothing reaches a pickle loader."""
    offenders = [f"{p.name}: {site}" for p in sorted(PACKAGE.rglob("*.py")) for site in _unpickling_sites(p.read_text())]
    assert not offenders, offenders


def test_the_static_guard_catches_unpickling():
    assert _unpickling_sites("import pickle\nnp.load(f, allow_pickle=True)\ntorch.load(p)\n") == [
        "import pickle", "allow_pickle=True", "torch.load without weights_only=True"]
    assert _unpickling_sites("np.load(f, allow_pickle=False)\ntorch.load(p, weights_only=True)\n") == []


def test_state_with_a_hostile_method_name_is_one_line(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    path = _mutated(STATE_PARTS, {}, {"method": "sgd\nrm -rf /"}, set(), STATE_FORMAT, STATE_VERSION,
                    "fuzz_state/state.npz")
    (folder / "state.npz").write_bytes(path.read_bytes())
    with pytest.raises(EdgeCVMError) as info:
        load_state(folder, _small_head(), anchor_set(dim=4), STATE_IDENTITY, LearnerConfig(method="sgd"))
    assert "\n" not in str(info.value)
