"""Settings: validation of every one, presets, config files and the flags on top of them."""

import dataclasses
import json

import jax
import pytest

from mnist_jax import Config, ConfigError
from mnist_jax.cli import _config_from_args, build_parser, main
from mnist_jax.config import read_config_file


def resolve(*argv):
    return _config_from_args(build_parser().parse_args(["train", *argv]))


def test_defaults_are_the_seed_notebooks():
    c = Config()
    assert (c.layer_sizes, c.sigma, c.learning_rate, c.batch_size, c.num_epochs, c.seed) == (
        (784, 200, 100, 10),
        0.1,
        0.001,
        256,
        5,
        42,
    )
    assert (c.b1, c.b2, c.eps) == (0.9, 0.999, 1e-8)


def test_round_trip_through_a_dict():
    config = Config(layer_sizes=(784, 32, 10), dtype="float64", devices=2)
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown config keys: nope"):
        Config.from_dict({"nope": 1})


@pytest.mark.parametrize(
    "suffix, text",
    [
        (
            ".toml",
            'preset = "seed"\nbatch_size = 128\n'
            "layer_sizes = [784, 50, 10]\nlearning_rate = 0.002\n",
        ),
        (
            ".json",
            '{\n  "preset": "seed",\n  "batch_size": 128,\n  "layer_sizes": [784, 50, 10],\n'
            '  "learning_rate": 0.002\n}\n',
        ),
    ],
)
def test_file_over_preset_and_flags_over_file(tmp_path, suffix, text):
    path = tmp_path / f"settings{suffix}"
    path.write_text(text)
    config = resolve("--config", str(path), "--batch-size", "64")
    assert config.batch_size == 64  # flag beats file
    # file beats preset
    assert config.layer_sizes == (784, 50, 10) and config.learning_rate == 0.002
    assert config.dtype == "float64" and config.init == "numpy"  # the file's preset
    # flag's preset wins
    assert resolve("--config", str(path), "--preset", "default").dtype == "float32"


@pytest.mark.parametrize(
    "text, message",
    [
        ("batch_size = 128\nbatch_sise = 3\n", "line 2: key 'batch_sise' is not a setting"),
        (
            'seed = 1\nbatch_size = "many"\n',
            "line 2: key 'batch_size' must be an integer, got 'many'",
        ),
        ('layer_sizes = [784, "a", 10]\n', "line 1: key 'layer_sizes' must be a list of integers"),
        ("shuffle = 1\n", "line 1: key 'shuffle' must be true or false, got 1"),
        ("seed = 3\n\nnum_epochs = 0\n", "line 3: num_epochs must be positive, got 0"),
        ("batch_size = \n", "line 1"),  # TOML syntax error, as tomllib reports it
    ],
)
def test_bad_toml_files_name_the_line_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")
    ) as error:
        read_config_file(str(path))
    assert str(error.value).startswith(str(path))


def test_bad_json_and_missing_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "seed": 1,\n  "eps": "tiny"\n}\n')
    with pytest.raises(ConfigError, match="line 3: key 'eps' must be a number"):
        read_config_file(str(path))
    path.write_text('{\n  "seed": 1\n  "eps": 2\n}\n')
    with pytest.raises(ConfigError, match="line 3: Expecting ','"):
        read_config_file(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(str(tmp_path / "missing.toml"))


def test_cli_rejects_a_bad_config_file_before_any_work(tmp_path, capsys):
    from mnist_jax.cli import main

    path = tmp_path / "bad.toml"
    path.write_text("epochs = 3\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "line 1: key 'epochs' is not a setting" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_a_bad_recipe_names_the_line(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('schedule = "cosine"\ndropout = 1.5\n')
    with pytest.raises(ConfigError, match=r"recipe.toml: line 2: dropout must lie in \[0, 1\)"):
        from mnist_jax.config import read_config_file

        read_config_file(str(path))


@pytest.mark.parametrize(
    "setting",
    [
        {"optimizer": "nope"},
        {"optimizer": "GradientTransformation"},
        {"optimizer": "apply_updates"},
        {"activation": "softmax"},
    ],
)
def test_unknown_optimizers_and_activations_are_rejected(setting):
    with pytest.raises(ConfigError, match=list(setting)[0]):
        Config(**setting)


def absent_platform() -> str:
    """A platform this machine has no devices of (on a host with both, a made-up one)."""
    for platform in ("gpu", "tpu"):
        try:
            jax.devices(platform)
        except RuntimeError:
            return platform
    return "rocm"


ABSENT_PLATFORM = absent_platform()

BAD_FLAGS = {
    "layer_sizes": (["--layer-sizes", "784,0,10"], "layer sizes must be positive"),
    "sigma": (["--sigma", "0"], "sigma must be positive"),
    "activation": (["--activation", "cosh"], "activation must be one of"),
    "optimizer": (["--optimizer", "adamm"], "optimizer must name an Optax optimizer"),
    "model": (["--model", "resnet"], "model must be one of mlp, cnn or package.module:factory"),
    "momentum": (["--momentum", "1.5"], "momentum must lie in [0, 1)"),
    "loss_reduction": (["--loss-reduction", "max"], "loss_reduction must be one of sum, mean"),
    "learning_rate": (["--lr", "-1"], "learning_rate must be positive"),
    "b1": (["--b1", "1"], "b1 and b2 must lie in [0, 1)"),
    "b2": (["--b2", "-0.5"], "b1 and b2 must lie in [0, 1)"),
    "eps": (["--eps=-1e-8"], "eps must not be negative"),
    "batch_size": (["--batch-size", "0"], "batch_size must be positive"),
    "num_epochs": (["--epochs", "0"], "num_epochs must be positive"),
    "seed": (["--seed", "-1"], "seed must lie in [0, 2**32)"),
    "dtype": (["--dtype", "bf16"], "dtype must be one of float32, float64, bfloat16"),
    "init": (["--init", "torch"], "init must be one of"),
    "shuffle": (["--no-shuffle", "--validation-size", "10"], "validation_size needs shuffle"),
    "eval_batch_size": (["--eval-batch-size", "0"], "eval_batch_size must be positive"),
    "pipeline": (["--pipeline", "fast"], "pipeline must be one of"),
    "devices": (["--devices", "0"], "devices must be positive"),
    "platform": (["--platform", ABSENT_PLATFORM], f"no {ABSENT_PLATFORM} devices here"),
    "validation_size": (["--validation-size", "-5"], "validation_size must not be negative"),
    "checkpoint_every": (["--checkpoint-every", "0"], "checkpoint_every must be positive"),
    "keep_checkpoints": (["--keep-checkpoints", "0"], "keep_checkpoints must be positive"),
    "batches_per_chunk": (["--batches-per-chunk", "0"], "batches_per_chunk must be positive"),
    "schedule": (["--schedule", "step"], "schedule must be one of constant, cosine"),
    "warmup_epochs": (
        ["--schedule", "warmup_cosine", "--warmup-epochs", "5"],
        "warmup_epochs must lie in [0, num_",
    ),
    "weight_decay": (["--weight-decay", "-0.1"], "weight_decay must not be negative"),
    "l2": (["--l2", "-0.001"], "l2 must not be negative"),
    "dropout": (["--dropout", "1"], "dropout must lie in [0, 1)"),
    "input_dropout": (["--input-dropout", "-0.1"], "input_dropout must lie in [0, 1)"),
    "label_smoothing": (["--label-smoothing", "1.5"], "label_smoothing must lie in [0, 1)"),
    "clip_norm": (["--clip-norm", "0"], "clip_norm must be positive"),
    "nesterov": (["--optimizer", "sgd", "--nesterov"], "nesterov needs a momentum"),
    "cnn_channels": (
        ["--cnn-channels", "32"],
        "cnn_channels and cnn_kernels must name the same convolutions",
    ),
    "cnn_kernels": (["--cnn-kernels", "4,4"], "cnn_padding same needs odd kernels"),
    "cnn_padding": (["--cnn-padding", "full"], "cnn_padding must be one of same, valid"),
    "cnn_pooling": (["--cnn-pooling", "sum"], "cnn_pooling must be one of avg, max"),
    "cnn_form": (
        ["--cnn-form", "fft"],
        "cnn_form must be one of im2col, shifted, native, space_to_depth, winograd, auto",
    ),
    "conv_rewrite": (["--conv-rewrite", "always"], "conv_rewrite must be one of auto, on, off"),
    "augment_shift": (
        ["--augment-shift", "-1"],
        "augment_shift and augment_rotation must not be negative",
    ),
    "augment_rotation": (
        ["--augment-rotation", "-5"],
        "augment_shift and augment_rotation must not be negative",
    ),
    "augment_scale": (["--augment-scale", "1"], "augment_scale must lie in [0, 1)"),
    "cnn_dense": (
        ["--cnn-dense", "0"],
        "cnn_channels, cnn_kernels and cnn_dense must be positive",
    ),
    "matmul_precision": (
        ["--matmul-precision", "tf32"],
        "matmul_precision must be one of highest, high, default",
    ),
    "deterministic": (["--deterministic=yes"], "ignored explicit argument 'yes'"),
    "cnn_batchnorm": (["--cnn-batchnorm=on"], "ignored explicit argument 'on'"),
}


def test_every_setting_has_a_bad_value_case():
    # Any data_dir is a valid setting: a folder without the dataset is a data error (status 1).
    assert set(BAD_FLAGS) | {"data_dir"} == {f.name for f in dataclasses.fields(Config)}


# Beyond one per setting: other ways to get them wrong.
OTHER_BAD_FLAGS = [
    (["--layer-sizes", "785,100,10"], "layer_sizes must start at 784 and end at 10"),
    (["--layer-sizes", "784,100,9"], "layer_sizes must start at 784 and end at 10"),
    (["--preset", "fastest"], "unknown preset 'fastest'"),
    (["--dtype", "float16"], "dtype must be one of"),
    (["--batch-size", "many"], "invalid int value"),
    (
        ["--cnn-channels", "4,4,4", "--cnn-kernels", "9,9,9", "--cnn-padding", "valid"],
        "the cnn's convolutions and pools leave no pixels of 28x28",
    ),
]


@pytest.mark.parametrize(
    "flags, message",
    [*BAD_FLAGS.values(), *OTHER_BAD_FLAGS],
    ids=[*BAD_FLAGS, *(f"other-{i}" for i in range(len(OTHER_BAD_FLAGS)))],
)
def test_bad_settings_fail_first_with_one_line_and_status_2(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    try:
        status = main(["train", *flags, "--out", str(out)])
    except SystemExit as e:  # argparse's own type errors
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# One bad value per setting is in test_faults.py; these are the other ways to get a recipe wrong.
INVALID = {
    "stray_warmup": (
        ["--warmup-epochs", "1"],
        "warmup_epochs applies to the warmup_cosine and onecycle",
    ),
    "onecycle": (["--schedule", "onecycle"], "the onecycle schedule needs warmup_epochs > 0"),
    "whole_run_warmup": (
        ["--schedule", "onecycle", "--warmup-epochs", "5"],
        "warmup_epochs must lie in [0, num_",
    ),
    "grid": (["--grid", "dropout", "0", "1.5"], "dropout must lie in [0, 1)"),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_recipes_are_refused_in_one_line(case, tmp_path, capsys):
    flags, message = INVALID[case]
    command = "sweep" if "--grid" in flags else "train"
    out = tmp_path / "out"
    assert main([command, *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
