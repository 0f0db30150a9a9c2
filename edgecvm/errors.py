"""The project's own exception types, each carrying the process exit code.

The CLI turns any of these into a one-line message and that exit code, so
users never see a traceback for bad input. Library code raises them with a
message that names the file (or frame) and the fix.
"""

from __future__ import annotations


class EdgeCVMError(Exception):
    """Base class: a problem the user can fix. Exit code 2 (bad input/config)."""

    exit_code = 2


class BadInputError(EdgeCVMError):
    """Missing, malformed or inconsistent input: files, concepts, options."""


class IntegrityError(BadInputError):
    """A file is truncated, tampered with or fails its checksum."""


class OfflineModelError(BadInputError):
    """A model that is not available locally and would need a download."""


class BudgetExceededError(EdgeCVMError):
    """The memory plan does not fit the device profile's budget."""

    exit_code = 3


class StreamLostError(EdgeCVMError):
    """A live source (camera) went away and did not come back in time."""

    exit_code = 4


class InterruptedAfterCheckpoint(EdgeCVMError):
    """SIGINT/SIGTERM arrived; state was checkpointed cleanly before exit."""

    exit_code = 130
