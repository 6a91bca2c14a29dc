"""One process of a multi-process test run: joins the runtime, trains through the library
with the run folder OUT/run<process id>, and saves its parameters as OUT/params<id>.npz."""

import argparse
import os

import jax
import numpy as np

from mnist_jax import Config, train
from mnist_jax.distributed import initialize_distributed
from mnist_jax.rundir import params_to_arrays

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
    initialize_distributed(args.coordinator, args.num_processes, args.process_id, timeout_seconds=60)
config = Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=2, eval_batch_size=62,
                batches_per_chunk=4, pipeline=args.pipeline, model=args.model, data_dir=args.data_dir)
result = train(config, os.path.join(args.out, f"run{jax.process_index()}"))
np.savez(os.path.join(args.out, f"params{jax.process_index()}.npz"), **params_to_arrays(result.params),
         accuracies=np.array([(m.train_accuracy, m.test_accuracy) for m in result.history]))
