"""The convolutions and pools of a model you bring, rewritten into the package's forms.

On XLA's CPU backend a native convolution inside an epoch's `lax.scan` runs many times slower
than the same sums as matmuls (the Performance page). `rewrite_convolutions(fn)` traces `fn` to a
jaxpr and evaluates it equation by equation, before anything differentiates it:

- each `conv_general_dilated` of two spatial dimensions, without dilation, groups or a result
  type of its own becomes `conv.conv_valid` (Winograd or im2col), its operands moved to NHWC
  and HWIO and padded as the equation says, its result moved back to the equation's layout;
- each `reduce_window` sum or max whose windows tile the array (window equal to stride, no
  padding or dilation) becomes adds or a max over a reshape;
- a `jit` holding either is evaluated inline, the same way.

A convolution's result is computed channels last. Where its equation's layout differs (channels
first, as in Equinox or PyTorch-style code), it is held as computed, and so are the values that
elementwise operations, tiling pools, transposes and unit-dimension reshapes make of it; a value
is transposed into its equation's layout only where an equation that does not follow it reads it.
So a channels-first model is not transposed back and forth at every layer.

Everything else is bound as it was, so a convolution the forms cannot take (dilated, grouped,
1D, 3D, or inside a loop, a conditional, a `jax.checkpoint` or a custom derivative) stays
native.
Gradients then come from the forms' own rules. On CPU the results match the native ones to
rounding (the forms sum in another order).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

from mnist_jax.config import Config
from mnist_jax.errors import ConfigError
from mnist_jax.models import conv

CONV = "conv_general_dilated"
POOLS = {"reduce_window_sum": "sum", "reduce_window_max": "max"}
CALLS = ("jit", "pjit")  # a nested jit: transparent, so evaluated inline
MODES = ("auto", "on", "off")
# primitives whose output element at a position reads their inputs' elements there alone
_ELEMENTWISE_NAMES = (
    "abs add and clamp convert_element_type cos div eq erf exp exp2 expm1 ge gt integer_pow le "
    "log log1p logistic lt max min mul ne neg not or pow rsqrt select_n sign sin sqrt square "
    "sub tan tanh"
)
ELEMENTWISE = frozenset(_ELEMENTWISE_NAMES.split())


def check_conv_rewrite(config: Config) -> None:
    """Raises ConfigError unless `config.conv_rewrite` is one of `MODES`."""
    if config.conv_rewrite not in MODES:
        raise ConfigError(
            f"conv_rewrite must be one of {', '.join(MODES)}, got {config.conv_rewrite!r}"
        )


def rewrites(config: Config) -> bool:
    """Whether a model's convolutions are rewritten: `on`, or `auto` on a CPU (elsewhere the
    native convolution is the fast one)."""
    check_conv_rewrite(config)
    platform = config.platform or jax.default_backend()
    return config.conv_rewrite == "on" or (config.conv_rewrite == "auto" and platform == "cpu")


def conv_unsupported(params: dict, lhs: Any, rhs: Any) -> str | None:
    """Why `conv.conv_valid` cannot take a `conv_general_dilated` of these params and operands
    (their avals will do), or None if it can."""
    spatial = len(params["window_strides"])
    reasons = [
        (spatial != 2, f"{spatial} spatial dimensions"),
        (any(d != 1 for d in params["lhs_dilation"]), "input dilation (a transposed conv)"),
        (any(d != 1 for d in params["rhs_dilation"]), "kernel dilation"),
        (params["feature_group_count"] != 1, "feature groups"),
        (params["batch_group_count"] != 1, "batch groups"),
        (params["preferred_element_type"] is not None, "a result type of its own"),
        (not jnp.issubdtype(lhs.dtype, jnp.floating), f"{lhs.dtype} operands"),
        (lhs.dtype != rhs.dtype, "operands of two dtypes"),
    ]
    return next((reason for failed, reason in reasons if failed), None)


def pool_unsupported(params: dict) -> str | None:
    """Why a `reduce_window` of these params is not a tiling of its array, or None if it is."""
    reasons = [
        (params["window_dimensions"] != params["window_strides"], "windows that overlap or skip"),
        (any(p != (0, 0) for p in params["padding"]), "padding"),
        (any(d != 1 for d in params["base_dilation"] + params["window_dilation"]), "dilation"),
    ]
    return next((reason for failed, reason in reasons if failed), None)


def _pool(x: jax.Array, window: tuple[int, ...], kind: str) -> jax.Array:
    """A `reduce_window` sum or max of windows that tile `x` (a last partial window dropped, as
    'VALID' windows drop it): a reshape, then adds of each window axis's slices (as one
    reduction, XLA's CPU backend takes longer) or a max over the window axes."""
    out = tuple(size // k for size, k in zip(x.shape, window, strict=True))
    x = x[tuple(slice(0, n * k) for n, k in zip(out, window, strict=True))]
    x = x.reshape([d for n, k in zip(out, window, strict=True) for d in (n, k)])
    axes = tuple(2 * i + 1 for i, k in enumerate(window) if k > 1)
    if kind == "max":
        return x.max(axis=axes).reshape(out)
    for axis in reversed(axes):
        x = functools.reduce(
            jnp.add,
            (jax.lax.index_in_dim(x, i, axis, keepdims=False) for i in range(x.shape[axis])),
        )
    return x.reshape(out)


def _rewritable(eqn: jcore.JaxprEqn) -> bool:
    name = eqn.primitive.name
    if name == CONV:
        return conv_unsupported(eqn.params, *(v.aval for v in eqn.invars)) is None
    if name in POOLS:
        return pool_unsupported(eqn.params) is None
    return name in CALLS and any(_rewritable(e) for e in eqn.params["jaxpr"].jaxpr.eqns)


def _position_free(eqn: jcore.JaxprEqn) -> bool:
    """Whether each output element of `eqn` reads the inputs' elements at its own position alone
    (scalars aside): an elementwise primitive, a scalar's broadcast, or a call of them."""
    name = eqn.primitive.name
    if name == "broadcast_in_dim":
        return not eqn.invars[0].aval.shape
    if name in (*CALLS, "custom_jvp_call"):
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        return all(_position_free(e) for e in inner.jaxpr.eqns)
    return name in ELEMENTWISE


def _unit_dims_only(eqn: jcore.JaxprEqn) -> bool:
    """Whether `eqn` only inserts or drops dimensions of size 1."""
    name, shape_in, shape_out = eqn.primitive.name, eqn.invars[0].aval.shape, _shape(eqn)
    if name == "broadcast_in_dim":
        kept = eqn.params["broadcast_dimensions"]
        sizes = [shape_out[d] for d in kept]
        if list(kept) != sorted(kept) or sizes != list(shape_in):
            return False
    elif not (name == "squeeze" or (name == "reshape" and eqn.params["dimensions"] is None)):
        return False
    return [n for n in shape_in if n != 1] == [n for n in shape_out if n != 1]


def _shape(eqn: jcore.JaxprEqn) -> tuple[int, ...]:
    return eqn.outvars[0].aval.shape


def _identity(perm) -> bool:
    return list(perm) == list(range(len(perm)))


def _bind(eqn: jcore.JaxprEqn, inputs: list) -> list:
    """`eqn`'s primitive bound to `inputs`: its outputs, as a list."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    with eqn.ctx.manager:
        outputs = eqn.primitive.bind(*subfuns, *inputs, **params)
    return outputs if eqn.primitive.multiple_results else [outputs]


class _Evaluation:
    """One evaluation of a jaxpr on arrays or tracers, its rewritable equations rewritten, and
    the moved values held as computed (this module's docstring)."""

    def __init__(self, jaxpr: jcore.Jaxpr, consts: list, args: list):
        self.jaxpr = jaxpr
        self.env: dict = dict(zip(jaxpr.constvars, consts, strict=True))
        self.env.update(zip(jaxpr.invars, args, strict=True))
        self.moved: dict = {}  # var -> (array, perm): its value is array.transpose(perm)

    def read(self, var):
        return var.val if isinstance(var, jcore.Literal) else self.env[var]

    def view(self, var, perm) -> jax.Array:
        """`read(var).transpose(perm)`, from the array it is held as if it was moved."""
        if var not in self.moved:
            return self.read(var) if _identity(perm) else self.read(var).transpose(perm)
        array, held = self.moved[var]
        composed = [held[i] for i in perm]
        return array if _identity(composed) else array.transpose(composed)

    def hold(self, var, array: jax.Array, perm) -> None:
        """`var` is `array.transpose(perm)`: held as `array` (the transpose is there for the
        equations that read `var` itself, and XLA drops it if none does)."""
        if _identity(perm):
            self.env[var] = array
        else:
            self.env[var], self.moved[var] = array.transpose(perm), (array, tuple(perm))

    def run(self) -> list:
        for eqn in self.jaxpr.eqns:
            name = eqn.primitive.name
            if not _rewritable(eqn):
                if not self._follow(eqn):
                    outputs = _bind(eqn, [self.read(v) for v in eqn.invars])
                    self.env.update(zip(eqn.outvars, outputs, strict=True))
            elif name == CONV:
                self._conv(eqn)
            elif name in POOLS:
                self._pool(eqn)
            else:  # a jit: evaluated inline
                inner, inputs = eqn.params["jaxpr"], [self.read(v) for v in eqn.invars]
                outputs = _Evaluation(inner.jaxpr, inner.consts, inputs).run()
                self.env.update(zip(eqn.outvars, outputs, strict=True))
        return [self.read(v) for v in self.jaxpr.outvars]

    def _conv(self, eqn: jcore.JaxprEqn) -> None:
        """The convolution as `conv.conv_valid`, its operands viewed as NHWC and HWIO."""
        params, numbers = eqn.params, eqn.params["dimension_numbers"]
        batch, feature, *spatial = numbers.lhs_spec
        out_feature, in_feature, *kernel_spatial = numbers.rhs_spec
        lhs, rhs = eqn.invars
        x = self.view(lhs, (batch, *spatial, feature))
        w = self.view(rhs, (*kernel_spatial, in_feature, out_feature))
        padding = ((0, 0, 0), *((lo, hi, 0) for lo, hi in params["padding"]), (0, 0, 0))
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), padding)
        y = conv.conv_valid(x, w, tuple(params["window_strides"]))  # (N, H, W, O)
        # out_spec[i] is where the result's batch (i = 0), feature (1) and spatial dims lie
        from_y = (0, 3, 1, 2)
        self.hold(eqn.outvars[0], y, [from_y[i] for i in np.argsort(numbers.out_spec)])

    def _pool(self, eqn: jcore.JaxprEqn) -> None:
        (var,), window = eqn.invars, eqn.params["window_dimensions"]
        kind = POOLS[eqn.primitive.name]
        if var not in self.moved:
            self.env[eqn.outvars[0]] = _pool(self.read(var), window, kind)
            return
        array, perm = self.moved[var]
        # the array's dimension d is the value's dimension argsort(perm)[d]
        held_window = [window[i] for i in np.argsort(perm)]
        self.hold(eqn.outvars[0], _pool(array, held_window, kind), perm)

    def _follow(self, eqn: jcore.JaxprEqn) -> bool:
        """Computes `eqn` on the held array of a moved input, where it can: a transpose, a
        reshape of unit dimensions, an elementwise primitive or call. Whether it did."""
        moved = [v for v in eqn.invars if not isinstance(v, jcore.Literal) and v in self.moved]
        if not moved or len(eqn.outvars) != 1:
            return False
        out, shape, (array, perm) = eqn.outvars[0], _shape(eqn), self.moved[moved[0]]
        inverse = np.argsort(perm)
        if eqn.primitive.name == "transpose":
            self.hold(out, array, [perm[i] for i in eqn.params["permutation"]])
        elif _unit_dims_only(eqn):
            self._reshape_unit_dims(eqn)
        elif not _position_free(eqn) or len(shape) != len(perm):
            return False
        elif eqn.primitive.name in ELEMENTWISE:  # shape-generic: bound on the held layout
            inputs = [self.view(v, inverse) if v.aval.shape else self.read(v) for v in eqn.invars]
            self.hold(out, _bind(eqn, inputs)[0], perm)
        elif all(v.aval.shape in ((), shape) for v in eqn.invars):
            # a call, traced at its shapes: given the held arrays reshaped to them (positions do
            # not matter to it), its result reshaped back
            inputs = [
                self.view(v, inverse).reshape(shape) if v.aval.shape else self.read(v)
                for v in eqn.invars
            ]
            self.hold(out, _bind(eqn, inputs)[0].reshape([shape[i] for i in inverse]), perm)
        else:
            return False
        return True

    def _reshape_unit_dims(self, eqn: jcore.JaxprEqn) -> None:
        """A reshape that inserts or drops unit dimensions, of a moved value: its held array's
        unit dimensions dropped and the output's appended, the permutation to match."""
        var, shape_out = eqn.invars[0], _shape(eqn)
        array, held = self.moved[var]
        kept = [d for d in range(array.ndim) if array.shape[d] != 1]
        core = array.reshape([array.shape[d] for d in kept])
        units = iter(range(len(kept), len(kept) + len(shape_out)))
        places = iter(kept.index(held[i]) for i, n in enumerate(var.aval.shape) if n != 1)
        perm = [next(units) if n == 1 else next(places) for n in shape_out]
        ones = [1] * sum(n == 1 for n in shape_out)
        self.hold(eqn.outvars[0], core.reshape(*core.shape, *ones), perm)


def rewrite_convolutions(fn: Callable) -> Callable:
    """`fn` with its convolutions and tiling pools in the package's forms (this module's
    docstring says which). Its array arguments (JAX or NumPy arrays, keys included) are traced;
    every other argument (`training=True`, `None`) is taken as it is, as a static argument is."""

    @functools.wraps(fn)
    def rewritten(*args, **kwargs):
        leaves, tree = jax.tree.flatten((args, kwargs))
        traced = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array | np.ndarray)]

        def on_arrays(*arrays):
            filled = list(leaves)
            for i, array in zip(traced, arrays, strict=True):
                filled[i] = array
            args, kwargs = jax.tree.unflatten(tree, filled)
            return fn(*args, **kwargs)

        arrays = [leaves[i] for i in traced]
        closed, shape = jax.make_jaxpr(on_arrays, return_shape=True)(*arrays)
        outputs = _Evaluation(closed.jaxpr, closed.consts, arrays).run()
        return jax.tree.unflatten(jax.tree.structure(shape), outputs)

    return rewritten


# What a convolution the rewrite does not enter lies inside, as a user wrote it.
_WITHIN = {
    "remat2": "jax.checkpoint",
    "checkpoint": "jax.checkpoint",
    "custom_jvp_call": "a custom_jvp",
    "custom_vjp_call": "a custom_vjp",
    "custom_vjp_call_jaxpr": "a custom_vjp",
    "scan": "lax.scan",
    "while": "a while_loop",
    "cond": "lax.cond",
}


def _convolutions(jaxpr: jcore.Jaxpr, inside: str | None = None) -> Iterator[tuple]:
    """Each convolution of `jaxpr` and its nested jaxprs: (its equation, what it lies inside,
    other than a jit, or None)."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == CONV:
            yield eqn, inside
        within = inside if name in CALLS else inside or _WITHIN.get(name, name)
        for sub in jcore.jaxprs_in_params(eqn.params):
            yield from _convolutions(sub, within)


def convolution_forms(jaxpr: jcore.Jaxpr) -> dict[str, int]:
    """How `rewrite_convolutions` takes the convolutions of `jaxpr`: the count of each form
    (`winograd`, `im2col`), and of each reason one stays native (`native: kernel dilation`)."""
    forms = Counter()
    for eqn, inside in _convolutions(jaxpr):
        lhs, rhs = (v.aval for v in eqn.invars)
        reason = f"inside {inside}" if inside else conv_unsupported(eqn.params, lhs, rhs)
        if reason:
            forms[f"native: {reason}"] += 1
        else:
            spatial = eqn.params["dimension_numbers"].rhs_spec
            kernel = (*(rhs.shape[d] for d in spatial[2:]), rhs.shape[spatial[1]])
            forms[conv.fast_form(kernel, tuple(eqn.params["window_strides"]))] += 1
    return dict(forms)
