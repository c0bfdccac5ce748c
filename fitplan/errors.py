"""One error root for everything a user can get wrong.

Each message is one line a user can act on: the bad value, where it came from, what to do.
The CLI catches `FitplanError` once at the top and exits 2; "nothing fits" is a result, not an error.
"""
from __future__ import annotations


class FitplanError(Exception):
    """Root of every user-facing fitplan error."""


class BadValueError(FitplanError, ValueError):
    """A value given by the user (size, count, name) cannot be used."""


class ModelNotFoundError(FitplanError):
    """The MODEL argument names no file, folder, catalog entry or reachable hub repository."""


class ModelFileError(FitplanError):
    """A model file or config exists but is corrupt, truncated, hostile or inconsistent."""


class ProfileError(FitplanError):
    """A hardware profile is unknown, missing or malformed."""


class HubError(FitplanError):
    """The hub could not be reached or answered something unusable."""


class RuntimeMissingError(FitplanError):
    """The runtime a plan needs is not installed, or cannot run on this machine."""


class RunFailedError(FitplanError):
    """A real run (verify, a probe) crashed, timed out or reported an error."""
