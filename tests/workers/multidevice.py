"""Run in a subprocess with 4 simulated CPU devices: trains each setting on 1 and on 4
devices and prints, as JSON, how far apart the results are.

usage: python -m tests.workers.multidevice DATA_DIR [MODEL]
"""

import json
import sys

import jax
import numpy as np

from mnist_jax import train
from tests.helpers import tiny

data_dir, model = sys.argv[1], (sys.argv[2:] or ["mlp"])[0]
report = {"device_count": jax.device_count()}
for pipeline in ("device", "stream"):
    for batch_size in (32, 30):  # 30 rows do not split over 4 devices: padded to 32, masked
        config = tiny(data_dir, batch_size=batch_size, pipeline=pipeline, model=model)
        one, four = (train(config.replace(devices=n)) for n in (1, 4))
        report[f"{pipeline}/{batch_size}"] = {
            "num_devices": [one.num_devices, four.num_devices],
            # The parameters and, for a model with state, its state (batch statistics over the
            # global batch, whatever the device count).
            "max_param_diff": max(
                float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(
                    jax.tree.leaves((one.params, one.model_state)),
                    jax.tree.leaves((four.params, four.model_state)),
                    strict=True,
                )
            ),
            "accuracies": [
                [(m.train_accuracy, m.test_accuracy) for m in r.history] for r in (one, four)
            ],
            "replicated": all(
                a.sharding.is_fully_replicated for a in jax.tree.leaves(four.params)
            ),
        }
print(json.dumps(report))
