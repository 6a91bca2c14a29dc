"""Run in a subprocess with 4 simulated CPU devices: a seed sweep and a grid over a traced setting,
each on 1 device and spread over the devices, saved for the test to compare.

usage: python -m tests.workers.sweep_devices DATA_DIR OUT

Writes OUT/CASE-DEVICES.npz (CASE: sweep or grid; DEVICES: the config's, or `all` for unset),
holding per result (cell) `i`: `i/histories`, `i/leaf-j` (its parameters, then its model
state) and `i/spread` (the environment's num_devices, models_per_device, trained_with).
"""

import os
import sys

import jax
import numpy as np

from mnist_jax.sweep import grid, sweep
from tests.helpers import tiny

data_dir, out = sys.argv[1:3]
config = tiny(data_dir)
cases = {
    # 7 models: 2 a device on 4 devices, one place spare
    "sweep": (lambda c: [sweep(c, list(range(7)))], 4),
    # 2 cells x 2 seeds in one program, the learning rate traced; devices unset: all of them
    "grid": (lambda c: grid(c, {"learning_rate": [0.001, 0.003]}, [5, 6]), None),
}
for name, (run, many) in cases.items():
    for devices in (1, many):
        arrays = {}
        for i, result in enumerate(run(config.replace(devices=devices))):
            arrays[f"{i}/histories"] = result.histories
            leaves = jax.tree.leaves((result.params, result.model_state))
            arrays.update({f"{i}/leaf-{j}": leaf for j, leaf in enumerate(leaves)})
            arrays[f"{i}/spread"] = np.array(
                [result.environment["num_devices"], result.models_per_device, result.trained_with]
            )
        np.savez(os.path.join(out, f"{name}-{devices or 'all'}.npz"), **arrays)
