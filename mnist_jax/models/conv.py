"""The CNN's layers as plain functions on NHWC images: a convolution then relu then 2x2 pooling,
in each form XLA can be given it.

A convolution of HWIO kernel `w` can reach XLA three ways, the same sums each time (`FORMS`):
`native`, `lax.conv_general_dilated`; `im2col`, the kernel's shifted windows side by side (one
matmul of all of them); `shifted`, one matmul per kernel position, summed. A fourth form,
`space_to_depth`, computes the convolution and its pooling together: one `im2col` convolution of
the image's 2x2 blocks, each output pixel a whole pooling window. A fifth, `winograd`, computes
each 3x3 convolution of more than one input channel by Winograd's F(2x2, 3x3)
(`mnist_jax.models.winograd`), its 2x2 output tiles the pooling windows, and the rest as `im2col`
(its weight gradient written out). Which is fastest inside an epoch's scan depends on XLA's backend
and on the network (jax-ml/jax#12868 reports convolutions in loops far slower than matmuls on the
CPU); `benchmarks/conv_forms.py` measures them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mnist_jax.models import winograd

SPACE_TO_DEPTH, WINOGRAD = "space_to_depth", "winograd"


def _windows(x: jax.Array, kh: int, kw: int, strides: tuple[int, int] = (1, 1)) -> list[jax.Array]:
    """Every kernel position's shifted view of `x` (already padded), row by row, at `strides`:
    (N, H', W', C) each."""
    (sh, sw), (h, w) = strides, ((x.shape[1] - kh) // strides[0], (x.shape[2] - kw) // strides[1])
    return [
        x[:, dy : dy + sh * h + 1 : sh, dx : dx + sw * w + 1 : sw]
        for dy in range(kh)
        for dx in range(kw)
    ]


def _native(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _patches(x: jax.Array, kh: int, kw: int, strides: tuple[int, int] = (1, 1)) -> jax.Array:
    """The windows side by side: (N, H', W', kh * kw * C), a row per output pixel."""
    return jnp.concatenate(_windows(x, kh, kw, strides), axis=-1)


def _im2col(x: jax.Array, w: jax.Array) -> jax.Array:
    return _patches(x, *w.shape[:2]) @ w.reshape(-1, w.shape[-1])


@jax.custom_vjp
def _patches_matmul(patches: jax.Array, w: jax.Array) -> jax.Array:
    """`patches @ w` for `patches` (..., K) and `w` (K, O), its weight gradient written as one
    matmul over every pixel, `patches^T @ dy`: autodiff's transposes `dy` first, and XLA's CPU
    backend then runs a slower dot."""
    return patches @ w


def _patches_matmul_forward(patches, w):
    return patches @ w, (patches, w)


def _patches_matmul_backward(residuals, dy):
    patches, w = residuals
    return dy @ w.T, patches.reshape(-1, w.shape[0]).T @ dy.reshape(-1, w.shape[1])


_patches_matmul.defvjp(_patches_matmul_forward, _patches_matmul_backward)


def _shifted(x: jax.Array, w: jax.Array) -> jax.Array:
    kh, kw = w.shape[:2]
    return sum(window @ w[i // kw, i % kw] for i, window in enumerate(_windows(x, kh, kw)))


FORMS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "im2col": _im2col,
    "shifted": _shifted,
    "native": _native,
}
# The forms a CNN layer can take (`Config.cnn_form`): a convolution's, then the two that fold in
# its pooling.
LAYER_FORMS = (*FORMS, SPACE_TO_DEPTH, WINOGRAD)


def fast_form(kernel_shape: tuple[int, ...], strides: tuple[int, int] = (1, 1)) -> str:
    """The form `conv_valid` gives an HWIO kernel of `kernel_shape` at `strides`."""
    if (*kernel_shape[:2], *strides) == (3, 3, 1, 1) and kernel_shape[2] > 1:
        return WINOGRAD
    return "im2col"


def conv_valid(x: jax.Array, w: jax.Array, strides: tuple[int, int] = (1, 1)) -> jax.Array:
    """The 'VALID' convolution of NHWC images `x` (already padded) with an HWIO kernel `w` at
    `strides`, in the form fastest inside a CPU's scan for the `cnn` preset's layers
    (`fast_form`): Winograd's F(2x2, 3x3) for a 3x3 stride-1 kernel over several channels, else
    `im2col` with its weight gradient as one matmul."""
    if fast_form(w.shape, strides) == WINOGRAD:
        return winograd.conv(x, w)
    return _patches_matmul(_patches(x, *w.shape[:2], strides), w.reshape(-1, w.shape[-1]))


def _pad_same(x: jax.Array, kh: int, kw: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))


def conv2d(
    x: jax.Array, w: jax.Array, b: jax.Array, padding: str = "same", form: str = "im2col"
) -> jax.Array:
    """A stride-1 convolution of NHWC images `x` with an HWIO kernel `w`, plus bias `b`: `same`
    padding keeps the size (odd kernels), `valid` shrinks it by the kernel's size less one.
    `form` (one of `FORMS`) picks how XLA is given it."""
    return FORMS[form](_pad_same(x, *w.shape[:2]) if padding == "same" else x, w) + b


def pool2d(x: jax.Array, kind: str = "avg") -> jax.Array:
    """2x2 pooling with stride 2 (`avg` or `max`); an odd last row or column is dropped, as 'VALID'
    pooling does."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    if kind == "max":
        return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    # The mean as adds of each window's rows, then of its columns (the two halves of a row pair's
    # channels): as a reduction over the window's axes, XLA's CPU backend takes longer.
    pairs = x.reshape(n, h // 2, 2, w // 2, 2 * c)
    rows = pairs[:, :, 0] + pairs[:, :, 1]
    return (rows[..., :c] + rows[..., c:]) / 4


def _space_to_depth(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, H/2, W/2, 4C): each 2x2 block of pixels as one pixel, its channels row
    by row."""
    n, h, w, c = x.shape
    return (
        x.reshape(n, h // 2, 2, w // 2, 2, c)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(n, h // 2, w // 2, 4 * c)
    )


def _block_kernel(w: jax.Array) -> jax.Array:
    """`w` (k, k, C, O) as the (s, s, 4C, 4O) kernel, s = k // 2 + 1, that maps the space-to-depth
    image to 2x2 blocks of `w`'s outputs. Output (2i + a, 2j + b) reads pixels (2i + a + u,
    2j + b + v) for u, v < k: `w` shifted by (a, b) in a window of 2s x 2s pixels."""
    k, _, c, o = w.shape
    s = k // 2 + 1
    # (2s, 2s, C, 4, O)
    shifted = jnp.stack(
        [
            jnp.pad(w, ((a, 2 * s - k - a), (b, 2 * s - k - b), (0, 0), (0, 0)))
            for a in (0, 1)
            for b in (0, 1)
        ],
        axis=-2,
    )
    return (
        shifted.reshape(s, 2, s, 2, c, 4 * o)
        .transpose(0, 2, 1, 3, 4, 5)
        .reshape(s, s, 4 * c, 4 * o)
    )


def _conv_relu_pool_space_to_depth(
    x: jax.Array, w: jax.Array, b: jax.Array, pooling: str, normalize: Callable
) -> jax.Array:
    k = w.shape[0]
    # The rows and columns the pools read (an odd last output row is dropped), padded to even.
    h, wd = (x.shape[1] - k + 1) // 2 * 2 + k - 1, (x.shape[2] - k + 1) // 2 * 2 + k - 1
    # the padding meets zero weights only
    x = jnp.pad(x[:, :h, :wd], ((0, 0), (0, h % 2), (0, wd % 2), (0, 0)))
    # (N, H/2, W/2, 4O): each pixel a 2x2 window
    blocks = _im2col(_space_to_depth(x), _block_kernel(w))
    blocks = jax.nn.relu(normalize(blocks.reshape(*blocks.shape[:3], 4, w.shape[-1])) + b)
    return blocks.mean(axis=3) if pooling == "avg" else blocks.max(axis=3)


def conv_relu_pool(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    padding: str = "same",
    pooling: str = "avg",
    form: str = "im2col",
    normalize: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """A CNN layer: `pool2d(relu(normalize(conv) + b), pooling)`, `conv` the convolution of `x`
    with `w` at `padding` in `form` (one of `FORMS`; `space_to_depth`, the pooling windows as
    channels of one convolution; or `winograd`, F(2x2, 3x3) where `w` is 3x3 and has more than
    one input channel, else `im2col` with its weight gradient as one matmul). `normalize`
    (BatchNorm, say) is given the convolution's outputs in the form's own layout, channels last,
    so it may only treat each channel's values alike."""
    x = _pad_same(x, *w.shape[:2]) if padding == "same" else x
    # The forms that fold in the pooling compute only the outputs its windows read; BatchNorm's
    # statistics need an odd last row or column too.
    odd = any((side - k + 1) % 2 for side, k in zip(x.shape[1:3], w.shape[:2], strict=True))
    folds = normalize is None or not odd
    normalize = normalize or _unchanged
    if form == SPACE_TO_DEPTH and folds:
        return _conv_relu_pool_space_to_depth(x, w, b, pooling, normalize)
    if form == WINOGRAD and folds and fast_form(w.shape) == WINOGRAD:
        return winograd.conv_relu_pool(x, w, b, pooling, normalize)
    if form == WINOGRAD:
        y = conv_valid(x, w)
    else:
        y = FORMS["im2col" if form == SPACE_TO_DEPTH else form](x, w)
    return pool2d(jax.nn.relu(normalize(y) + b), pooling)


def _unchanged(x: jax.Array) -> jax.Array:
    return x
