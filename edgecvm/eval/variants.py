"""Head methods only the evaluation runs: research variants of "lda" that docs/results.md still reports.

Why apart from ``head_methods.HEAD_METHODS``: the device, its profiles, its
state files and ``edgecvm learn --head-method`` offer the product methods
only, while ``edgecvm eval --methods cvm:NAME`` must still reproduce the
comparison tables. Variants that measured worse or no better than "lda"
(calibrating on every sample, float64 statistics, SLDA's fixed shrinkage,
SGD with momentum) are gone rather than kept here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from edgecvm.errors import BadInputError
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.analytic_head import AnalyticHead
from edgecvm.learning.head_methods import HEAD_METHODS, HeadMethod

# name -> factory, as in HEAD_METHODS; figures for each in docs/results.md
VARIANTS: dict[str, Callable[[HeadParams, int], HeadMethod]] = {
    # the discriminant alone, without the ConSE blend: what the blend adds
    "lda-noconse": lambda head, replay_capacity: AnalyticHead("lda-noconse", head, use_conse=False),
    # the blend calibrated test-then-train on the new samples even with replay (what "lda" does without replay)
    "lda-prequential": lambda head, replay_capacity: AnalyticHead("lda-prequential", head, calibration_pool=0),
}


def head_method_names() -> list[str]:
    """Every name ``cvm:NAME`` accepts: the product methods first, then the variants."""
    return [*HEAD_METHODS, *VARIANTS]


def is_variant(name: str) -> bool:
    return name in VARIANTS and name not in HEAD_METHODS


def check_head_method(name: str) -> None:
    """``BadInputError`` naming the closest valid names when ``name`` is neither a product method nor a variant."""
    names = head_method_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BadInputError(f"unknown head method {name!r}; {hint}available: {', '.join(names)}")


def make_variant(name: str, head: HeadParams, replay_capacity: int) -> HeadMethod:
    """A fresh method called ``name``, product or variant (``check_head_method``'s error otherwise), for a learner
    with a replay buffer of ``replay_capacity`` features."""
    check_head_method(name)
    return (VARIANTS.get(name) or HEAD_METHODS[name])(head, replay_capacity)
