"""Programs the tests run in subprocesses: each `python -m tests.workers.NAME ARGS`, bounded by the
caller's timeout."""
