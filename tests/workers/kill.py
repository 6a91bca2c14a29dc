"""Trains (or with RESUME=1 resumes) the tiny run in OUT and kills itself with SIGKILL once
KILL_BATCH batches (default: any) of epoch KILL_EPOCH are done.

usage: python -m tests.workers.kill DATA_DIR OUT KILL_EPOCH PIPELINE
       [KILL_BATCH [NUM_EPOCHS [RESUME [MODEL]]]]
"""

import os
import signal
import sys

from mnist_jax import train
from mnist_jax.reporters import Reporter
from tests.helpers import tiny, use_the_tests_compilation_cache

data_dir, out, kill_epoch, pipeline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
kill_batch, num_epochs, resume = (
    int(a) for a in (sys.argv[5:8] + ["1", "4", "0"][len(sys.argv[5:8]) :])
)
model = sys.argv[8] if len(sys.argv) > 8 else "mlp"

use_the_tests_compilation_cache()  # the test waits while this process compiles


class KillAt(Reporter):
    def on_batch(self, epoch, batches_done):
        if epoch == kill_epoch and batches_done >= kill_batch:
            os.kill(os.getpid(), signal.SIGKILL)


config = tiny(data_dir, num_epochs=num_epochs, pipeline=pipeline, model=model)
train(config, out, resume=bool(resume), reporter=KillAt())
