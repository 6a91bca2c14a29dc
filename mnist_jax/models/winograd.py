"""A 3x3 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016), its
outputs in 2x2 tiles: the tiles of a stride-2 2x2 pooling, so a CNN layer pools them without
interleaving.

Each 4x4 input tile `d` (stride 2) and the 3x3 kernel `g` become 4x4 tiles (`B^T d B`, `G g G^T`);
their 16 positions are 16 matmuls over the channels, and `A^T m A` takes the products back to a
2x2 output tile. That is 16 multiplies per input and output channel for four outputs, where a
direct convolution makes 36: the transforms are adds and subtracts of whole feature maps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# F(2x2, 3x3)'s transforms.
B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combine(coefficients, terms: list[jax.Array]) -> jax.Array:
    """sum(c * t) for coefficients of 0, 1 or -1, as adds and subtracts."""
    out = None
    for c, t in zip(coefficients, terms, strict=True):
        if c:
            out = (t if c > 0 else -t) if out is None else (out + t if c > 0 else out - t)
    return out


def _input_tiles(x: jax.Array) -> jax.Array:
    """`x` (N, H, W, C) -> (16, N * h * w, C): each tile's `B^T d B`, h = (H - 2) // 2 tile
    rows."""
    n, height, width, c = x.shape
    h, w = (height - 2) // 2, (width - 2) // 2
    rows = [x[:, r : r + 2 * h : 2] for r in range(4)]  # tile row r of every tile: (N, h, W, C)
    tiles = []
    for t in (_combine(B_T[a], rows) for a in range(4)):
        cols = [t[:, :, s : s + 2 * w : 2] for s in range(4)]
        tiles += [_combine(B_T[b], cols) for b in range(4)]
    return jnp.stack(tiles).reshape(16, n * h * w, c)


def _kernel_tiles(w: jax.Array) -> jax.Array:
    """`w` (3, 3, C, O) -> (16, C, O): `G g G^T`."""
    g = jnp.asarray(G, w.dtype)
    return jnp.einsum("ak,klco,bl->abco", g, w, g).reshape(16, *w.shape[2:])


def _output_tiles(m: jax.Array, n: int, h: int, w: int) -> jax.Array:
    """The 16 products (16, N * h * w, O) -> (2, 2, N, h, w, O): `A^T m A`."""
    m = m.reshape(4, 4, n, h, w, -1)
    rows = [_combine(A_T[i], list(m)) for i in range(2)]  # (4, N, h, w, O) each
    return jnp.stack([jnp.stack([_combine(A_T[j], list(row)) for j in range(2)]) for row in rows])


@jax.custom_vjp
def conv_tiles(x: jax.Array, w: jax.Array) -> jax.Array:
    """The 'VALID' convolution of `x` (N, H, W, C) with `w` (3, 3, C, O), as (2, 2, N, h, w, O):
    output pixel (2p + i, 2q + j) at [i, j, :, p, q], h = (H - 2) // 2 (an odd last output row
    and column dropped, as 2x2 pooling drops them)."""
    return _conv_tiles_forward(x, w)[0]


def _conv_tiles_forward(x, w):
    n, height, width, _ = x.shape
    v, u = _input_tiles(x), _kernel_tiles(w)
    h, wd = (height - 2) // 2, (width - 2) // 2
    return _output_tiles(jnp.einsum("tpc,tco->tpo", v, u), n, h, wd), (v, u, x.shape)


def _conv_tiles_backward(residuals, dy):
    # Written out, not left to autodiff: the transposes of the transforms' slices are zero pads,
    # which XLA's CPU backend sums far more slowly than these adds.
    v, u, (n, height, width, c) = residuals
    h, w = dy.shape[3:5]
    dm = jnp.stack(
        [
            _combine(
                [A_T[i][a] * A_T[j][b] for i in range(2) for j in range(2)],
                [dy[i, j] for i in range(2) for j in range(2)],
            )
            for a in range(4)
            for b in range(4)
        ]
    ).reshape(16, n * h * w, -1)
    du = jnp.einsum("tpc,tpo->tco", v, dm).reshape(4, 4, c, -1)
    g = jnp.asarray(G, du.dtype)
    dw = jnp.einsum("ak,abco,bl->klco", g, du, g)
    dv = jnp.einsum("tpo,tco->tpc", dm, u).reshape(4, 4, n, h, w, c)
    # Each tile's input gradient B dv B^T, pixel (r, s) of tile (p, q) at (2p + r, 2q + s): tiles
    # overlap, so pixel rows (cols) of one parity sum tile rows r and r + 2 of neighbouring tiles.
    rows = [_combine([B_T[a][r] for a in range(4)], list(dv)) for r in range(4)]
    d = [[_combine([B_T[b][s] for b in range(4)], list(row)) for s in range(4)] for row in rows]

    # a tile pixel's values at tile (p + dp, q + dq) of an (h + 1, w + 1) grid
    def placed(tile, dp, dq):
        return jnp.pad(tile, ((0, 0), (dp, 1 - dp), (dq, 1 - dq), (0, 0)))

    parity = [
        [
            sum(placed(d[r + 2 * dp][s + 2 * dq], dp, dq) for dp in (0, 1) for dq in (0, 1))
            for s in (0, 1)
        ]
        for r in (0, 1)
    ]
    dx = jnp.stack([jnp.stack(row, axis=3) for row in parity], axis=2).reshape(
        n, 2 * h + 2, 2 * w + 2, c
    )
    return jnp.pad(dx, ((0, 0), (0, height - 2 * h - 2), (0, width - 2 * w - 2), (0, 0))), dw


conv_tiles.defvjp(_conv_tiles_forward, _conv_tiles_backward)


def conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """The 'VALID' convolution of `x` (N, H, W, C) with `w` (3, 3, C, O): (N, H - 2, W - 2, O),
    its tiles interleaved (an odd output row or column computed from a row or column of
    padding, then dropped)."""
    n, height, width, _ = x.shape
    h, w_ = height - 2, width - 2
    tiles = conv_tiles(jnp.pad(x, ((0, 0), (0, h % 2), (0, w_ % 2), (0, 0))), w)
    _, _, _, th, tw, o = tiles.shape
    return tiles.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * th, 2 * tw, o)[:, :h, :w_]


def conv_relu_pool(
    x: jax.Array, w: jax.Array, b: jax.Array, pooling: str, normalize: Callable | None = None
) -> jax.Array:
    """`x` (N, H, W, C), already padded, through the 3x3 convolution `w`, `normalize` (given the
    tiles, channels last), bias `b`, relu and 2x2 pooling (`avg` or `max`):
    (N, (H - 2) // 2, (W - 2) // 2, O)."""
    y = conv_tiles(x, w)
    y = jax.nn.relu((y if normalize is None else normalize(y)) + b)
    if pooling == "max":
        return y.max(axis=(0, 1))
    return (
        y[0, 0] + y[0, 1] + y[1, 0] + y[1, 1]
    ) / 4  # adds: XLA's CPU backend reduces leading axes slowly
