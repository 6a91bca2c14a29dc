"""Random affine augmentation of training images on the device: shifts, rotations and zooms, each
image its own, drawn from the step's key inside the compiled epoch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mnist_jax.config import Config, Hyperparameters, is_on, numbers

AUGMENTATIONS = ("augment_shift", "augment_rotation", "augment_scale")


def affine(
    images: jax.Array, shifts: jax.Array, angles: jax.Array, scales: jax.Array
) -> jax.Array:
    """`images` (N, H, W, C) each moved by its own affine map about the image's centre: zoomed by
    `scales` (N,), rotated by `angles` (N,; radians, counter-clockwise as the image is shown, rows
    down), then shifted by `shifts` (N, 2; rows, columns). Each output pixel reads the input at
    the inverse map's point, bilinearly; points outside the image read zero."""
    n, height, width, _ = images.shape
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2], images.dtype)
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=images.dtype),
        jnp.arange(width, dtype=images.dtype),
        indexing="ij",
    )
    # (N, H, W): each output pixel's offset from the centre, less the shift
    dy = rows - centre[0] - shifts[:, 0, None, None]
    dx = cols - centre[1] - shifts[:, 1, None, None]
    cos, sin = (f(angles)[:, None, None] / scales[:, None, None] for f in (jnp.cos, jnp.sin))
    # the inverse rotation (rows grow downwards, so a counter-clockwise turn as shown maps
    # (dy, dx) to (dy cos - dx sin, dx cos + dy sin)), then the inverse zoom
    source_y = centre[0] + cos * dy + sin * dx
    source_x = centre[1] - sin * dy + cos * dx
    return _bilinear(images, source_y, source_x)


def _bilinear(images: jax.Array, y: jax.Array, x: jax.Array) -> jax.Array:
    """`images` (N, H, W, C) read at the points (y, x) (N, H, W), bilinearly, zero outside."""
    n, height, width, _ = images.shape
    y0, x0 = jnp.floor(y), jnp.floor(x)
    wy, wx = y - y0, x - x0
    batch = jnp.arange(n)[:, None, None]
    out = 0
    for dy, weight_y in ((0, 1 - wy), (1, wy)):
        for dx, weight_x in ((0, 1 - wx), (1, wx)):
            r, c = (y0 + dy).astype(jnp.int32), (x0 + dx).astype(jnp.int32)
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            value = images[batch, jnp.clip(r, 0, height - 1), jnp.clip(c, 0, width - 1)]
            out = out + jnp.where(inside, weight_y * weight_x, 0)[..., None] * value
    return out.astype(images.dtype)


def random_affine(
    images: jax.Array, key: jax.Array, shift: float, rotation: float, scale: float
) -> jax.Array:
    """`affine` with each image's map drawn uniformly: a shift of up to `shift` pixels along each
    axis, a rotation of up to `rotation` degrees either way, a zoom in [1 - scale, 1 + scale]."""
    n = images.shape[0]
    shift_key, angle_key, scale_key = jax.random.split(key, 3)
    dtype = images.dtype
    shifts = shift * jax.random.uniform(shift_key, (n, 2), dtype, -1, 1)
    angles = jnp.deg2rad(rotation) * jax.random.uniform(angle_key, (n,), dtype, -1, 1)
    scales = 1 + scale * jax.random.uniform(scale_key, (n,), dtype, -1, 1)
    return affine(images, shifts, angles, scales)


def augmentation(config: Config, hyperparameters: Hyperparameters | None = None):
    """The training images' augmentation of `config` (a grid cell's traced strengths, if
    `hyperparameters` gives them): `augment(images, key) -> images`, or None where every
    strength is zero."""
    values = numbers(config, hyperparameters)
    strengths = [values[name] for name in AUGMENTATIONS]
    if not any(is_on(s) for s in strengths):
        return None

    def augment(images: jax.Array, key: jax.Array) -> jax.Array:
        return random_affine(images, key, *strengths)

    return augment
