"""One device's statistics as they travel to a fleet server and back: compact, labelled with what they fit.

Why this form: a device's own class statistics (learning/merge.py) are
counts, per-concept sums and an F x F scatter. Sent as counts, class means
and the upper triangle of the covariance (scatter / n) they take about half
the bytes (F = 1280: 3.1 MB in float32, 1.6 MB in float16); sums and
scatter themselves would overflow float16 (they grow with the number of
samples), means and covariance do not. The receiver multiplies back.

Every update names what its statistics are only valid with: the bundle and
anchor hashes (device/state.StateIdentity), the feature size and the head
method. ``decode`` refuses anything malformed with a ``BadInputError`` naming
the source; ``FleetTotal`` (total.py) also checks the statistics themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.learning.merge import NamedStatistics

DTYPES = ("float32", "float16")  # what a device may send its means and covariance in
HEAD_METHOD = "lda"  # the only head whose statistics merge (learning/fleet.py)
_ARRAYS = ("counts", "means", "covariance", "fourth")


@dataclass(frozen=True)
class Identity:
    """What statistics are only valid with: two devices' updates add up only when these are equal."""

    bundle_sha256: str
    anchors_sha256: str
    feature_dim: int
    head_method: str = HEAD_METHOD

    def as_config(self) -> dict[str, str | int]:
        return {"bundle-sha256": self.bundle_sha256, "anchors-sha256": self.anchors_sha256,
                "feature-dim": self.feature_dim, "head-method": self.head_method}

    @classmethod
    def from_config(cls, config: Mapping[str, object], source: str) -> Identity:
        try:
            bundle, anchors = config["bundle-sha256"], config["anchors-sha256"]
            dim, method = config["feature-dim"], config["head-method"]
        except KeyError as exc:
            raise BadInputError(f"{source}: the update does not say its {exc.args[0]}") from None
        if not (isinstance(bundle, str) and isinstance(anchors, str) and isinstance(method, str)
                and isinstance(dim, int) and not isinstance(dim, bool) and dim > 0):
            raise BadInputError(f"{source}: the update's identity is malformed")
        return cls(bundle, anchors, dim, method)


@dataclass(frozen=True)
class Update:
    identity: Identity
    statistics: NamedStatistics


def encode(update: Update, dtype: str = "float32") -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """``update`` as arrays (compact, module docstring) and plain config values (names, identity, dtype)."""
    if dtype not in DTYPES:
        raise BadInputError(f"an update is sent in one of {', '.join(DTYPES)}, not {dtype!r}")
    stats = update.statistics
    n = max(stats.n, 1)
    upper = np.triu_indices(stats.feature_dim)
    arrays = {"counts": stats.counts.astype(np.int64),
              "means": (stats.sums / np.maximum(stats.counts, 1)[:, None]).astype(dtype),
              "covariance": (stats.scatter[upper] / n).astype(dtype),
              "fourth": np.array([stats.fourth], np.float64)}
    config = {**update.identity.as_config(), "concepts": list(stats.concepts), "dtype": dtype}
    return arrays, config


def decode(arrays: Mapping[str, np.ndarray], config: Mapping[str, object], source: str) -> Update:
    """The update ``encode`` made, in float64; ``BadInputError`` naming ``source`` if it is not one."""
    identity = Identity.from_config(config, source)
    missing = [k for k in _ARRAYS if k not in arrays]
    concepts = config.get("concepts", [])
    if missing or not isinstance(concepts, list) or config.get("dtype") not in DTYPES:
        raise BadInputError(f"{source}: the update is malformed (missing {', '.join(missing) or 'its concept names'})")
    f, k = identity.feature_dim, len(concepts)
    counts, means, covariance, fourth = (np.asarray(arrays[name]) for name in _ARRAYS)
    if (counts.shape != (k,) or counts.dtype.kind not in "iu" or means.shape != (k, f)
            or covariance.shape != (f * (f + 1) // 2,) or fourth.shape != (1,)):
        raise BadInputError(f"{source}: the update's arrays have shapes {counts.shape}, {means.shape}, "
                            f"{covariance.shape} for {k} concepts of {f} features")
    n = max(int(counts.sum()), 1)
    scatter = np.zeros((f, f))
    scatter[np.triu_indices(f)] = covariance.astype(np.float64) * n
    scatter += np.triu(scatter, 1).T
    stats = NamedStatistics(tuple(str(c) for c in concepts), counts.astype(np.int64),
                            means.astype(np.float64) * counts[:, None], scatter, float(fourth[0]))
    return Update(identity, stats)


def digest(arrays: Mapping[str, np.ndarray], config: Mapping[str, object]) -> str:
    """A fingerprint of an encoded update: a device adopts a fleet total only if it sent that very update."""
    h = hashlib.sha256("\n".join(map(str, config.get("concepts", []))).encode())
    for name in _ARRAYS:
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def upload_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    return sum(np.asarray(a).nbytes for a in arrays.values())
