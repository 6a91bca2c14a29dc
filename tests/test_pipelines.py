"""The two data paths: the same parameters as plain Optax, one compilation each, donated buffers,
exact padding, and the same trajectory on 1 and 4 devices."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import Model, accuracy, data, loss, train
from mnist_jax.data import streams
from mnist_jax.optimizers import make_optimizer
from mnist_jax.pipelines import PIPELINES, evaluate_over, local_orders, make_pipeline
from mnist_jax.reporters import Reporter
from mnist_jax.runtime import parallel
from mnist_jax.steps import init_state, make_steps, normalise
from mnist_jax.training import score
from tests.helpers import NUM_TEST, NUM_TRAIN, worker


def reference_params(config, share):
    """Plain Optax Adam over the same batches, the last one simply shorter: no padding, no
    masks."""
    images, labels = share.images, share.labels
    state = init_state(config)
    params, opt_state = state.params, state.opt_state
    optimizer = make_optimizer(config)
    orders = local_orders(config, share, "train", range(1, config.num_epochs + 1))
    for order in orders:
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            grads = jax.grad(loss)(
                params, normalise(images[rows], params[0][0].dtype), labels[rows]
            )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.device
def test_both_pipelines_match_plain_optax_with_a_short_last_batch(data_dir, tiny_config, shuffle):
    config = tiny_config.replace(shuffle=shuffle)
    expected = reference_params(config, data.load(data_dir)["train"])
    results = {p: train(config.replace(pipeline=p)) for p in PIPELINES}
    for result in results.values():
        for got, want in zip(
            jax.tree.leaves(result.params), jax.tree.leaves(expected), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)
    stream, device = (
        [(m.train_accuracy, m.test_accuracy) for m in r.history] for r in results.values()
    )
    assert stream == device


def build(config, splits):
    mesh = parallel.make_mesh(config.devices)
    state = parallel.replicate(init_state(config), mesh)
    return state, make_pipeline(config, make_steps(config), splits, state, mesh)


class CompileCounter(Reporter):
    """Counts XLA compilations after the first epoch ends."""

    def __init__(self):
        self.after_first_epoch = None
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        if (
            event == "/jax/core/compile/backend_compile_duration"
            and self.after_first_epoch is not None
        ):
            self.after_first_epoch += 1

    def on_epoch(self, metrics):
        if metrics.epoch == 1:
            self.after_first_epoch = 0


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.device
def test_nothing_is_compiled_after_the_first_epoch(tiny_config, pipeline):
    counter = CompileCounter()
    train(tiny_config.replace(num_epochs=3, pipeline=pipeline), reporter=counter)
    assert counter.after_first_epoch == 0


@pytest.mark.parametrize("name", PIPELINES)
@pytest.mark.device
def test_donated_state_is_consumed_and_evaluation_still_works(data_dir, tiny_config, name):
    config = tiny_config.replace(pipeline=name)
    splits = data.load(data_dir)
    state, pipeline = build(config, splits)
    first = pipeline.train_epoch(state, 1, lambda done: None).state
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))  # buffers were donated
    correct_1, _ = pipeline.evaluate(first.variables)["train"]
    second = pipeline.train_epoch(first, 2, lambda done: None).state
    correct_2, _ = pipeline.evaluate(second.variables)["train"]
    assert 0 <= int(correct_1) <= NUM_TRAIN and int(correct_2) >= int(correct_1)


@pytest.mark.parametrize("name, skips", [("device", False), ("stream", True)])
def test_only_the_stream_checks_for_batches_of_padding_alone(data_dir, tiny_config, name, skips):
    """The stream pads its last chunk with batches of padding alone, which the step skips; on the
    device path every batch holds real rows, so its scan has no conditional (on a CPU, one copies
    the whole training state in and out at every step)."""
    _, pipeline = build(tiny_config.replace(pipeline=name), data.load(data_dir))
    program = pipeline.train_program if name == "device" else pipeline.train_chunk
    assert (" conditional(" in program.as_text()) == skips


def test_the_stream_refuses_epochs_out_of_order(data_dir, tiny_config):
    config = tiny_config.replace(pipeline="stream")
    splits = data.load(data_dir)
    state, pipeline = build(config, splits)
    with pytest.raises(ValueError, match="at epoch 1, not 2"):
        pipeline.train_epoch(state, 2, lambda done: None)


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_progress_counts_batches(tiny_config, pipeline):
    """After each compiled call: the first of a process runs one step (its time sizes the
    next); the tiny run's steps are quick, so the rest of the epoch (the stream: of the chunk)
    is one call."""
    seen = []

    class Progress(Reporter):
        def on_batch(self, epoch, done):
            seen.append((epoch, done))

    train(tiny_config.replace(num_epochs=2, pipeline=pipeline), reporter=Progress())
    assert (
        seen
        == {
            "device": [(1, 1), (1, 10), (2, 10)],
            "stream": [(1, 1), (1, 4), (1, 8), (1, 10), (2, 4), (2, 8), (2, 10)],
        }[pipeline]
    )


def memorising_model(shares) -> Model:
    """A model that has learnt every example of every split by heart (its nearest neighbour's
    label): right on every row, a batch's padding (a copy of the split's first row) too."""
    images = np.concatenate([share.images for share in shares.values()])
    labels = np.concatenate([share.labels for share in shares.values()])

    def init(key):
        return {"images": normalise(images, jnp.float32), "labels": jax.nn.one_hot(labels, 10)}

    def apply(params, images):
        flat = images.reshape(images.shape[0], -1)
        distances = jnp.sum((flat[:, None, :] - params["images"][None]) ** 2, axis=-1)
        return 10 * params["labels"][jnp.argmin(distances, axis=1)]

    return Model(init, apply)


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_padding_rows_are_not_counted_even_when_the_model_gets_them_right(tiny_config, pipeline):
    """The tiny evaluation batches (62 rows) end with 10 rows of padding in train, 24 in test."""
    config = tiny_config.replace(pipeline=pipeline)
    shares = data.load(config.data_dir)
    model = memorising_model(shares)
    mesh = parallel.make_mesh(1)
    steps = make_steps(config, model)
    state = parallel.replicate(steps.init(config.seed), mesh)
    totals = make_pipeline(config, steps, shares, state, mesh).evaluate(state.variables)
    assert {name: int(correct) for name, (correct, _) in totals.items()} == {
        "train": NUM_TRAIN,
        "test": NUM_TEST,
    }
    assert score(state.params, config, "test", model=model)[0] == 1.0


@pytest.mark.device
def test_evaluate_over_padded_batches_counts_every_example_once(tiny_config, data_dir):
    config = tiny_config
    state = init_state(config)
    share = data.load(data_dir)["train"]
    images, labels = share.images, share.labels
    stream = streams.batch_chunks(images, labels, np.arange(NUM_TRAIN)[None], 64)
    evaluate = jax.jit(functools.partial(evaluate_over, make_steps(config).eval_step))
    correct, total_loss = 0, 0.0
    for chunk in streams.prefetch_to_device(stream):
        chunk_correct, chunk_loss = evaluate(state.variables, chunk)
        correct, total_loss = correct + chunk_correct, total_loss + chunk_loss
    inputs = normalise(images, jnp.float32)
    assert int(correct) == round(NUM_TRAIN * float(accuracy(state.params, inputs, labels)))
    assert float(total_loss) == pytest.approx(float(loss(state.params, inputs, labels)), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, param_tolerance, accuracy_tolerance",
    [
        ("mlp", 1e-5, 0),
        # a CNN with dropout: one test example (of 100) at most
        ("tests.custom_models:tiny_cnn", 1e-4, 0.011),
        # and BatchNorm, its statistics over the global batch
        ("tests.framework_models:equinox_cnn", 1e-4, 0.011),
    ],
)
def test_four_devices_follow_the_one_device_trajectory(
    data_dir, model, param_tolerance, accuracy_tolerance
):
    env = parallel.simulated_cpu_env(4)
    proc = subprocess.run(
        [*worker("multidevice"), data_dir, model],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["device_count"] == 4
    for setting in ("device/32", "device/30", "stream/32", "stream/30"):
        result = report[setting]
        assert result["num_devices"] == [1, 4]
        assert result["max_param_diff"] < param_tolerance, setting
        one, four = (np.asarray(a) for a in result["accuracies"])
        np.testing.assert_allclose(one, four, rtol=0, atol=accuracy_tolerance, err_msg=setting)
        assert result["replicated"]


def test_batch_smaller_than_the_device_count_is_refused(tmp_path):
    code = (
        "from mnist_jax import Config, train; "
        f"train(Config(batch_size=3, data_dir={str(tmp_path)!r}), {str(tmp_path / 'run')!r})"
    )
    env = parallel.simulated_cpu_env(4)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert "ConfigError: batch size 3 is smaller than the device count 4" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_simulated_devices_keep_the_callers_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    env = parallel.simulated_cpu_env(4)
    assert env["XLA_FLAGS"].split() == [
        "--xla_cpu_enable_fast_math=false",
        "--xla_force_host_platform_device_count=4",
    ]
    assert (
        env["JAX_PLATFORMS"] == "cpu"
        and os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
    )
