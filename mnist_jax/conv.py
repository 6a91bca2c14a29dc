"""The CNN's layers as plain functions on NHWC images: convolution, in each form XLA can be given
it, and 2x2 pooling.

A convolution of HWIO kernel `w` can reach XLA three ways, the same sums each time: `native`,
`lax.conv_general_dilated`; `im2col`, the kernel's shifted windows side by side (one matmul of
all of them); `shifted`, one matmul per kernel position, summed. Which is fastest inside an
epoch's scan depends on XLA's backend (jax-ml/jax#12868 reports convolutions in loops far slower
than matmuls on the CPU); `FORM` is the one `benchmarks/conv_forms.py` measured fastest here.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _windows(x: jax.Array, kh: int, kw: int) -> list[jax.Array]:
    """Every kernel position's shifted view of `x` (already padded), row by row: (N, H', W', C) each."""
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return [x[:, dy:dy + h, dx:dx + w, :] for dy in range(kh) for dx in range(kw)]


def _native(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _im2col(x: jax.Array, w: jax.Array) -> jax.Array:
    kh, kw, _, out = w.shape
    return jnp.concatenate(_windows(x, kh, kw), axis=-1) @ w.reshape(-1, out)


def _shifted(x: jax.Array, w: jax.Array) -> jax.Array:
    kh, kw = w.shape[:2]
    return sum(window @ w[i // kw, i % kw] for i, window in enumerate(_windows(x, kh, kw)))


FORMS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {"native": _native, "im2col": _im2col,
                                                                  "shifted": _shifted}
FORM = "im2col"


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array, padding: str = "same", form: str | None = None) -> jax.Array:
    """A stride-1 convolution of NHWC images `x` with an HWIO kernel `w`, plus bias `b`: `same`
    padding keeps the size (odd kernels), `valid` shrinks it by the kernel's size less one.
    `form` (default: `FORM`) picks how XLA is given it."""
    kh, kw = w.shape[:2]
    if padding == "same":
        x = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    return FORMS[form or FORM](x, w) + b


def pool2d(x: jax.Array, kind: str = "avg") -> jax.Array:
    """2x2 pooling with stride 2 (`avg` or `max`); an odd last row or column is dropped, as 'VALID'
    pooling does."""
    n, h, w, c = x.shape
    windows = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    return windows.mean(axis=(2, 4)) if kind == "avg" else windows.max(axis=(2, 4))
