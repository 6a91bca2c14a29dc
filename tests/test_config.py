"""Settings: validation, presets, config files and the flags on top of them."""

import json

import pytest

from mnist_jax import Config, ConfigError
from mnist_jax.cli import _config_from_args, build_parser
from mnist_jax.config import read_config_file


def resolve(*argv):
    return _config_from_args(build_parser().parse_args(["train", *argv]))


def test_defaults_are_the_seed_notebooks():
    c = Config()
    assert (c.layer_sizes, c.sigma, c.learning_rate, c.batch_size, c.num_epochs, c.seed) == (
        (784, 200, 100, 10), 0.1, 0.001, 256, 5, 42)
    assert (c.b1, c.b2, c.eps) == (0.9, 0.999, 1e-8)


def test_round_trip_through_a_dict():
    config = Config(layer_sizes=(784, 32, 10), dtype="float64", devices=2)
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown config keys: nope"):
        Config.from_dict({"nope": 1})


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'preset = "seed"\nbatch_size = 128\nlayer_sizes = [784, 50, 10]\nlearning_rate = 0.002\n'),
    (".json", '{\n  "preset": "seed",\n  "batch_size": 128,\n  "layer_sizes": [784, 50, 10],\n'
              '  "learning_rate": 0.002\n}\n'),
])
def test_file_over_preset_and_flags_over_file(tmp_path, suffix, text):
    path = tmp_path / f"settings{suffix}"
    path.write_text(text)
    config = resolve("--config", str(path), "--batch-size", "64")
    assert config.batch_size == 64  # flag beats file
    assert config.layer_sizes == (784, 50, 10) and config.learning_rate == 0.002  # file beats preset
    assert config.dtype == "float64" and config.init == "numpy"  # the file's preset
    assert resolve("--config", str(path), "--preset", "default").dtype == "float32"  # flag's preset wins


@pytest.mark.parametrize("text, message", [
    ('batch_size = 128\nbatch_sise = 3\n', "line 2: key 'batch_sise' is not a setting"),
    ('seed = 1\nbatch_size = "many"\n', "line 2: key 'batch_size' must be an integer, got 'many'"),
    ('layer_sizes = [784, "a", 10]\n', "line 1: key 'layer_sizes' must be a list of integers"),
    ('shuffle = 1\n', "line 1: key 'shuffle' must be true or false, got 1"),
    ('seed = 3\n\nnum_epochs = 0\n', "line 3: num_epochs must be positive, got 0"),
    ('batch_size = \n', "line 1"),  # TOML syntax error, as tomllib reports it
])
def test_bad_toml_files_name_the_line_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as error:
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
