"""The convolutions of a model you bring, rewritten into the package's forms
(`mnist_jax.models.rewrite`): taken for each framework's convolution, left native where the forms
cannot take one, gradients equal to the native ones in float64, and the same training with the
rewrite on and off."""

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny

from mnist_jax import Config, Model, Variables, train
from mnist_jax.bench.user_cnn import user_cnn
from mnist_jax.models.rewrite import rewrite_convolutions, rewrites
from mnist_jax.reporters import ConsoleReporter
from mnist_jax.steps import Batch, check_model, make_steps

# Each the `cnn` preset's network, or a small CNN of the docs' "Your own model" page, as a
# researcher writes it with that framework's own layers.
FRAMEWORK_CNNS = {
    "mnist_jax.bench.user_cnn:user_cnn": {"im2col": 1, "winograd": 1},
    "benchmarks.framework_cnns:nnx_cnn": {"im2col": 1, "winograd": 1},
    "benchmarks.framework_cnns:linen_cnn": {"im2col": 1, "winograd": 1},
    "benchmarks.framework_cnns:equinox_cnn": {"im2col": 1, "winograd": 1},
    "tests.custom_models:tiny_cnn": {"im2col": 1},
    "tests.framework_models:nnx_cnn": {"im2col": 1},
    "tests.framework_models:linen_cnn": {"im2col": 1},
    "tests.framework_models:equinox_cnn": {"im2col": 1},
}


def train_step_text(config: Config) -> str:
    """The jaxpr of `config`'s train step on a batch of 8, as text."""
    steps = make_steps(config, train_size=64)
    images = jax.ShapeDtypeStruct((8, 28, 28, 1), jnp.uint8)
    batch = Batch(images, jax.ShapeDtypeStruct((8,), jnp.int32), jax.ShapeDtypeStruct((8,), bool))
    state = jax.eval_shape(steps.init, 0)
    return str(jax.make_jaxpr(steps.train_step)(state, batch, jax.random.key(0)))


@pytest.mark.parametrize("model", FRAMEWORK_CNNS)
def test_each_frameworks_convolutions_take_the_fast_forms(model):
    on, off = (Config(model=model, conv_rewrite=mode) for mode in ("on", "off"))
    # Forward and both gradients: none of them a native convolution once rewritten.
    assert "conv_general_dilated" not in train_step_text(on)
    assert "conv_general_dilated" in train_step_text(off)
    assert check_model(on).convolutions == FRAMEWORK_CNNS[model]
    assert check_model(off).convolutions == {"native": sum(FRAMEWORK_CNNS[model].values())}


def test_auto_rewrites_on_a_cpu_alone_and_never_a_built_in_model():
    assert rewrites(Config(platform="cpu"))
    assert not rewrites(Config(platform="gpu")) and not rewrites(Config(platform="tpu"))
    assert rewrites(Config(platform="gpu", conv_rewrite="on"))
    assert not rewrites(Config(platform="cpu", conv_rewrite="off"))
    native = Config(model="cnn", cnn_form="native", conv_rewrite="on")
    assert check_model(native).convolutions == {}
    assert "conv_general_dilated" in train_step_text(native)


def conv(x, w, **options):
    return jax.lax.conv_general_dilated(x, w, **{"window_strides": (1,) * (w.ndim - 2), **options})


def odd_cnn(config):
    """One convolution the forms take, then one of each kind they cannot: dilated, grouped, 1D,
    3D, and one inside a `jax.checkpoint`."""
    shapes = {
        "taken": (3, 3, 1, 4),
        "dilated": (3, 3, 4, 4),
        "grouped": (3, 3, 2, 4),
        "rows": (3, 28, 28),  # 1D: the image's rows as channels along its columns
        "volume": (3, 3, 1, 2, 2),  # 3D: (H, W, 2) volumes, (H, W, D, I, O)
        "remat": (3, 3, 4, 4),
        "out": (7 * 7 * 4 + 28 * 28, 10),
    }

    def init(key):
        keys = jax.random.split(key, len(shapes))
        return {
            name: 0.2 * jax.random.normal(k, shape, jnp.dtype(config.dtype))
            for k, (name, shape) in zip(keys, shapes.items(), strict=True)
        }

    def apply(params, images):
        nhwc = ("NHWC", "HWIO", "NHWC")
        x = jax.nn.relu(conv(images, params["taken"], padding="SAME", dimension_numbers=nhwc))
        x = jnp.tanh(
            conv(x, params["dilated"], padding="SAME", rhs_dilation=(2, 2), dimension_numbers=nhwc)
        )
        x = jnp.tanh(
            conv(
                x, params["grouped"], padding="SAME", feature_group_count=2, dimension_numbers=nhwc
            )
        )
        x = jax.checkpoint(lambda x, w: conv(x, w, padding="SAME", dimension_numbers=nhwc))(
            x, params["remat"]
        )
        volume = jnp.stack([x[..., :2], x[..., 2:]], axis=3)  # (N, 28, 28, 2, 2)
        volume = conv(
            volume, params["volume"], padding="SAME", dimension_numbers=("NHWDC", "HWDIO", "NHWDC")
        )
        x = volume.reshape(x.shape[0], 28, 28, -1)
        pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 4, 4, 1), (1, 4, 4, 1), "VALID")
        rows = conv(
            images[..., 0], params["rows"], padding="SAME", dimension_numbers=("NWC", "WIO", "NWC")
        )
        features = jnp.concatenate([pooled.reshape(len(x), -1), rows.reshape(len(x), -1)], axis=1)
        return features @ params["out"]

    return Model(init, apply)


def test_convolutions_the_forms_cannot_take_stay_native_and_train(data_dir):
    model = odd_cnn(Config())
    checked = check_model(Config(conv_rewrite="on"), model)
    assert checked.convolutions == {
        "im2col": 1,
        "native: kernel dilation": 1,
        "native: feature groups": 1,
        "native: inside jax.checkpoint": 1,
        "native: 3 spatial dimensions": 1,
        "native: 1 spatial dimensions": 1,
    }
    params = jax.eval_shape(lambda: checked.init(jax.random.key(0)))[0]
    images = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    forward = str(
        jax.make_jaxpr(checked.apply, static_argnums=(3, 4))(params, (), images, None, False)
    )
    assert forward.count("conv_general_dilated") == 5  # the five it cannot take
    result = train(tiny(data_dir, conv_rewrite="on", learning_rate=0.01), model=model)
    assert result.history[0].test_accuracy < 0.3 and result.final_test_accuracy > 0.9, [
        m.test_accuracy for m in result.history
    ]
    assert result.convolutions == checked.convolutions


def varied_cnn(config):
    """Convolutions in every shape the forms take: 3x3 over several channels at an odd size
    (Winograd), 5x5 at stride 2 with uneven padding and 1x1 (im2col), channels last and first
    (its bias, relu, unit dimensions and pool in that layout); max and average pools that tile
    their arrays, one dropping a partial window."""
    dtype = jnp.dtype(config.dtype)
    shapes = {
        "first": (3, 3, 1, 6),
        "odd": (3, 3, 6, 8),
        "strided": (8, 8, 5, 5),  # OIHW
        "bias": (8,),
        "point": (1, 1, 8, 4),
        "out": (4, 10),
    }

    def init(key):
        keys = jax.random.split(key, len(shapes))
        return {
            name: 0.3 * jax.random.normal(k, shape, dtype)
            for k, (name, shape) in zip(keys, shapes.items(), strict=True)
        }

    def apply(params, images):
        nhwc = ("NHWC", "HWIO", "NHWC")
        x = jnp.tanh(conv(images, params["first"], padding="SAME", dimension_numbers=nhwc))
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = jnp.tanh(conv(x, params["odd"], padding=((1, 0), (0, 1)), dimension_numbers=nhwc))
        x = conv(
            jnp.moveaxis(x, -1, 1),  # (N, 8, 13, 13), channels first
            params["strided"],
            window_strides=(2, 2),
            padding=((1, 2), (2, 1)),
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
        x = jnp.squeeze(jnp.expand_dims(jax.nn.relu(x + params["bias"][:, None, None]), 1), 1)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        x = conv(jnp.moveaxis(x, 1, -1), params["point"], padding="VALID", dimension_numbers=nhwc)
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
        return x.reshape(len(x), -1) @ params["out"]

    return Model(init, apply)


def test_rewritten_gradients_equal_the_native_ones_in_float64():
    with jax.enable_x64(True):
        model = varied_cnn(Config(dtype="float64"))
        params = model.init(jax.random.key(1))
        images = jax.random.uniform(jax.random.key(2), (5, 28, 28, 1), jnp.float64)
        labels = jnp.arange(5)

        def loss(apply):
            def value(params):
                logits = apply(params, images)
                return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).sum()

            return value

        rewritten = rewrite_convolutions(model.apply)
        forward = str(jax.make_jaxpr(jax.grad(loss(rewritten)))(params))
        assert "conv_general_dilated" not in forward and "reduce_window" not in forward
        assert check_model(Config(dtype="float64", conv_rewrite="on"), model).convolutions == {
            "winograd": 1,
            "im2col": 3,
        }
        np.testing.assert_allclose(
            rewritten(params, images), model.apply(params, images), rtol=1e-12, atol=1e-12
        )
        got, want = jax.grad(loss(rewritten))(params), jax.grad(loss(model.apply))(params)
        for name in want:
            # float64 rounding: the forms sum in another order
            scale = float(jnp.abs(want[name]).max())
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12 * scale)


# At `highest` precision (the default) every product is a true float32 product on every
# platform, so a run with the rewrite on differs from one with it off only by the order of each
# convolution's sums: float32 rounding, about 6e-8 of a value, carried through the steps. With the
# `cnn` preset's recipe (SGD with momentum) this run's parameters differed by at most 6e-5 of a
# tensor's largest value, its losses by 5e-6 of themselves. The tolerances leave 17x and 20x room
# for other CPUs' kernels; a fault in a form (a kernel flipped, padding or stride off by one)
# changes the first step's logits by their own size. Accuracies may differ by one test example
# of 100, an example whose logits tie to rounding. (Adam is not the recipe here: its step is
# +-lr whatever a gradient's size, so a gradient that is zero one way and 1e-9 the other, at a
# relu of a value zero to rounding, moves a weight by a whole step.)
PARAM_TOLERANCE, LOSS_TOLERANCE = 1e-3, 1e-4


def test_a_run_is_the_same_with_the_rewrite_on_and_off(data_dir, tmp_path):
    runs, printed = {}, io.StringIO()
    for mode in ("on", "off"):
        config = tiny(
            data_dir,
            model="mnist_jax.bench.user_cnn:user_cnn",
            conv_rewrite=mode,
            optimizer="sgd",
            learning_rate=0.1,
            momentum=0.9,
            loss_reduction="mean",
        )
        runs[mode] = train(config, str(tmp_path / mode), reporter=ConsoleReporter(printed))
    on, off = runs["on"], runs["off"]
    lines = printed.getvalue().splitlines()
    assert "Convolutions: 1 im2col, 1 winograd (--conv-rewrite off keeps them as written)" in lines
    assert "Convolutions: 2 native (--conv-rewrite on rewrites them)" in lines
    summary = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert summary["convolutions"] == {"im2col": 1, "winograd": 1}
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["convolutions"] == {
        "native": 2
    }
    assert off.final_test_accuracy > 0.9  # it learned: a comparison of two runs that did
    for a, b in zip(on.history, off.history, strict=True):
        assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=0.011)
        assert a.train_loss == pytest.approx(b.train_loss, rel=LOSS_TOLERANCE)
        assert a.test_loss == pytest.approx(b.test_loss, rel=LOSS_TOLERANCE)
    for a, b in zip(jax.tree.leaves(on.params), jax.tree.leaves(off.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=PARAM_TOLERANCE * float(np.abs(b).max()))


def test_the_benchmarks_user_cnn_is_the_cnn_presets_network():
    # Its row is set beside the built-in preset's: the same parameters from the same key, and
    # the same logits to float32 rounding.
    config = Config(model="cnn")
    built_in, user = make_steps(config), make_steps(config, model=user_cnn(config))
    ours, theirs = built_in.init(3).params, user.init(3).params
    for name, layer in ours.items():
        np.testing.assert_array_equal(theirs[name][0], layer["w"])
        np.testing.assert_array_equal(theirs[name][1], layer["b"])
    images = jax.random.randint(jax.random.key(4), (6, 28, 28, 1), 0, 256).astype(jnp.uint8)
    batch = Batch(images, jnp.zeros(6, jnp.int32), jnp.ones(6, bool))
    np.testing.assert_allclose(
        user.eval_step(Variables(theirs), batch)[1],
        built_in.eval_step(Variables(ours), batch)[1],
        rtol=1e-5,
    )
