"""Divergence, provoked for real: the run stops at its epoch, keeps what came before, exits 3."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mnist_jax import train
from mnist_jax.cli import main
from mnist_jax.runs import checkpoints
from tests.helpers import TINY_FLAGS, metrics_lines, tiny


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_divergence_stops_at_its_epoch_and_keeps_what_came_before(data_dir, tmp_path, pipeline):
    # An optimizer whose 15th update is NaN: the parameters turn NaN in epoch 2 (10 batches an
    # epoch), and the loss of its 6th step, the first computed with them, is the first non-finite
    # one.
    config = tiny(
        data_dir, num_epochs=4, optimizer="tests.custom_models:adam_nan_at_step", pipeline=pipeline
    )
    out = str(tmp_path / "run")
    result = train(config, out)
    assert result.status == "diverged" and (
        result.divergence["epoch"],
        result.divergence["first_step"],
    ) == (2, 6)
    epoch = result.divergence["epoch"]
    assert [m.epoch for m in result.history] == list(range(epoch))  # the good epochs only
    assert (
        f"diverged in epoch {epoch}, steps {result.divergence['first_step']}-10"
        in result.divergence["message"]
    )
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["divergence"] == result.divergence
    assert [m["epoch"] for m in metrics_lines(out)] == list(range(epoch))
    assert not os.path.exists(os.path.join(out, "params.npz"))
    saved = checkpoints.latest(out)
    assert saved.epoch == epoch - 1 and all(np.isfinite(leaf).all() for leaf in saved.leaves)


def test_divergence_exits_3_with_the_epoch_and_steps(data_dir, tmp_path, capsys):
    status = main(
        [
            "train",
            *TINY_FLAGS,
            "--optimizer",
            "tests.custom_models:adam_nan_at_step",
            "--data-dir",
            data_dir,
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert status == 3
    err = capsys.readouterr().err
    assert "diverged in epoch 2, steps 6-10: the training loss became nan at step 6" in err
