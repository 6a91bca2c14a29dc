"""The built-in models behind the `Model` interface: the CNN against NumPy, dropout in training
only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import Config, models, preset
from mnist_jax.models import conv
from mnist_jax.models.conv import LAYER_FORMS
from mnist_jax.models.layers import dropout
from mnist_jax.models.mlp import logits
from mnist_jax.steps import epoch_key, make_steps
from tests.helpers import masked_batch


def numpy_cnn(params, images, padding="same", pooling="avg", state=None, training=False):
    """The configurable CNN written out in NumPy: each convolution as explicit kernel windows,
    pooling by reshaping (an odd last row and column dropped). Given BatchNorm's running `state`,
    each hidden layer's pre-bias values are standardised per channel (by the batch's statistics
    in `training`, folded into the state returned beside the logits; else by the state's) and
    scaled."""
    new_state = {}
    if state is not None:
        state = {
            k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in state.items()
        }

    def normalize(name, y):
        if state is None:
            return y
        if training:
            axes = tuple(range(y.ndim - 1))
            mean, var = y.mean(axis=axes), y.var(axis=axes)
            new_state[name] = {
                "mean": 0.99 * state[name]["mean"] + 0.01 * mean,
                "var": 0.99 * state[name]["var"] + 0.01 * var,
            }
        else:
            mean, var = state[name]["mean"], state[name]["var"]
        return (y - mean) / np.sqrt(var + 1e-5) * p[name]["scale"]

    def conv(x, w):
        kh, kw = w.shape[:2]
        if padding == "same":
            x = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        n, h, wd = x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1
        out = np.zeros((n, h, wd, w.shape[-1]))
        for dy in range(kh):
            for dx in range(kw):
                out += x[:, dy : dy + h, dx : dx + wd, :] @ w[dy, dx]
        return out

    def pool(x):
        n, h, wd, c = x.shape
        windows = x[:, : h // 2 * 2, : wd // 2 * 2].reshape(n, h // 2, 2, wd // 2, 2, c)
        return windows.mean(axis=(2, 4)) if pooling == "avg" else windows.max(axis=(2, 4))

    p = {k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in params.items()}
    x = images
    for i in range(len(p) - 2):
        name = f"conv{i}"
        x = pool(np.maximum(normalize(name, conv(x, p[name]["w"])) + p[name]["b"], 0))
    x = normalize("dense0", x.reshape(len(x), -1) @ p["dense0"]["w"])
    logits = np.maximum(x + p["dense0"]["b"], 0) @ p["dense1"]["w"] + p["dense1"]["b"]
    return logits if state is None else (logits, new_state)


CNNS = {  # the CNN's options, one change or more at a time, with the parameter shapes each gives
    "flax": (
        {},
        {
            "conv0": (3, 3, 1, 32),
            "conv1": (3, 3, 32, 64),
            "dense0": (3136, 256),
            "dense1": (256, 10),
        },
    ),
    "speedrun": (
        dict(
            cnn_channels=(24, 32),
            cnn_kernels=(5, 3),
            cnn_padding="valid",
            cnn_pooling="max",
            cnn_dense=64,
        ),
        {"conv0": (5, 5, 1, 24), "conv1": (3, 3, 24, 32), "dense0": (800, 64), "dense1": (64, 10)},
    ),
    "one_conv": (
        dict(cnn_channels=(8,), cnn_kernels=(5,), cnn_pooling="max", cnn_dense=16),
        {"conv0": (5, 5, 1, 8), "dense0": (14 * 14 * 8, 16), "dense1": (16, 10)},
    ),
    "three_convs_odd_sides": (
        dict(cnn_channels=(4, 8, 8), cnn_kernels=(3, 3, 3), cnn_padding="valid", cnn_dense=8),
        {
            "conv0": (3, 3, 1, 4),
            "conv1": (3, 3, 4, 8),
            "conv2": (3, 3, 8, 8),
            "dense0": (8, 8),
            "dense1": (8, 10),
        },
    ),
}


def float64_cnn(case: str, form: str, flat_rows: int = 0):
    """The case's CNN in float64 and `form`, its parameters (biases non-zero too) and three images,
    the first `flat_rows` rows of each a flat grey (equal values in the pooling windows). Call
    under `jax.enable_x64`."""
    changes, _ = CNNS[case]
    config = Config(model="cnn", dtype="float64", cnn_form=form, **changes)
    model = models.cnn(config)
    params = jax.tree.map(lambda a: a + 0.05, model.init(jax.random.key(3)))
    images = np.random.default_rng(0).random((3, 28, 28, 1))
    images[:, :flat_rows] = 0.5
    return config, model, params, images


@pytest.mark.parametrize("form", LAYER_FORMS)
@pytest.mark.parametrize("case", CNNS)
def test_the_cnn_matches_an_independent_numpy_computation(case, form):
    with jax.enable_x64(True):
        config, model, params, images = float64_cnn(case, form)
        got = np.asarray(model.apply(params, jnp.asarray(images)))
    assert got.shape == (3, 10)
    np.testing.assert_allclose(
        got,
        numpy_cnn(params, images, config.cnn_padding, config.cnn_pooling),
        rtol=1e-10,
        atol=1e-12,
    )
    shapes = CNNS[case][1]
    assert {name: layer["w"].shape for name, layer in params.items()} == shapes
    assert all(layer["b"].shape == shapes[name][-1:] for name, layer in params.items())


def float64_batchnorm_cnn(case: str, form: str):
    """The case's CNN with BatchNorm, in float64 and `form`: the model, its parameters (scales
    and biases away from one and zero), running statistics away from their start, and three
    images (the first 8 rows of each a flat grey). Call under `jax.enable_x64`."""
    changes, _ = CNNS[case]
    config = Config(model="cnn", dtype="float64", cnn_form=form, cnn_batchnorm=True, **changes)
    model = models.cnn(config)
    params, state = model.init(jax.random.key(3))
    params = jax.tree.map(lambda a: a + 0.05, params)
    state = jax.tree.map(lambda a: a * 1.5 + 0.1, state)
    images = np.random.default_rng(0).random((3, 28, 28, 1))
    images[:, :8] = 0.5
    return config, model, params, state, images


@pytest.mark.parametrize("form", LAYER_FORMS)
@pytest.mark.parametrize("case", CNNS)
@pytest.mark.device
def test_the_cnns_batchnorm_matches_numpy_in_training_and_at_evaluation(case, form):
    with jax.enable_x64(True):
        config, model, params, state, images = float64_batchnorm_cnn(case, form)
        trained, new_state = model.apply(params, state, jnp.asarray(images), training=True)
        evaluated, kept = model.apply(params, state, jnp.asarray(images), training=False)
    assert model.stateful
    assert set(state) == {*(f"conv{i}" for i in range(len(config.cnn_kernels))), "dense0"}
    expected, expected_state = numpy_cnn(
        params, images, config.cnn_padding, config.cnn_pooling, state, training=True
    )
    np.testing.assert_allclose(trained, expected, rtol=1e-9, atol=1e-11)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12),
        dict(new_state),
        expected_state,
    )
    np.testing.assert_allclose(
        evaluated,
        numpy_cnn(params, images, config.cnn_padding, config.cnn_pooling, state)[0],
        rtol=1e-9,
        atol=1e-11,
    )
    jax.tree.map(np.testing.assert_array_equal, kept, state)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("form", [form for form in LAYER_FORMS if form != "native"])
@pytest.mark.parametrize("case", CNNS)
def test_every_cnn_form_has_the_gradients_of_xlas_own_convolution(case, form, batchnorm):
    """The forms' gradients (what autodiff makes of each one's slices, windows and reductions)
    against `lax.conv_general_dilated`'s, in float64, with pooling windows that hold ties (max
    pooling's gradient shares them), with and without BatchNorm in training."""

    def grads(form):
        if batchnorm:
            _, model, params, state, images = float64_batchnorm_cnn(case, form)

            def loss(p):
                logits, _ = model.apply(p, state, jnp.asarray(images), training=True)
                return jnp.sum(jnp.sin(logits))

        else:
            _, model, params, images = float64_cnn(case, form, flat_rows=8)

            def loss(p):
                return jnp.sum(jnp.sin(model.apply(p, jnp.asarray(images))))

        return jax.grad(loss)(params)

    with jax.enable_x64(True):
        reference, got = grads("native"), grads(form)
    # Float64 rounding, relative to each gradient's largest value (sums that cancel to near zero
    # differ most).
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max()),
        got,
        reference,
    )


def test_winograd_takes_the_3x3_convolutions_of_several_channels_and_leaves_the_rest_to_im2col():
    rng = np.random.default_rng(0)
    for kernel, channels, taken in ((3, 2, True), (3, 1, False), (5, 2, False)):
        x = jnp.asarray(rng.random((2, 12, 12, channels)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(kernel, kernel, channels, 4)), jnp.float32)
        b = jnp.asarray(rng.normal(size=4), jnp.float32)
        im2col, winograd = (
            np.asarray(conv.conv_relu_pool(x, w, b, form=form)) for form in ("im2col", "winograd")
        )
        np.testing.assert_allclose(winograd, im2col, rtol=1e-5, atol=1e-5)
        jaxpr = str(
            jax.make_jaxpr(conv.conv_relu_pool, static_argnums=(3, 4, 5))(
                x, w, b, "same", "avg", "winograd"
            )
        )
        # The rest: im2col's forward pass, bit for bit, its weight gradient written out.
        assert ("name=conv_tiles" in jaxpr) == taken, (kernel, channels)
        assert taken or ("name=_patches_matmul" in jaxpr and np.array_equal(winograd, im2col)), (
            kernel,
            channels,
        )


def test_the_cnn_preset_keeps_flaxs_network():
    cnn = preset("cnn")
    assert (
        cnn.cnn_channels,
        cnn.cnn_kernels,
        cnn.cnn_padding,
        cnn.cnn_pooling,
        cnn.cnn_dense,
    ) == ((32, 64), (3, 3), "same", "avg", 256)


# The CNN presets' `auto` form on each platform: cuDNN's or the TPU's own convolution off the CPU;
# on the CPU the forms their committed results ran in (the conv-forms benchmark's choices).
AUTO_FORMS = {
    ("cnn", "cpu"): "winograd",
    ("cnn-strong", "cpu"): "winograd",
    ("speedrun", "cpu"): "space_to_depth",
    **{(name, p): "native" for name in ("cnn", "cnn-strong", "speedrun") for p in ("gpu", "tpu")},
}


@pytest.mark.parametrize("name, platform", AUTO_FORMS)
def test_auto_takes_the_platforms_form_and_a_run_records_it(name, platform):
    config = preset(name)
    assert config.cnn_form == "auto"
    form = AUTO_FORMS[name, platform]
    assert models.layer_form(config, platform) == form
    assert models.as_run(config, platform) == config.replace(cnn_form=form)
    # a form asked for by name is kept on every platform
    assert models.layer_form(config.replace(cnn_form="im2col"), platform) == "im2col"
    # the model built for that platform is that form: only `native` binds XLA's convolution
    small = config.replace(cnn_channels=(2,) * len(config.cnn_kernels), platform=platform)
    steps = make_steps(small)
    text = str(jax.make_jaxpr(steps.eval_step)(steps.init(0).variables, masked_batch(4, 4)))
    assert ("conv_general_dilated" in text) == (form == "native")


def test_auto_leaves_models_without_the_cnns_layers_as_given():
    assert models.as_run(Config(), "cpu") == Config()
    assert models.as_run(Config(model="tests.custom_models:tiny_cnn"), "gpu").cnn_form == "auto"


def test_dropout_scales_the_kept_units_and_is_off_without_a_key():
    x = jnp.ones((1000, 100))
    dropped = np.asarray(dropout(x, 0.3, jax.random.key(0)))
    assert set(np.unique(dropped)) == {0.0, np.float32(1 / 0.7)}
    assert abs((dropped == 0).mean() - 0.3) < 0.01
    assert dropout(x, 0.3, None) is x


def test_mlp_dropout_masks_differ_per_step_and_per_seed_and_are_off_at_evaluation():
    config = Config(layer_sizes=(784, 64, 64, 10), dropout=0.5, input_dropout=0.2)
    model = models.mlp(config)
    params = model.init(jax.random.key(0))
    images = jnp.asarray(masked_batch().images, jnp.float32) / 255
    np.testing.assert_array_equal(
        model.apply(params, images, None), logits(params, images.reshape(12, -1))
    )
    step_keys = {
        (seed, step): jax.random.fold_in(epoch_key(seed, 1), step)
        for seed in (42, 43)
        for step in (0, 1)
    }
    outputs = {
        where: np.asarray(model.apply(params, images, key)) for where, key in step_keys.items()
    }
    for a in outputs:
        for b in outputs:
            assert (a == b) == np.array_equal(outputs[a], outputs[b]), (a, b)
    np.testing.assert_array_equal(
        outputs[(42, 0)], model.apply(params, images, step_keys[(42, 0)])
    )
    state = make_steps(config).init(0)
    step = jax.jit(make_steps(config).train_step)
    batch = masked_batch()
    assert float(step(state, batch, step_keys[(42, 0)])[1]) != float(
        step(state, batch, step_keys[(42, 1)])[1]
    )


def test_cnn_dropout_is_off_at_evaluation():
    model = models.cnn(Config(model="cnn", dropout=0.5))
    params = model.init(jax.random.key(0))
    images = jnp.asarray(masked_batch().images, jnp.float32) / 255
    plain = models.cnn(Config(model="cnn")).apply(params, images)
    np.testing.assert_array_equal(model.apply(params, images, None), plain)
    assert not np.allclose(model.apply(params, images, jax.random.key(1)), plain)
