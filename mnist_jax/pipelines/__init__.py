"""The data paths, behind one `Pipeline` interface: how a run's batches reach the compiled steps.

- `device`: each split in device memory; one program trains any span of an epoch.
- `stream`: tf.data chunks of batches put on the devices ahead of use; one program trains any
  span of a chunk.

Both draw each epoch's order from `data.epoch_order`, so for the same config they train on the
same batches and reach the same parameters (to float tolerance). Both run on a 1-D device
mesh: every batch is sharded across the devices, parameters and optimizer state are
replicated, and XLA adds the cross-device sums; the global batch stays `batch_size`. Both size
their compiled calls by `pacing`, so that a stop request waits seconds, not an epoch.

Glossary:
- split: a dataset split (train, validation, test); a sharding is how an array lies on devices.
- share: this process's contiguous part of a split, in tfds's stored order (`data.Share`);
  `bounds[q]:bounds[q + 1]` are process q's positions in the split.
- rows: a batch's rows, padded up to a multiple of the device count (padding is masked).
- chunk: `batches_per_chunk` batches stacked, the unit the stream transfers.
- span: the steps (or evaluation batches) one compiled call runs, `(start, stop)`.

At most one compiled call is in flight at a time: several CPU devices in one process can
deadlock in an all-reduce when many are queued, and a stop is asked between calls.
"""

from __future__ import annotations

from jax.sharding import Mesh

from mnist_jax import data
from mnist_jax.config import Config
from mnist_jax.errors import ConfigError
from mnist_jax.pipelines.device import (
    DevicePipeline,
    DeviceSplit,
    epoch_program,
    evaluation_program,
    shard_splits,
    to_device,
)
from mnist_jax.pipelines.interface import EpochRun, OnBatch, Pipeline, ShouldStop, never_stop
from mnist_jax.pipelines.loops import compile_timed, evaluate_over, train_over
from mnist_jax.pipelines.stream import StreamPipeline, local_orders, real_row_counts
from mnist_jax.steps import Steps, TrainState

__all__ = [
    "PIPELINES",
    "DevicePipeline",
    "DeviceSplit",
    "EpochRun",
    "OnBatch",
    "Pipeline",
    "ShouldStop",
    "StreamPipeline",
    "check_pipeline",
    "compile_timed",
    "epoch_program",
    "evaluate_over",
    "evaluation_program",
    "local_orders",
    "make_pipeline",
    "never_stop",
    "real_row_counts",
    "shard_splits",
    "to_device",
    "train_over",
]

PIPELINES: dict[str, type[StreamPipeline] | type[DevicePipeline]] = {
    "device": DevicePipeline,
    "stream": StreamPipeline,
}


def check_pipeline(config: Config) -> None:
    """Raises ConfigError unless `config.pipeline` names a data path."""
    if config.pipeline not in PIPELINES:
        raise ConfigError(
            f"pipeline must be one of {', '.join(PIPELINES)}, got {config.pipeline!r}"
        )


def make_pipeline(
    config: Config,
    steps: Steps,
    shares: dict[str, data.Share],
    state: TrainState,
    mesh: Mesh,
    start_epoch: int = 1,
    batches_done: int = 0,
) -> Pipeline:
    """The config's data path over `shares`, compiled for `state`'s shapes and shardings, ready
    to train from `batches_done` batches into epoch `start_epoch`."""
    check_pipeline(config)
    return PIPELINES[config.pipeline](
        config, steps, shares, state, mesh, start_epoch, batches_done
    )
