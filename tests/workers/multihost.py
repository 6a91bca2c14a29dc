"""One process of a multi-process test run: joins the runtime, trains the tiny run through the
library with the run folder OUT/run<process id>, and saves its parameters as OUT/params<id>.npz.

usage: python -m tests.workers.multihost DATA_DIR OUT PIPELINE [MODEL]
       [--coordinator ... --num-processes ... --process-id ...]
"""

import argparse
import os

import jax
import numpy as np

from mnist_jax import train
from mnist_jax.runs.rundir import params_to_arrays
from mnist_jax.runtime.distributed import initialize_distributed
from tests.helpers import tiny

parser = argparse.ArgumentParser()
parser.add_argument("data_dir")
parser.add_argument("out")
parser.add_argument("pipeline")
parser.add_argument("model", nargs="?", default="mlp")
parser.add_argument("--coordinator")
parser.add_argument("--num-processes", type=int)
parser.add_argument("--process-id", type=int)
args = parser.parse_args()

if args.coordinator:
    initialize_distributed(
        args.coordinator, args.num_processes, args.process_id, timeout_seconds=60
    )
config = tiny(args.data_dir, pipeline=args.pipeline, model=args.model)
result = train(config, os.path.join(args.out, f"run{jax.process_index()}"))
np.savez(
    os.path.join(args.out, f"params{jax.process_index()}.npz"),
    **params_to_arrays(result.params),
    accuracies=np.array([(m.train_accuracy, m.test_accuracy) for m in result.history]),
)
