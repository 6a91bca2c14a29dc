"""A `Model` of a Flax NNX, Flax Linen or Equinox module: its parameters trained by the harness,
its other variables (BatchNorm's statistics) carried as the model's state, its training and
evaluation modes switched as its framework expects, and its randomness drawn from the harness's
step key. Each framework is imported only when its adapter is called (the `flax` and `equinox`
extras)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mnist_jax.models.interface import Model

MNIST_SHAPE = (28, 28, 1)  # one image as the harness gives it: NHWC, one channel


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _keys_as_data(tree):
    """Typed PRNG keys as their raw uint32 data, which checkpoints and casts can hold."""
    return jax.tree.map(lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, tree)


def from_nnx(build: Callable[..., Any]) -> Model:
    """A `Model` of the Flax NNX module `build(rngs)` returns (`rngs` an `nnx.Rngs` of the
    harness's initialisation key). Its `nnx.Param`s are the parameters; every other variable
    (BatchNorm's `nnx.BatchStat`s, the RNG streams' keys and counts) is the model's state. It
    is called as `module(images)` on NHWC images, in training mode (`deterministic=False`,
    `use_running_average=False`, as `module.train()` sets) with its RNG streams reseeded from
    the step's key, and in evaluation mode (as `module.eval()` sets) at evaluation."""
    from flax import nnx

    abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
    graphdef, abstract_params, abstract_state = nnx.split(abstract, nnx.Param, ...)
    key_leaves = jax.tree.map(_is_key, nnx.to_pure_dict(abstract_state))
    streams = sorted(
        {node.tag for _, node in nnx.iter_graph(abstract) if isinstance(node, nnx.RngStream)}
    )

    def as_state(template, values):
        state = jax.tree.map(lambda leaf: leaf, template)  # a copy, filled in place below
        nnx.replace_by_pure_dict(state, values)
        return state

    def init(key: jax.Array):
        _, params, state = nnx.split(build(nnx.Rngs(key)), nnx.Param, ...)
        return nnx.to_pure_dict(params), _keys_as_data(nnx.to_pure_dict(state))

    def apply(params, state, images, *, key, training):
        keys = jax.tree.map(
            lambda data, is_key: jax.random.wrap_key_data(data) if is_key else data,
            state,
            key_leaves,
        )
        module = nnx.merge(
            graphdef, as_state(abstract_params, params), as_state(abstract_state, keys)
        )
        module = nnx.view(
            module,
            deterministic=not training,
            use_running_average=not training,
            raise_if_not_found=False,
        )
        if training and streams:
            nnx.reseed(
                module, **{name: jax.random.fold_in(key, i) for i, name in enumerate(streams)}
            )
        logits = module(images)
        _, _, new_state = nnx.split(module, nnx.Param, ...)
        return logits, _keys_as_data(nnx.to_pure_dict(new_state))

    return Model(init, apply, stateful=True)


def _mode_flag(call: Callable, training: bool) -> dict[str, bool]:
    """The keyword that switches a module's mode, by the name its `__call__` gives it: `train`
    or `training` (True in training), or `deterministic` (True at evaluation); none if neither."""
    parameters = inspect.signature(call).parameters
    for name in ("train", "training"):
        if name in parameters:
            return {name: training}
    return {"deterministic": not training} if "deterministic" in parameters else {}


def from_linen(module: Any) -> Model:
    """A `Model` of the Flax Linen module `module`, initialised on a batch of MNIST's shape
    (NHWC). Its `params` collection is the parameters; its other collections (`batch_stats`)
    are the model's state, mutable in training. Its mode is switched by the `train`,
    `training` or `deterministic` argument of its `__call__`, whichever it has, and its
    `dropout` RNG is the step's key."""

    def init(key: jax.Array):
        params_key, dropout_key = jax.random.split(key)
        variables = module.init(
            {"params": params_key, "dropout": dropout_key},
            jnp.zeros((1, *MNIST_SHAPE)),
            **_mode_flag(module.__call__, False),
        )
        variables = dict(variables)
        return variables.pop("params"), variables

    def apply(params, state, images, *, key, training):
        variables = {"params": params, **state}
        mode = _mode_flag(module.__call__, training)
        if not training:
            return module.apply(variables, images, **mode), state
        if not state:
            return module.apply(variables, images, rngs={"dropout": key}, **mode), state
        return module.apply(variables, images, rngs={"dropout": key}, mutable=list(state), **mode)

    return Model(init, apply, stateful=True)


def from_equinox(build: Callable[[jax.Array], Any], *, axis_name: str = "batch") -> Model:
    """A `Model` of the Equinox module `build(key)` returns, made by `eqx.nn.make_with_state`
    so that its BatchNorm's state is held as Equinox holds it (`eqx.nn.State`). Its floating
    arrays are the parameters. As Equinox's layers expect, it is called on one image at a
    time, channels first (1, 28, 28), vmapped over the batch with `axis_name` (BatchNorm's
    `axis_name`): `module(image, state, key=key) -> (logits, state)`, or `module(image,
    key=key)` for a module without state, its dropout key split per image. Training and
    evaluation modes are `eqx.nn.inference_mode` off and on."""
    import equinox as eqx

    make = eqx.nn.make_with_state(build)

    def trained(leaf) -> bool:
        return isinstance(leaf, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(
            leaf.dtype, jnp.inexact
        )

    abstract_module, abstract_state = eqx.filter_eval_shape(make, jax.random.key(0))
    _, static = eqx.partition(abstract_module, trained)
    has_state = bool(jax.tree.leaves(abstract_state))
    takes_key = "key" in inspect.signature(type(abstract_module).__call__).parameters

    def init(key: jax.Array):
        module, state = make(key)
        return eqx.filter(module, trained), state

    def apply(params, state, images, *, key, training):
        module = eqx.nn.inference_mode(eqx.combine(params, static), value=not training)
        images = jnp.moveaxis(images, -1, 1)  # (N, 1, 28, 28)
        keys = jax.random.split(key, images.shape[0]) if training and takes_key else None

        def one(image, image_key, state):
            extra = {"key": image_key} if takes_key else {}
            return module(image, state, **extra) if has_state else (module(image, **extra), state)

        return jax.vmap(
            one,
            in_axes=(0, None if keys is None else 0, None),
            out_axes=(0, None),
            axis_name=axis_name,
        )(images, keys, state)

    return Model(init, apply, stateful=True)
