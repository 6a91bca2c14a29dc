"""Trains the tiny run of `tests.custom_models:slow_cnn` into OUT with the CLI's own code path
and sends itself SIGTERM DELAY seconds after the first compiled call of epoch EPOCH that ends
with AFTER or more of its batches done (EPOCH 0: after the run starts, as epoch 0's evaluation
begins): a preemption that arrives while a call runs. It prints
`sent SIGTERM at <time.time()>` to stderr. Further arguments are passed on as flags.

usage: python -m tests.workers.stop_in_a_call DATA_DIR OUT PIPELINE EPOCH AFTER DELAY [FLAGS ...]
"""

import os
import signal
import sys
import threading
import time

from mnist_jax import cli
from mnist_jax.reporters import ConsoleReporter
from tests.helpers import TINY_FLAGS

data_dir, out, pipeline = sys.argv[1:4]
epoch_to_stop, after, delay = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
original_start, original_batch = ConsoleReporter.on_start, ConsoleReporter.on_batch


def send() -> None:
    print(f"sent SIGTERM at {time.time()!r}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def start_the_timer(reporter) -> None:
    if not getattr(reporter, "timer", None):
        reporter.timer = threading.Timer(delay, send)
        reporter.timer.start()


def on_start(self, *args, **kwargs):
    original_start(self, *args, **kwargs)
    if epoch_to_stop == 0:
        start_the_timer(self)


def on_batch(self, epoch, batches_done):
    original_batch(self, epoch, batches_done)
    if epoch == epoch_to_stop and batches_done >= after:
        start_the_timer(self)


ConsoleReporter.on_start, ConsoleReporter.on_batch = on_start, on_batch
sys.exit(
    cli.main(
        [
            "train",
            *TINY_FLAGS,
            "--model",
            "tests.custom_models:slow_cnn",  # tests/test_stopping.py's SLOW_MODEL
            "--pipeline",
            pipeline,
            "--data-dir",
            data_dir,
            "--out",
            out,
            *sys.argv[7:],
        ]
    )
)
