"""Failures of a whole import, each with the exit code the Job's podFailurePolicy keys on.

A row-level problem is never an exception: it becomes an error record. These are for a
file or an environment that stops the import as a whole (docs/loader-contract.md).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_DATA = 65  # sysexits EX_DATAERR: retrying cannot help
EXIT_SOURCE_MISSING = 66  # sysexits EX_NOINPUT
EXIT_RESOURCES = 71  # sysexits EX_OSERR: out of memory or spill space; a retry fails alike
EXIT_TEMPORARY = 75  # sysexits EX_TEMPFAIL: infrastructure, worth a retry


class ImportFailure(Exception):
    """The import as a whole failed; `reason` is a CamelCase word for the condition."""

    exit_code = EXIT_BAD_DATA
    reason = "ImportFailed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class InvalidOptions(ImportFailure):
    reason = "InvalidOptions"


class ParseError(ImportFailure):
    reason = "ParseError"


class ErrorPolicyExceeded(ImportFailure):
    reason = "ErrorPolicyExceeded"


class SourceNotFound(ImportFailure):
    exit_code = EXIT_SOURCE_MISSING
    reason = "SourceNotFound"


class SourceNotAllowed(ImportFailure):
    """The administrator's egress policy refuses the source URL (its scheme, its address
    or a redirect's): retrying cannot help."""

    reason = "SourceNotAllowed"


class SourceTooLarge(ImportFailure):
    reason = "SourceTooLarge"


class ResourcesExhausted(ImportFailure):
    """DuckDB could not stay within its memory limit (or its spill space ran out).

    Deterministic for a given file and limit, so the Job fails at once instead of
    retrying into the same wall; the message says which knob to turn.
    """

    exit_code = EXIT_RESOURCES
    reason = "OutOfMemory"


class TemporaryFailure(ImportFailure):
    exit_code = EXIT_TEMPORARY
    reason = "StoreUnavailable"


class SourceUnreachable(TemporaryFailure):
    reason = "SourceUnreachable"


class CommitConflict(TemporaryFailure):
    reason = "CommitConflict"


class PreconditionFailed(Exception):
    """A conditional write lost the race: the object changed since it was read."""
