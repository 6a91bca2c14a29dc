"""Numerics that mean the same on every platform: the requested matmul precision in every program a
run compiles, recorded and shown; `--deterministic` doing what the platform needs."""

import json
import os
import re

import jax
import jax.numpy as jnp
import pytest

from mnist_jax import Config, ConfigError, make_steps, train
from mnist_jax.cli import main
from mnist_jax.config import MATMUL_PRECISIONS
from mnist_jax.runtime import determinism
from mnist_jax.steps import Batch
from tests.helpers import TINY_FLAGS


def precisions(text: str) -> set[str]:
    """The precisions of every matrix product (and convolution) in a lowered program's
    StableHLO."""
    found = re.findall(
        r"stablehlo\.(?:dot_general|convolution)[^\n]*?precision = \[(\w+), (\w+)\]", text
    )
    return {p for pair in found for p in pair}


@pytest.mark.parametrize("value", MATMUL_PRECISIONS)
@pytest.mark.device
def test_the_steps_carry_the_requested_precision_whatever_the_callers(value):
    config = Config(model="cnn", cnn_channels=(4, 8), cnn_dense=16, matmul_precision=value)
    steps = make_steps(config)
    state = steps.init(0)
    batch = Batch(jnp.zeros((4, 28, 28, 1), jnp.uint8), jnp.zeros(4, jnp.int32), jnp.ones(4, bool))
    other = "default" if value != "default" else "highest"
    with jax.default_matmul_precision(other):  # the caller's own default does not leak in
        train_text = jax.jit(steps.train_step).lower(state, batch).as_text()
        eval_text = jax.jit(steps.eval_step).lower(state.variables, batch).as_text()
    assert precisions(train_text) == precisions(eval_text) == {value.upper()}


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_every_program_a_run_or_sweep_compiles_carries_it(tiny_config, command, monkeypatch):
    """The programs each path compiles ahead of time, captured as they are lowered: the epoch (a
    loop of the step), the evaluation of every split, and a sweep's vmapped versions of both."""
    from mnist_jax import sweep as sweeps
    from mnist_jax.pipelines import device, loops

    lowered = []

    def capture(function, *example_args, donate_argnums=()):
        lowered.append(
            jax.jit(function, donate_argnums=donate_argnums).lower(*example_args).as_text()
        )
        return real(function, *example_args, donate_argnums=donate_argnums)

    real = loops.compile_timed
    monkeypatch.setattr(device, "compile_timed", capture)
    monkeypatch.setattr(sweeps, "compile_timed", capture)
    config = tiny_config.replace(num_epochs=1, matmul_precision="high")
    with jax.default_matmul_precision("default"):
        train(config) if command == "train" else sweeps.sweep(config, [1, 2])
    assert len(lowered) == 2 and all(precisions(text) == {"HIGH"} for text in lowered)


def test_the_precision_is_recorded_and_shown(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *TINY_FLAGS,
                "--epochs",
                "1",
                "--data-dir",
                data_dir,
                "--matmul-precision",
                "high",
                "--deterministic",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["matmul_precision"] == "high" and saved["deterministic"] is True
    assert "float32 (high matmul precision, deterministic)" in capsys.readouterr().out
    assert Config().matmul_precision == "highest"  # true float32 products unless asked otherwise


class FakeDevice:
    def __init__(self, platform):
        self.platform = platform


@pytest.mark.parametrize(
    "started, platforms, outcome",
    [
        # before the backends start: the flag goes in, for a GPU to read
        (False, ["cpu"], "flag added"),
        (True, ["cpu"], "nothing"),  # a CPU's runs are bit-identical already
        # a GPU backend started without it can no longer take it
        (True, ["cpu", "gpu"], "refused"),
    ],
)
def test_deterministic_asks_for_what_the_platform_needs(monkeypatch, started, platforms, outcome):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setattr(determinism, "_backends_started", lambda: started)
    monkeypatch.setattr(jax, "devices", lambda: [FakeDevice(p) for p in platforms])
    if outcome == "refused":
        with pytest.raises(
            ConfigError, match="deterministic needs --xla_gpu_deterministic_ops=true"
        ):
            determinism.make_deterministic()
        return
    determinism.make_deterministic()
    flags = "--xla_force_host_platform_device_count=2" + (
        " " + determinism.GPU_FLAG if outcome == "flag added" else ""
    )
    assert os.environ["XLA_FLAGS"] == flags


def operand_types(text: str) -> set[str]:
    """The element types of every matrix product's and convolution's operands in a lowered
    program's StableHLO."""
    tensor = r"tensor<(?:\d+x)*(\w+)>"
    found = re.findall(
        rf"stablehlo\.(?:dot_general|convolution)[^\n]*: \({tensor}, {tensor}\)", text
    )
    return {t for pair in found for t in pair}


BFLOAT16_MODELS = {
    "mlp": Config(layer_sizes=(784, 32, 10)),
    "cnn": Config(model="cnn", cnn_channels=(4, 8), cnn_dense=16, cnn_form="winograd"),
    "cnn, batchnorm": Config(
        model="cnn", cnn_channels=(4, 8), cnn_dense=16, cnn_batchnorm=True, cnn_form="im2col"
    ),
    # users' BatchNorm CNNs, each written with its framework's layers, as brought (rewritten)
    "linen": Config(model="tests.framework_models:linen_cnn"),
    "equinox": Config(model="tests.framework_models:equinox_cnn", conv_rewrite="off"),
}
# Equinox's BatchNorm normalizes in float32 and, at evaluation, returns float32, so the product
# after it is float32 there: the model's own numerics, which the harness leaves as written.
EVALUATION_IN_FLOAT32 = {"equinox"}


@pytest.mark.parametrize("name", BFLOAT16_MODELS)
def test_bfloat16_computes_the_products_in_bfloat16_and_keeps_the_rest_float32(name):
    config = BFLOAT16_MODELS[name].replace(dtype="bfloat16")
    steps = make_steps(config)
    state = steps.init(0)
    images = jax.random.randint(jax.random.key(1), (8, 28, 28, 1), 0, 256).astype(jnp.uint8)
    batch = Batch(images, jnp.arange(8) % 10, jnp.ones(8, bool))
    key = jax.random.key(2)
    train_text = jax.jit(steps.train_step).lower(state, batch, key).as_text()
    eval_text = jax.jit(steps.eval_step).lower(state.variables, batch).as_text()
    # every product, forward and backward, in bfloat16; and there are products
    assert operand_types(train_text) == {"bf16"}
    assert operand_types(eval_text) == {"bf16"} | (
        {"f32"} if name in EVALUATION_IN_FLOAT32 else set()
    )
    new_state, loss = jax.jit(steps.train_step)(state, batch, key)
    correct, total_loss = jax.jit(steps.eval_step)(new_state.variables, batch)
    kept = jax.tree.leaves((new_state.params, new_state.opt_state, new_state.model_state))
    floating = [a for a in kept if jnp.issubdtype(a.dtype, jnp.floating)]
    assert floating and {a.dtype for a in floating} == {jnp.dtype("float32")}
    assert loss.dtype == total_loss.dtype == jnp.float32
    # The same model in float32, from the same initial state: its logits agree to bfloat16's
    # rounding and no closer (the products really were rounded).
    full = make_steps(config.replace(dtype="float32"))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, full.init(0), state))
    mixed_loss = float(jax.jit(steps.eval_step)(state.variables, batch)[1])
    full_loss = float(jax.jit(full.eval_step)(state.variables, batch)[1])
    assert mixed_loss == pytest.approx(full_loss, rel=3e-2) and mixed_loss != full_loss


def test_bfloat16_is_recorded_and_shown(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    flags = [*TINY_FLAGS, "--epochs", "1", "--data-dir", data_dir, "--dtype", "bfloat16"]
    assert main(["train", *flags, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert "bfloat16 mixed precision, float32 parameters (highest" in capsys.readouterr().out
