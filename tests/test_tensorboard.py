"""TensorBoard event files from `train` and `sweep`, read back by TensorFlow's own reader."""

import collections
import json
from pathlib import Path

import pytest

from mnist_jax.cli import main
from mnist_jax.runs.events import crc32c


def read_events(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the one event file in `folder`: tag -> {step: value}, through TensorFlow."""
    import tensorflow as tf

    (path,) = folder.glob("events.out.tfevents.*")
    scalars = collections.defaultdict(dict)
    for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
            assert value.tag not in scalars or event.step not in scalars[value.tag], (
                "a point written twice"
            )
            scalars[value.tag][event.step] = value.simple_value
    return scalars


def test_crc32c_is_castagnolis():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0


def test_a_run_writes_every_splits_metrics_per_epoch_and_loss_and_rate_per_step(
    data_dir, tmp_path
):
    out = tmp_path / "run"
    # 300 training rows less 100 held out, in batches of 200: one full-batch step per epoch.
    assert (
        main(
            [
                "train",
                "--data-dir",
                data_dir,
                "--epochs",
                "3",
                "--validation-size",
                "100",
                "--batch-size",
                "200",
                "--loss-reduction",
                "mean",
                "--schedule",
                "linear",
                "--lr",
                "0.01",
                "--out",
                str(out),
                "--tensorboard",
                "--quiet",
            ]
        )
        == 0
    )
    history = json.loads((out / "summary.json").read_text())["history"]
    scalars = read_events(out / "tensorboard")
    assert set(scalars) == {
        f"{metric}/{split}"
        for metric in ("accuracy", "loss")
        for split in ("train", "validation", "test")
    } | {"epoch/seconds", "step/loss", "step/learning_rate"}
    for split in ("train", "validation", "test"):
        for metric in ("accuracy", "loss"):
            assert scalars[f"{metric}/{split}"] == pytest.approx(
                {m["epoch"]: m[f"{split}_{metric}"] for m in history}, rel=1e-6
            )
    assert scalars["epoch/seconds"] == pytest.approx(
        {m["epoch"]: m["epoch_seconds"] for m in history[1:]}, rel=1e-6
    )
    # A full-batch step's loss is the mean training loss of the parameters it starts from, which
    # the evaluation after the epoch before measured.
    assert scalars["step/loss"] == pytest.approx(
        {m["epoch"] + 1: m["train_loss"] for m in history[:-1]}, rel=1e-4
    )
    # Optax's linear schedule from 0.01 to 0 over the run's 3 steps.
    assert scalars["step/learning_rate"] == pytest.approx(
        {1: 0.01, 2: 0.01 * 2 / 3, 3: 0.01 / 3}, rel=1e-6
    )


def test_sweeps_and_grids_write_one_stream_per_seed_and_cell(data_dir, tmp_path):
    out = tmp_path / "grid"
    assert (
        main(
            [
                "sweep",
                "--data-dir",
                data_dir,
                "--seeds",
                "2",
                "--epochs",
                "2",
                "--grid",
                "lr",
                "0.001",
                "0.01",
                "--out",
                str(out),
                "--tensorboard",
            ]
        )
        == 0
    )
    saved = json.loads((out / "grid.json").read_text())
    streams = sorted(
        str(p.parent.relative_to(out / "tensorboard")) for p in out.glob("tensorboard/**/events.*")
    )
    assert streams == [
        f"learning_rate={lr}/seed-{seed}" for lr in ("0.001", "0.01") for seed in (42, 43)
    ]
    for cell in saved["cells"]:
        for seed, history in cell["per_seed"].items():
            scalars = read_events(
                out
                / "tensorboard"
                / f"learning_rate={cell['settings']['learning_rate']}"
                / f"seed-{seed}"
            )
            assert scalars["accuracy/test"] == pytest.approx(
                {m["epoch"]: m["test_accuracy"] for m in history}
            )
            assert scalars["loss/train"] == pytest.approx(
                {m["epoch"]: m["train_loss"] for m in history}, rel=1e-6
            )
            # 2 epochs of 2 batches (300 rows, batch 256)
            assert sorted(scalars["step/loss"]) == [1, 2, 3, 4]
            assert scalars["step/learning_rate"] == pytest.approx(
                dict.fromkeys(range(1, 5), cell["settings"]["learning_rate"])
            )
            assert sorted(scalars["epoch/seconds"]) == [1, 2]

    sweep = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--data-dir",
                data_dir,
                "--seeds",
                "2",
                "--epochs",
                "1",
                "--out",
                str(sweep),
                "--tensorboard",
            ]
        )
        == 0
    )
    assert sorted(p.parent.name for p in sweep.glob("tensorboard/*/events.*")) == [
        "seed-42",
        "seed-43",
    ]


@pytest.mark.parametrize("command", [["train"], ["sweep", "--seeds", "2"]])
def test_tensorboard_needs_a_folder(data_dir, command, capsys):
    assert main([*command, "--data-dir", data_dir, "--epochs", "1", "--tensorboard"]) == 2
    assert "event files go in the" in capsys.readouterr().err
