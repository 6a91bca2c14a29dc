"""The memory estimate: checked before anything is allocated, against the arrays a run holds."""

import gc

import jax
import pytest

from mnist_jax import Config, ConfigError, data
from mnist_jax.cli import main
from mnist_jax.pipelines import make_pipeline
from mnist_jax.steps import make_steps


@pytest.mark.parametrize(
    "command, flags",
    [
        ("train", ["--layer-sizes", "784,4000000000,10"]),
        ("train", ["--batch-size", "20000000000"]),
        ("sweep", ["--seeds", "4000", "--layer-sizes", "784,100000,10"]),
    ],
)
def test_memory_is_checked_before_allocation(data_dir, tmp_path, capsys, command, flags):
    out = tmp_path / "run"
    assert main([command, *flags, "--data-dir", data_dir, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "needs about" in err
        and "GiB available: use narrower layers or a smaller batch size" in err
    )
    assert not out.exists()


def test_memory_estimate_counts_the_state_and_batches():
    from mnist_jax.runtime.memory import estimate_bytes

    config = Config(layer_sizes=(784, 10), batch_size=100, eval_batch_size=50)
    parts, per_example = estimate_bytes(config), make_steps(config).activations_per_example
    assert parts["training state"] == 5 * (784 * 10 + 10) * 4
    # The forward pass's values per image: at least the flattened image and the logits.
    assert 784 + 10 <= per_example <= 2 * (784 + 10)
    assert (
        parts["activations"] == 3 * 100 * per_example * 4
        and parts["evaluation"] == 50 * per_example * 4
    )
    assert (
        estimate_bytes(config.replace(batch_size=200))["activations"] == 2 * parts["activations"]
    )
    assert (
        estimate_bytes(Config(dtype="float64", layer_sizes=(784, 10)))["training state"]
        == 5 * 7850 * 8
    )
    # 1.66 M parameters; 28x28x32 + 14x14x64 values at least
    cnn = estimate_bytes(Config(model="cnn"))
    assert (
        cnn["training state"] == 5 * (9 * 32 + 32 + 9 * 32 * 64 + 64 + 3136 * 256 + 256 + 2570) * 4
    )
    assert cnn["activations"] >= 3 * 256 * (28 * 28 * 32 + 14 * 14 * 64) * 4
    with pytest.raises(ConfigError, match="needs about"):
        from mnist_jax.runtime.memory import check_fits
        from mnist_jax.runtime.parallel import make_mesh

        check_fits(Config(layer_sizes=(784, 10**9, 10)), make_mesh(1))


def test_memory_estimate_against_the_arrays_a_run_holds(data_dir):
    """The estimate's training state and data against the bytes of the arrays a real run's set-up
    holds on the device path (`jax.live_arrays` of the CPU, where the run is pinned, whatever the
    default platform): the state is parameters and Adam's two moments, which the estimate bounds
    with gradients and an update (5/3 of it); the data, which the estimate sizes for the 70,000
    MNIST images, is the tiny data's images and labels."""

    from mnist_jax.runtime import parallel
    from mnist_jax.runtime.memory import estimate_bytes
    from mnist_jax.steps import make_steps

    def live_bytes() -> int:
        """Bytes of the live buffers on the run's platform (an array put on the device it is on
        shares its buffer)."""
        gc.collect()
        buffers = {
            shard.data.unsafe_buffer_pointer(): shard.data.nbytes
            for array in jax.live_arrays(config.platform)
            for shard in array.addressable_shards
        }
        return sum(buffers.values())

    config = Config(
        layer_sizes=(784, 64, 10), batch_size=32, platform="cpu", devices=1, data_dir=data_dir
    )
    shares = data.load(data_dir)
    steps, mesh = make_steps(config), parallel.make_mesh(1, config.platform)
    estimate = estimate_bytes(config, steps=steps)
    start = live_bytes()
    state = parallel.replicate(steps.init(0), mesh)
    state_bytes = live_bytes() - start
    pipeline = make_pipeline(config, steps, shares, state, mesh)
    data_bytes = live_bytes() - start - state_bytes
    num_params = 784 * 64 + 64 + 64 * 10 + 10
    assert 3 * num_params * 4 <= state_bytes <= 3 * num_params * 4 + 64  # and Adam's step counts
    assert state_bytes <= estimate["training state"] <= 2 * state_bytes
    images = sum(share.total for share in shares.values())
    assert images * 784 <= data_bytes <= 1.1 * images * 784  # uint8 images and their labels
    assert estimate["data"] == 70_000 * 784  # the same bytes for MNIST's 70,000 images
    del pipeline
