"""Trains the tiny run (4 epochs) into OUT with the CLI's own code path and sends itself
$STOP_SIGNAL (default SIGINT) once 8 batches of epoch INT_EPOCH are done (part-way through the
epoch on the stream path, at its end on the device path, whose epoch is one call). Further
arguments are passed on as flags.

usage: python -m tests.workers.interrupt DATA_DIR OUT INT_EPOCH PIPELINE [FLAGS ...]
"""

import os
import signal
import sys

from mnist_jax import cli
from mnist_jax.reporters import ConsoleReporter
from tests.helpers import CHUNK_FLAGS, TINY_FLAGS

data_dir, out, int_epoch, pipeline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
original = ConsoleReporter.on_batch


def on_batch(self, epoch, batches_done):
    original(self, epoch, batches_done)
    if epoch == int_epoch and batches_done >= 8 and not getattr(self, "sent", False):
        self.sent = True
        os.kill(os.getpid(), signal.Signals[os.environ.get("STOP_SIGNAL", "SIGINT")])


ConsoleReporter.on_batch = on_batch
sys.exit(
    cli.main(
        [
            "train",
            *TINY_FLAGS,
            *CHUNK_FLAGS,
            "--epochs",
            "4",
            "--pipeline",
            pipeline,
            "--data-dir",
            data_dir,
            "--out",
            out,
            *sys.argv[5:],
        ]
    )
)
