"""Training and evaluation: pure jitted steps over a TrainState pytree, and the epoch loop."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_jax import data
from mnist_jax.config import Config
from mnist_jax.model import Params, init_params, loss, predict, summed_nll
from mnist_jax.results import EpochMetrics, Reporter, Result, RunDir, environment


class TrainState(NamedTuple):
    """Everything a step changes."""

    params: Params
    opt_state: optax.OptState


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam with the config's learning rate and moment decays."""
    return optax.adam(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)


def normalise(images: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Flattens uint8 images to (N, 784) and divides by 255, as the seed did."""
    return images.reshape(images.shape[0], -1).astype(dtype) / 255


def train_step(
    state: TrainState, batch: data.Batch, optimizer: optax.GradientTransformation
) -> tuple[TrainState, jax.Array]:
    """One Adam step on the batch's summed loss; returns the new state and that loss."""
    inputs = normalise(batch.images, state.params[0][0].dtype)
    batch_loss, grads = jax.value_and_grad(loss)(state.params, inputs, batch.labels, batch.mask)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), batch_loss


def eval_step(params: Params, batch: data.Batch) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over the batch's real rows."""
    log_probs = predict(params, normalise(batch.images, params[0][0].dtype))
    correct = jnp.sum((jnp.argmax(log_probs, axis=1) == batch.labels) & batch.mask)
    return correct, summed_nll(log_probs, batch.labels, batch.mask)


def init_state(config: Config) -> TrainState:
    """Initial parameters and optimizer state for `config`."""
    params = init_params(config.seed, config.layer_sizes, config.sigma,
                         method=config.init, dtype=jnp.dtype(config.dtype))
    return TrainState(params, make_optimizer(config).init(params))


def _batch_spec(batch_size: int) -> data.Batch:
    return data.Batch(jax.ShapeDtypeStruct((batch_size, 28, 28, 1), jnp.uint8),
                      jax.ShapeDtypeStruct((batch_size,), jnp.int32),
                      jax.ShapeDtypeStruct((batch_size,), jnp.bool_))


def compile_steps(config: Config, state: TrainState) -> tuple[Callable, Callable]:
    """The train step (donating its state) and eval step, compiled ahead of time.

    Every batch has the same shape (the last one is padded), so nothing is
    compiled again once training starts.
    """
    step = jax.jit(functools.partial(train_step, optimizer=make_optimizer(config)), donate_argnums=0)
    return (step.lower(state, _batch_spec(config.batch_size)).compile(),
            jax.jit(eval_step).lower(state.params, _batch_spec(config.eval_batch_size)).compile())


def evaluate(eval_fn: Callable, params: Params, split: tuple[np.ndarray, np.ndarray],
             batch_size: int) -> tuple[float, float]:
    """Accuracy and mean loss over a whole split; one host sync at the end."""
    correct, total_loss = 0, 0.0
    for batch in data.prefetch_to_device(data.batches(*split, batch_size)):
        batch_correct, batch_loss = eval_fn(params, batch)
        correct, total_loss = correct + batch_correct, total_loss + batch_loss
    num_examples = len(split[1])
    return float(correct) / num_examples, float(total_loss) / num_examples


def run_epoch(step_fn: Callable, state: TrainState, stream: Iterator[data.Batch],
              on_batch: Callable[[int], None]) -> TrainState:
    """Applies `step_fn` over every batch of one epoch."""
    previous_loss = None
    for index, batch in enumerate(stream):
        state, batch_loss = step_fn(state, batch)
        # Wait on the step before last: keeps two steps in flight, so the device
        # never idles, the host never runs far ahead, and progress is real.
        if previous_loss is not None:
            previous_loss.block_until_ready()
        previous_loss = batch_loss
        on_batch(index + 1)
    return jax.block_until_ready(state)


def _precision(config: Config):
    """JAX's 64-bit mode for a float64 config, for the duration of a run."""
    return jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()


def score(params: Params, config: Config, split: str = "test") -> tuple[float, float]:
    """Accuracy and mean loss of `params` over a whole split."""
    with _precision(config):
        arrays = data.load_split(split, config.data_dir)
        return evaluate(jax.jit(eval_step), params, arrays, config.eval_batch_size)


def train(config: Config = Config(), out_dir: str | None = None, *, overwrite: bool = False,
          reporter: Reporter | None = None) -> Result:
    """Trains the MLP as `config` says; writes the run folder if `out_dir` is given.

    Accuracy and mean loss over the full splits are measured before training
    (epoch 0) and after every epoch.
    """
    run_dir = RunDir.create(out_dir, config, overwrite=overwrite) if out_dir else None
    reporter = reporter or Reporter()
    with _precision(config):
        train_split = data.load_split("train", config.data_dir, in_file_order=not config.shuffle)
        test_split = data.load_split("test", config.data_dir)
        num_train = len(train_split[1])
        state = init_state(config)
        start = time.perf_counter()
        step_fn, eval_fn = compile_steps(config, state)
        compile_seconds = time.perf_counter() - start
        env = environment()
        reporter.on_start(config, env, steps_per_epoch=-(-num_train // config.batch_size))
        history = []

        def record(epoch: int, params: Params, epoch_seconds: float | None) -> None:
            start = time.perf_counter()
            train_acc, train_loss = evaluate(eval_fn, params, train_split, config.eval_batch_size)
            test_acc, test_loss = evaluate(eval_fn, params, test_split, config.eval_batch_size)
            metrics = EpochMetrics(
                epoch, train_acc, test_acc, train_loss, test_loss, epoch_seconds,
                examples_per_second=epoch_seconds and num_train / epoch_seconds,
                eval_seconds=time.perf_counter() - start)
            history.append(metrics)
            reporter.on_epoch(metrics)
            if run_dir:
                run_dir.append_metrics(metrics)

        record(0, state.params, None)
        for epoch in range(1, config.num_epochs + 1):
            start = time.perf_counter()
            stream = data.batches(*train_split, config.batch_size,
                                  shuffle_seed=(config.seed, epoch) if config.shuffle else None)
            state = run_epoch(step_fn, state, data.prefetch_to_device(stream),
                              functools.partial(reporter.on_batch, epoch))
            record(epoch, state.params, time.perf_counter() - start)
    result = Result(config, state.params, history, compile_seconds, **env)
    if run_dir:
        run_dir.write_result(result)
    reporter.on_end(result)
    return result
