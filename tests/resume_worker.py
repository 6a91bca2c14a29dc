"""Trains a small run into OUT and kills itself with SIGKILL as epoch KILL_EPOCH starts."""

import os
import signal
import sys

from mnist_jax import Config, train
from mnist_jax.results import Reporter

data_dir, out, kill_epoch, pipeline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


class KillAt(Reporter):
    def on_batch(self, epoch, batches_done):
        if epoch == kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)


config = Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=4, eval_batch_size=62,
                batches_per_chunk=4, pipeline=pipeline, data_dir=data_dir)
train(config, out, reporter=KillAt())
