"""The ServerApp that Flower starts for `edgecvm fleet round` (the app's pyproject names it, fleet/launch.py).

It runs the fleet's rounds (edgecvm/fleet/server_app.py) and prints each
round's result as one line of its output, ``ROUND_RESULT_PREFIX`` and the
result as JSON. Why a line of output and not a file: Flower relays the
ServerApp's output to ``flwr run --stream``, so ``fleet round`` reads the
result wherever it runs, while a file would stay on the SuperLink's machine.
Imported only by Flower, like the ServerApp itself.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from edgecvm.fleet.launch import ROUND_RESULT_PREFIX
from edgecvm.fleet.server_app import RoundResult, make_server_app


def print_result(result: RoundResult) -> None:
    print(ROUND_RESULT_PREFIX + json.dumps(asdict(result)), file=sys.stderr, flush=True)


app = make_server_app(print_result)
