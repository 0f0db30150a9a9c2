"""Concept names the device learned that its anchor file lacks: embedded on the device, kept in the state dir.

When the bundle carries the text encoder (``export --text-encoder``), teaching
a name that is not in the anchor file ("garden gnome") embeds it with the
anchor file's templates (concept_embedding.py) and gives it a place in the
concept space; from then on it is a concept like any other. The bundle is
never edited: the new anchors go to ``<state dir>/new-concepts.anchors.npz``,
an ordinary anchor file (checksummed, written atomically, the previous one
kept as ``.prev``), written *before* any checkpoint can name the concept, so
a resumed state always finds its anchors. The learner sees the bundle's
anchors followed by these.

The encoder's session is the largest thing the device ever creates besides
the backbone's, so it exists only while names are embedded, and only when the
memory plan with it still fits the profile's budget.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecvm.device.concept_embedding import embed_names
from edgecvm.device.memory_plan import MemoryPlan, text_encoder_item
from edgecvm.device.process_tuning import release_clean_file_pages
from edgecvm.device.profiles import DeviceProfile
from edgecvm.device.text_encoder import open_text_encoder
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import AnchorSet, load_anchors, normalise_rows, save_anchors
from edgecvm.formats.bundle import TEXT_ENCODER, Bundle
from edgecvm.formats.integrity import previous_path, read_latest_or_previous

NEW_CONCEPTS_FILE = "new-concepts.anchors.npz"
DTYPE = "float16"  # as the shipped anchor files
MAX_NAME_CHARS = 100
# A damaged file of names the device embedded is not rebuilt from a concept list: the state's copy is what holds them
_UNREADABLE_FIX = ("restore the state dir from a copy; without these names the concepts the device learned under "
                  "them cannot be resumed")
log = logging.getLogger(__name__)


def new_concepts_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / NEW_CONCEPTS_FILE


def clean_name(name: object) -> str:
    """A concept name as anchor files hold it (single spaces); ``BadInputError`` for one that cannot be."""
    if not isinstance(name, str) or not name.split():
        raise BadInputError(f"a concept name must be a non-empty text, got {name!r}")
    clean = " ".join(name.split())
    if len(clean) > MAX_NAME_CHARS or not clean.isprintable():
        raise BadInputError(f"concept name {clean[:40]!r}...: at most {MAX_NAME_CHARS} printable characters")
    return clean


def load_new_concepts(state_dir: str | Path | None, base: AnchorSet | None) -> AnchorSet | None:
    """The state dir's own anchors (None when it has none), checked to extend ``base``'s concept space (``base``
    None: read without the bundle, as `edgecvm state show` does).

    A corrupt file falls back to its ``.prev`` (which lacks only the newest names) with a warning."""
    if state_dir is None:
        return None
    path = new_concepts_path(state_dir)
    if not path.exists() and not previous_path(path).exists():
        return None
    own, read, latest_error = read_latest_or_previous(path, lambda file: _load(file, base),
                                                      "files of the device's new concepts")
    if latest_error is not None:
        log.warning("%s is unusable (%s); using the previous one, %s (%d concepts)", path, latest_error, read, len(own))
    return own


def _load(path: Path, base: AnchorSet | None) -> AnchorSet:
    if not path.exists():
        raise IntegrityError(f"{path}: missing")
    own = load_anchors(path, _UNREADABLE_FIX)
    if base is None:
        return own
    same_space = own.dim == base.dim and own.model == base.model and (
        own.model_probe is None if base.model_probe is None
        else own.model_probe is not None and np.array_equal(own.model_probe, base.model_probe))
    if not same_space:
        raise BadInputError(f"{path}: these concepts were embedded for another concept space ({own.model}, "
                            f"{own.dim}-d) than the bundle's anchors ({base.model}, {base.dim}-d); use the bundle "
                            "they were learned with, or another state dir")
    clash = [name for name in own.names if name in base]
    if clash:
        raise IntegrityError(f"{path}: {', '.join(clash[:3])} also in the bundle's anchor file; use the bundle this "
                             "state was learned with, or another state dir")
    return own


def embed_new_names(bundle: Bundle, profile: DeviceProfile, plan: MemoryPlan, anchors: AnchorSet,
                    names: Sequence[str], descriptions: Sequence[str], release_pages: bool = False) -> AnchorSet:
    """The anchors of ``names`` (none of them in ``anchors``), made by the bundle's text encoder.

    Refused with the close names when the bundle has no encoder; ``BudgetExceededError`` when ``plan``
    with the encoder exceeds the profile's budget. ``release_pages``: the process is tuned
    (process_tuning.py), so the file pages the session touched are dropped after it."""
    if not bundle.has_text_encoder:
        close = anchors.close_names(names[0])
        hint = f" Close names: {', '.join(repr(c) for c in close)}." if close else ""
        raise BadInputError(
            f"unknown concept {names[0]!r}: not among the {len(anchors)} anchors, and {bundle.folder} carries no text "
            f"encoder to embed a new name on the device.{hint} Re-export the bundle with `edgecvm export "
            "--text-encoder`, or add the name offline with `edgecvm anchors extend`")
    item = text_encoder_item((bundle.folder / TEXT_ENCODER).stat().st_size)
    plan.plus(item).check(profile, f"the text encoder that embeds the new concept name {names[0]!r} needs "
                                   f"{item.nbytes / (1 << 20):.1f} MB while it runs; teach a name of the anchor "
                                   "file, or use a profile with a larger memory_budget_mb")
    with open_text_encoder(bundle, profile) as encoder:
        vectors = embed_names(names, descriptions, encoder.encode, anchors.templates,
                              encoder.config.description_weight)
    if release_pages:
        release_clean_file_pages()
    # Rounded as the file stores them, so the learner sees the same vectors now and after a restart.
    vectors = normalise_rows(vectors.astype(np.float16))
    return AnchorSet(tuple(names), vectors, anchors.model, anchors.templates, DTYPE, anchors.model_probe)


def save_new_concepts(state_dir: str | Path, own: AnchorSet) -> None:
    """Write the state dir's own anchors atomically; a write that fails refuses the names (nothing is half-added)."""
    path = new_concepts_path(state_dir)
    try:
        save_anchors(path, own, DTYPE, keep_previous=True)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot write the new concepts ({exc.strerror or exc}); they were not added. "
                            "Free space or fix the card") from None
