"""edgecvm: Continual Visual Mapping on small devices.

A frozen ONNX backbone turns frames into features; a small numpy projection
head maps features into a fixed concept space built offline by a language
model; prediction is the nearest concept anchor by cosine similarity.

The Python API::

    import edgecvm

    with edgecvm.open_device("bundle", profile="host", state="state") as device:
        device.teach("photos/goldfish/1.jpg", "goldfish")
        prediction = device.predict("photos/goldfish/2.jpg")
        print(prediction.concept, prediction.score, prediction.top_k)

The names below are imported on first use, so ``import edgecvm`` (and the
``edgecvm`` command's ``--help``) stay instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "open_device": "edgecvm.device.device",
    "Device": "edgecvm.device.device",
    "Answer": "edgecvm.device.device",
    "LearnLoop": "edgecvm.device.learn_loop",
    "open_stream": "edgecvm.device.streams",
    "merge_states": "edgecvm.device.state_merge",
    "describe_state": "edgecvm.device.state_summary",
    "Prediction": "edgecvm.learning.learner",
    "UpdateResult": "edgecvm.learning.learner",
    "EdgeCVMError": "edgecvm.errors",
    "BadInputError": "edgecvm.errors",
    "IntegrityError": "edgecvm.errors",
    "BudgetExceededError": "edgecvm.errors",
    "StreamLostError": "edgecvm.errors",
}
__all__ = [  # the names of _API, spelled out for tools that read them statically
    "__version__", "open_device", "Device", "Answer", "LearnLoop", "open_stream", "merge_states", "describe_state",
    "Prediction", "UpdateResult", "EdgeCVMError", "BadInputError", "IntegrityError", "BudgetExceededError",
    "StreamLostError",
]

if TYPE_CHECKING:
    from edgecvm.device.device import Answer, Device, open_device
    from edgecvm.device.learn_loop import LearnLoop
    from edgecvm.device.state_merge import merge_states
    from edgecvm.device.state_summary import describe_state
    from edgecvm.device.streams import open_stream
    from edgecvm.errors import (
        BadInputError,
        BudgetExceededError,
        EdgeCVMError,
        IntegrityError,
        StreamLostError,
    )
    from edgecvm.learning.learner import Prediction, UpdateResult


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecvm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
