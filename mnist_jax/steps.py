"""The pure, jit-ready training step and evaluation step, bound once to a model and an
optimizer."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_jax.augment import augmentation
from mnist_jax.config import (
    OBJECT_PREFIX,
    Config,
    Hyperparameters,
    is_on,
    numbers,
    parameter_dtype,
)
from mnist_jax.errors import ConfigError
from mnist_jax.factories import describe, guarded
from mnist_jax.losses import log_softmax, smoothed_nll, summed_nll
from mnist_jax.models import BUILT_IN, Model, ModelState, Params, Variables, make_model
from mnist_jax.models.interface import Apply, stateful_form
from mnist_jax.models.rewrite import convolution_forms, rewrite_convolutions, rewrites
from mnist_jax.optimizers import decays, make_optimizer

# folded into the seed's key: the per-step keys' stream, apart from epoch orders
_STEP_KEYS = 0xFFFFFFFF
# folded into a step's key: the augmentation's draws, apart from the model's
_AUGMENT_KEYS = 0xA0A0A0A0


class Batch(NamedTuple):
    """A fixed-size minibatch; `mask` is False for padding rows past the split's end."""

    images: np.ndarray | jax.Array  # (B, 28, 28, 1) uint8
    labels: np.ndarray | jax.Array  # (B,) int32
    mask: np.ndarray | jax.Array  # (B,) bool


class TrainState(NamedTuple):
    """Everything a step changes."""

    params: Params
    opt_state: optax.OptState
    model_state: ModelState = ()  # what the model updates as it trains (`()` for none)

    @property
    def variables(self) -> Variables:
        """What evaluation reads: the parameters and the model's state."""
        return Variables(self.params, self.model_state)


class Steps(NamedTuple):
    """A run's model and optimizer, bound once: what every data path, sweep and score calls."""

    # seed (or a uint32 array of them, under vmap) -> initial state
    init: Callable[[int], TrainState]
    # (state, batch, key=None) -> new state, loss
    train_step: Callable[..., tuple[TrainState, jax.Array]]
    eval_step: Callable[[Variables, Batch], tuple[jax.Array, jax.Array]]  # -> correct, summed loss
    params_shape: Any  # the parameters' shapes and dtypes (jax.ShapeDtypeStruct leaves)
    state_shape: Any  # the model state's (`()` for a model without one)
    activations_per_example: int  # values the model's forward pass computes for one image
    # a model you bring: how many of its convolutions take each form (`CheckedModel`'s)
    convolutions: dict[str, int] = {}

    @property
    def stateful(self) -> bool:
        """Whether the model has state (which must never see a batch's padding rows)."""
        return bool(jax.tree.leaves(self.state_shape))


def to_floats(images: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """uint8 images as floats in [0, 1], divided by 255 as the seed did."""
    return images.astype(dtype) / 255


def normalise(images: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Flattens uint8 images to (N, 784) floats in [0, 1]: the MLP functions' input."""
    return to_floats(images.reshape(images.shape[0], -1), dtype)


def epoch_key(seed: jax.Array | int, epoch: jax.Array | int) -> jax.Array:
    """The key of epoch `epoch`'s training steps: step `s` (0-based) draws `fold_in(epoch_key, s)`.
    A function of the seed, so resumes and sweeps draw the same keys as an uninterrupted run."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STEP_KEYS), epoch)


def l2_penalty(params, l2: float) -> jax.Array:
    """`l2 / 2` times the squared norm of the weights (every parameter of two dimensions or
    more)."""
    return (
        l2
        / 2
        * sum(
            jnp.sum(jnp.square(w))
            for w, decayed in zip(
                jax.tree.leaves(params), jax.tree.leaves(decays(params)), strict=True
            )
            if decayed
        )
    )


def train_step(
    state: TrainState,
    batch: Batch,
    key: jax.Array | None = None,
    *,
    apply: Apply,
    optimizer: optax.GradientTransformation,
    dtype: jnp.dtype,
    mean: bool = False,
    label_smoothing: float = 0.0,
    l2: float = 0.0,
    augment: Callable | None = None,
) -> tuple[TrainState, jax.Array]:
    """One optimizer step on the batch's loss (summed, or with `mean` averaged over its real rows;
    against smoothed labels if `label_smoothing`; plus the L2 penalty if `l2`); returns the new
    state, the model's state as the training pass left it, and that objective.
    `apply(params, model_state, images, key, training)` gives the logits and the model state;
    `augment(images, key)`, if given, moves the images first, with a key of its own drawn from
    the step's, so the model's key is the same with augmentation or without."""
    images = to_floats(batch.images, dtype)
    if augment is not None:
        images = augment(images, jax.random.fold_in(key, _AUGMENT_KEYS))

    def objective(params):
        logits, model_state = apply(params, state.model_state, images, key, True)
        total = smoothed_nll(log_softmax(logits), batch.labels, batch.mask, label_smoothing)
        loss = total / jnp.maximum(batch.mask.sum(), 1) if mean else total
        return (loss + l2_penalty(params, l2) if is_on(l2) else loss), model_state

    (value, model_state), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, model_state), value


def on_real_rows(train_step: Callable, counts: Sequence[int]) -> Callable:
    """`train_step` given a batch's real rows alone, so that a model's batch statistics (its
    state) never see padding. `counts` are the numbers of real rows a batch can hold; each is
    a branch of its own shape, and a batch takes the branch of its count."""
    counts = tuple(sorted(counts))

    def step(state: TrainState, batch: Batch, key: jax.Array | None = None):
        rows = batch.mask.shape[0]
        real_first = jnp.argsort(~batch.mask, stable=True)  # the real rows, in their order

        def on(count: int) -> Callable:
            def run(state):
                part = (
                    batch
                    if count == rows
                    else jax.tree.map(lambda a: a[real_first[:count]], batch)
                )
                return train_step(state, part, key)

            return run

        if len(counts) == 1:
            return on(counts[0])(state)
        branch = jnp.searchsorted(jnp.asarray(counts), batch.mask.sum())
        return jax.lax.switch(branch, [on(count) for count in counts], state)

    return step


def eval_step(
    variables: Variables, batch: Batch, *, apply: Apply, dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over the batch's real rows, the model in evaluation
    mode (its state read, not updated)."""
    logits, _ = apply(
        variables.params, variables.state, to_floats(batch.images, dtype), None, False
    )
    log_probs = log_softmax(logits)
    correct = jnp.sum(
        (jnp.argmax(log_probs, axis=1) == batch.labels) & batch.mask, dtype=jnp.int32
    )
    return correct, summed_nll(log_probs, batch.labels, batch.mask)


def mixed_precision(apply: Apply, compute: jnp.dtype) -> Apply:
    """`apply` computing in `compute` (bfloat16): the floating parameters and the images cast to
    it on the way in, the logits and the model's state cast back to their own dtypes on the way
    out; the state goes in as it is (BatchNorm's running statistics gather in float32). The
    gradient flows through the casts to the parameters as they are stored. A model's own layers
    may still compute in float32 where they say so (Equinox's BatchNorm does)."""

    def cast(tree, dtype):
        return jax.tree.map(
            lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
        )

    def apply_mixed(params, state, images, key, training):
        logits, new_state = apply(
            cast(params, compute), state, images.astype(compute), key, training
        )
        new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state)
        return logits.astype(images.dtype), new_state

    return apply_mixed


class CheckedModel(NamedTuple):
    """A model traced once and found sound: its functions in the form the steps call (each fault
    a one-line ConfigError naming the model), its shapes and the size of its forward pass."""

    init: Callable[[jax.Array], tuple[Params, ModelState]]
    apply: Apply
    params_shape: Any  # the parameters' shapes and dtypes (jax.ShapeDtypeStruct leaves)
    state_shape: Any  # the model state's (`()` for a model without one)
    activations_per_example: int  # values the model's forward pass computes for one image
    # a model you bring: how many of its convolutions take each form, `native` (with why) among
    # them; empty for a built-in model, which picks its own (`cnn_form`)
    convolutions: dict[str, int] = {}


def check_model(
    config: Config, model: Model | None = None, hyperparameters: Hyperparameters | None = None
) -> CheckedModel:
    """The model (`config.model`, or the `model` object), checked without allocating anything:
    `init` must give pytrees of arrays and `apply` logits of shape (N, 10). The convolutions of a
    model you bring are rewritten into the package's forms if `config.conv_rewrite` says so
    (`mnist_jax.models.rewrite`)."""
    name = f"model {describe(model)}" if model is not None else f"model {config.model!r}"
    brought = model is not None or config.model not in BUILT_IN
    rewritten = rewrites(config) and brought
    model = model if model is not None else make_model(config, hyperparameters)
    dtype = jnp.dtype(parameter_dtype(config))
    init, written = stateful_form(model)
    apply = rewrite_convolutions(written) if rewritten else written
    if config.dtype == "bfloat16":
        apply = mixed_precision(apply, jnp.bfloat16)
    init, apply = guarded(init, f"{name}: init"), guarded(apply, f"{name}: apply")
    with precision(config):
        params_shape, state_shape = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, _run_dtype(a.dtype, dtype)),
            jax.eval_shape(lambda: init(jax.random.key(0))),
        )
        images = jax.ShapeDtypeStruct((2, 28, 28, 1), dtype)
        arguments = (params_shape, state_shape, images, None, False)
        # the model as written: its output's shape, the size of its forward pass, its convolutions
        graph, (logits, _) = jax.make_jaxpr(
            guarded(written, f"{name}: apply"), static_argnums=(3, 4), return_shape=True
        )(*arguments)
        if rewritten:  # and rewritten: traced once, so that a fault shows here
            jax.eval_shape(lambda *arrays: apply(*arrays, None, False), *arguments[:3])
    if len(jax.tree.leaves(logits)) != 1 or jax.tree.leaves(logits)[0].shape != (2, 10):
        shapes = ", ".join(str(a.shape) for a in jax.tree.leaves(logits))
        raise ConfigError(
            f"{name}: apply returned {shapes} for 2 images, not logits of shape (2, 10)"
        )
    activations = sum(math.prod(v.aval.shape) for eqn in graph.eqns for v in eqn.outvars) // 2
    forms = convolution_forms(graph.jaxpr) if brought else {}
    if not rewritten and forms:
        forms = {"native": sum(forms.values())}
    return CheckedModel(init, apply, params_shape, state_shape, activations, forms)


def make_steps(
    config: Config,
    model: Model | CheckedModel | None = None,
    optimizer: optax.GradientTransformation | None = None,
    train_size: int | None = None,
    hyperparameters: Hyperparameters | None = None,
) -> Steps:
    """The model (`config.model`, or the `model` object) and the optimizer (`config.optimizer`, or
    the `optimizer` object; its schedule over epochs of `train_size`) bound into the steps. The
    model is checked first (`check_model`; a model checked already is not traced again). A grid
    cell's traced `hyperparameters` (`config.TRACEABLE`) replace the config's numbers. The
    steps carry `config.matmul_precision`; jit them under `precision(config)` (for float64)."""
    checked = (
        model if isinstance(model, CheckedModel) else check_model(config, model, hyperparameters)
    )
    optimizer = (
        optimizer if optimizer is not None else make_optimizer(config, train_size, hyperparameters)
    )
    values = numbers(config, hyperparameters)
    dtype = jnp.dtype(parameter_dtype(config))

    @jax.jit
    def init_program(seed: jax.Array) -> TrainState:
        params, model_state = jax.tree.map(
            lambda a: a.astype(_run_dtype(a.dtype, dtype)), checked.init(jax.random.key(seed))
        )
        return TrainState(params, optimizer.init(params), model_state)

    def init_state(seed: int | jax.Array) -> TrainState:
        # One compiled program (vmap it over seeds), not an eager dispatch per operation.
        with precision(config):
            return init_program(seed if isinstance(seed, jax.Array) else np.uint32(seed))

    step = functools.partial(
        train_step,
        apply=checked.apply,
        optimizer=optimizer,
        dtype=dtype,
        mean=config.loss_reduction == "mean",
        label_smoothing=values["label_smoothing"],
        l2=values["l2"],
        augment=augmentation(config, hyperparameters),
    )
    evaluate = functools.partial(eval_step, apply=checked.apply, dtype=dtype)
    return Steps(
        init=init_state,
        train_step=_in_precision(config, step),
        eval_step=_in_precision(config, evaluate),
        params_shape=checked.params_shape,
        state_shape=checked.state_shape,
        activations_per_example=checked.activations_per_example,
        convolutions=checked.convolutions,
    )


def evaluation_steps(config: Config, model: Model | None = None) -> Steps:
    """The steps of `config.model` (or the `model` object) for evaluation only: the optimizer
    (which may have been a Python object) is not rebuilt."""
    return make_steps(config, model, optax.identity())


def recorded(
    config: Config,
    model: Model | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> Config:
    """The config as a run records it: a model or optimizer given as an object is written
    `object:<description>` (a run of it needs the same object to resume)."""
    objects = {"model": model, "optimizer": optimizer}
    return config.replace(
        **{name: OBJECT_PREFIX + describe(obj) for name, obj in objects.items() if obj is not None}
    )


def _run_dtype(leaf_dtype: jnp.dtype, run_dtype: jnp.dtype) -> jnp.dtype:
    """Floating leaves take the run's dtype; others keep theirs."""
    return run_dtype if jnp.issubdtype(leaf_dtype, jnp.floating) else leaf_dtype


def init_state(config: Config, seed: int | None = None) -> TrainState:
    """Initial parameters and optimizer state for `config` (with another `seed` if given)."""
    return make_steps(config).init(config.seed if seed is None else seed)


def split_metrics(split: str, correct, total_loss, num_examples: int) -> dict:
    """Evaluation totals over a split as the recorded metrics: accuracy and mean loss per example.

    Works on scalars and on arrays (one value per seed of a sweep) alike.
    """
    return {
        f"{split}_accuracy": np.asarray(correct, np.float64) / num_examples,
        f"{split}_loss": np.asarray(total_loss, np.float64) / num_examples,
    }


@contextlib.contextmanager
def precision(config: Config) -> Iterator[None]:
    """The config's numerics while tracing and running: JAX's 64-bit mode for a float64 config, and
    `config.matmul_precision` for every matrix product and convolution traced inside."""
    with jax.default_matmul_precision(config.matmul_precision):
        if config.dtype == "float64":
            with jax.enable_x64(True):
                yield
        else:
            yield


def _in_precision(config: Config, function: Callable) -> Callable:
    """`function`, traced (and called) with `config.matmul_precision`: whoever jits it gets the
    config's precision in every product, whatever their own default."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        with jax.default_matmul_precision(config.matmul_precision):
            return function(*args, **kwargs)

    return call
