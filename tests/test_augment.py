"""Augmentation of the training images (`mnist_jax.augment`): the transforms against closed forms,
and the draws a resumed run, a sweep's seeds and a grid's cells make."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    TINY_FLAGS,
    assert_models_equal_their_runs,
    assert_same_params,
    params_of,
    scores,
)

from mnist_jax import train
from mnist_jax.augment import affine, random_affine
from mnist_jax.cli import main
from mnist_jax.sweep import grid, sweep

IMAGES = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))


def moved(images, shift=(0.0, 0.0), degrees=0.0, scale=1.0):
    n = len(images)
    return affine(
        images,
        jnp.tile(jnp.asarray(shift, images.dtype), (n, 1)),
        jnp.full(n, np.deg2rad(degrees), images.dtype),
        jnp.full(n, scale, images.dtype),
    )


def test_a_zero_transform_returns_the_images_unchanged():
    np.testing.assert_array_equal(moved(IMAGES), IMAGES)
    # and a random one of zero strengths
    np.testing.assert_array_equal(random_affine(IMAGES, jax.random.key(1), 0.0, 0.0, 0.0), IMAGES)


@pytest.mark.parametrize("rows, cols", [(3, 0), (0, -2), (-5, 4), (27, 27), (28, 0)])
def test_a_shift_by_whole_pixels_is_a_roll_with_zeros_coming_in(rows, cols):
    want = np.roll(np.asarray(IMAGES), (rows, cols), axis=(1, 2))
    # what the roll brings round from the far side is zeros
    if rows > 0:
        want[:, :rows] = 0
    elif rows < 0:
        want[:, rows:] = 0
    if cols > 0:
        want[:, :, :cols] = 0
    elif cols < 0:
        want[:, :, cols:] = 0
    np.testing.assert_array_equal(moved(IMAGES, (rows, cols)), want)


def turned(r: float, c: float, degrees: float) -> tuple[float, float]:
    """Pixel (r, c), rows down, turned counter-clockwise as shown about the centre (13.5, 13.5):
    in x-right, y-up coordinates a rotation by `degrees`."""
    theta = np.deg2rad(degrees)
    x, y = c - 13.5, 13.5 - r
    x2, y2 = x * np.cos(theta) - y * np.sin(theta), x * np.sin(theta) + y * np.cos(theta)
    return 13.5 - y2, 13.5 + x2


@pytest.mark.parametrize("degrees", [90.0, -90.0, 180.0, 30.0, -45.0])
def test_a_rotation_moves_a_single_pixel_where_the_closed_form_says(degrees):
    r, c = 6, 20
    image = np.zeros((1, 28, 28, 1), np.float64)
    image[0, r, c] = 1.0
    with jax.enable_x64(True):
        out = np.asarray(moved(jnp.asarray(image), degrees=degrees))[0, ..., 0]
    if degrees % 90 == 0:  # onto a pixel: one 1 where the pixel turns to
        want = np.zeros((28, 28))
        want[tuple(round(v) for v in turned(r, c, degrees))] = 1.0
    else:  # each output pixel reads the input at the point it turns back to, bilinearly
        rows, cols = np.indices((28, 28))
        back_r, back_c = turned(rows, cols, -degrees)
        want = np.maximum(0, 1 - np.abs(back_r - r)) * np.maximum(0, 1 - np.abs(back_c - c))
    np.testing.assert_allclose(out, want, atol=1e-12)


def test_a_zoom_keeps_the_centre_and_scales_the_distance_from_it():
    image = np.zeros((1, 28, 28, 1), np.float64)
    image[0, 9, 13] = image[0, 9, 14] = 1.0  # 4.5 rows above the centre
    with jax.enable_x64(True):
        out = np.asarray(moved(jnp.asarray(image), scale=2.0))[0, ..., 0]
    rows, cols = np.indices(out.shape)
    # a zoom of 2 spreads the mass over twice the length each way: 4 times the pixels
    assert out.sum() == pytest.approx(8.0, abs=1e-9)
    assert (rows * out).sum() / out.sum() == pytest.approx(13.5 - 2 * 4.5, abs=1e-9)
    assert (cols * out).sum() / out.sum() == pytest.approx(13.5, abs=1e-9)


AUGMENTED = dict(augment_shift=2.0, augment_rotation=15.0, augment_scale=0.1)


def test_a_sweep_and_a_grid_draw_what_each_run_draws(tiny_config):
    config = tiny_config.replace(num_epochs=1, **AUGMENTED)
    plain = train(tiny_config.replace(num_epochs=1, seed=3))
    swept = sweep(config, [3, 4])
    assert swept.histories[0, -1, 2] != plain.history[-1].train_loss  # the images did move
    assert_models_equal_their_runs(swept, config, [3, 4], rtol=2e-5, atol=2e-6)
    cells = grid(config, {"augment_rotation": [5.0, 30.0]}, [3])
    assert [cell.trained_with for cell in cells] == [2, 2]  # one program, the strength traced
    assert cells[0].histories[0, -1, 2] != cells[1].histories[0, -1, 2]
    for cell in cells:
        assert_models_equal_their_runs(cell, cell.config, [3], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_a_resumed_run_draws_what_an_uninterrupted_run_draws(data_dir, tmp_path, pipeline):
    flags = [*TINY_FLAGS, "--quiet", "--data-dir", data_dir, "--pipeline", pipeline]
    flags += ["--augment-shift", "2", "--augment-rotation", "15", "--augment-scale", "0.1"]
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    assert main(["train", *flags, "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["train", "--resume", str(resumed), "--epochs", "2"]) == 0
    assert main(["train", *flags, "--epochs", "2", "--out", str(whole)]) == 0
    assert_same_params(params_of(resumed), params_of(whole))
    assert scores(resumed) == scores(whole)
    saved = json.loads((whole / "config.json").read_text())
    assert (saved["augment_shift"], saved["augment_rotation"], saved["augment_scale"]) == (
        2.0,
        15.0,
        0.1,
    )
