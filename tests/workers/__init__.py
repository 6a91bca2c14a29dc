"""Programs the tests run in subprocesses: each `python -m tests.workers.NAME ARGS`, in the
environment of `tests.helpers.child_env` (pinned to the platform of the runs they are compared
with), bounded by the caller's timeout."""
