"""The errors mnist_jax raises on purpose, each with the exit status the command gives it.

Every one carries a one-line message that says what failed and what to do; the command
prints it and exits with its `exit_status`. `UsageError` and its kinds (the user asked for
something impossible) exit 2, before any work; the others exit 1.
"""

from __future__ import annotations


class MnistJaxError(Exception):
    """Something mnist_jax could not do, said in one line with what to do about it."""

    exit_status = 1


class UsageError(MnistJaxError):
    """The user asked for something impossible: refused before any work, exit status 2."""

    exit_status = 2


class ConfigError(UsageError, ValueError):
    """An invalid setting, or settings that do not go together."""


class DeviceError(UsageError):
    """The devices asked for are not here (an absent platform, more devices than there are)."""


class InputError(UsageError):
    """A file or folder given to read is not what the command needs (not a run, a sweep or a
    benchmark's results, or damaged JSON)."""


class RunExistsError(UsageError):
    """The output folder already holds a run (or, to read or resume, holds none)."""


class RunLockedError(UsageError):
    """Another live process holds the run folder."""


class DataError(MnistJaxError, ValueError):
    """A data file or the prepared dataset is missing, malformed, damaged or fails its checksum."""


class StorageError(MnistJaxError, RuntimeError):
    """Writing the run folder failed (a full disk, say); what was saved before is intact."""


class CheckpointError(MnistJaxError, ValueError):
    """A checkpoint file cannot be read."""


class DistributedError(MnistJaxError, RuntimeError):
    """JAX's distributed runtime could not be set up."""
