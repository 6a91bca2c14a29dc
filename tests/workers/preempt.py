"""One process of a multi-process `mnist-jax train` (its arguments are the command's flags).
Process $STOP_PROCESS, if set, sends itself SIGTERM once 8 batches of epoch 2 are done: a
preemption that reaches one host only.

usage: python -m tests.workers.preempt FLAGS ...
"""

import os
import signal
import sys

import jax

from mnist_jax import cli
from mnist_jax.reporters import ConsoleReporter, Reporter


def preempting(on_batch):
    def hook(self, epoch, batches_done):
        on_batch(self, epoch, batches_done)
        if (
            str(jax.process_index()) == os.environ.get("STOP_PROCESS")
            and epoch == 2
            and batches_done >= 8
            and not getattr(self, "sent", False)
        ):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


Reporter.on_batch = preempting(Reporter.on_batch)
ConsoleReporter.on_batch = preempting(ConsoleReporter.on_batch)
sys.exit(cli.main(["train", *sys.argv[1:]]))
