"""Recipes: schedules, weight decay, clipping, label smoothing and dropout change the update exactly
as Optax's own building blocks (or a closed form) would; the best epoch by validation; presets;
linked grid axes; invalid settings refused."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import Config, data, models, train
from mnist_jax.cli import _grid_axes, main
from mnist_jax.config import PRESETS, ConfigError, preset
from mnist_jax.model import init_params, logits
from mnist_jax.optimizers import learning_rate_schedule, make_optimizer
from mnist_jax.steps import Batch, epoch_key, make_steps
from mnist_jax.sweep import grid_configs, sweep

TRAIN_SIZE, BATCH, EPOCHS = 50, 10, 2  # 5 steps an epoch, 10 in the run
TINY = dict(layer_sizes=(784, 16, 10), batch_size=32, eval_batch_size=62)


def schedule_config(**changes) -> Config:
    return Config(batch_size=BATCH, num_epochs=EPOCHS, learning_rate=0.01, **changes)


def closed_form(name: str, peak: float, total: int, warmup: int):
    """Each schedule written out by hand."""
    def cosine(t, length):
        return 0.5 * (1 + math.cos(math.pi * min(t, length) / length))

    def onecycle(t):
        start, end, boundary = peak / 25, peak / 25 / 1e4, int(warmup / total * total)
        if t <= boundary:
            return peak + (start - peak) * cosine(t, boundary)
        return end + (peak - end) * cosine(t - boundary, total - boundary)

    return {"constant": lambda t: peak,
            "cosine": lambda t: peak * cosine(t, total),
            "linear": lambda t: peak * (1 - min(t, total) / total),
            "warmup_cosine": lambda t: peak * t / warmup if t < warmup else peak * cosine(t - warmup, total - warmup),
            "onecycle": onecycle}[name]


@pytest.mark.parametrize("name", ["constant", "cosine", "warmup_cosine", "linear", "onecycle"])
def test_each_schedule_is_its_closed_form_over_the_runs_steps(name):
    warmup_epochs = 0.4 if name in ("warmup_cosine", "onecycle") else 0.0
    config = schedule_config(schedule=name, warmup_epochs=warmup_epochs)
    schedule = learning_rate_schedule(config, TRAIN_SIZE)
    expected = closed_form(name, 0.01, EPOCHS * TRAIN_SIZE // BATCH, 2)
    for t in range(EPOCHS * TRAIN_SIZE // BATCH + 3):
        got = schedule(t) if callable(schedule) else schedule
        assert float(got) == pytest.approx(expected(t), rel=1e-5, abs=1e-9), t


def run_updates(optimizer: optax.GradientTransformation, steps: int = 12):
    """`steps` updates of MLP parameters by fixed random gradients; the parameters after each."""
    params = init_params(0, (784, 8, 10))
    state, history = optimizer.init(params), []
    for step in range(steps):
        grads = init_params(100 + step, (784, 8, 10), sigma=1.0)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history


def assert_same_updates(got, want, exact: bool):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def biases_spared(params):
    return jax.tree.map(lambda leaf: leaf.ndim >= 2, params)


def hand_schedule(name, warmup=2):
    formula = closed_form(name, 0.01, EPOCHS * TRAIN_SIZE // BATCH, warmup)
    return lambda count: jnp.asarray([formula(t) for t in range(40)], jnp.float32)[count]


HAND_BUILT = {
    "schedule": (dict(schedule="cosine"),
                 lambda: optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(hand_schedule("cosine"))),
                 False),
    "weight_decay": (dict(weight_decay=0.1),
                     lambda: optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(0.1, biases_spared),
                                         optax.scale_by_learning_rate(0.01)), True),
    "weight_decay_sgd_nesterov": (
        dict(weight_decay=0.1, optimizer="sgd", momentum=0.9, nesterov=True),
        lambda: optax.chain(optax.trace(0.9, nesterov=True), optax.add_decayed_weights(0.1, biases_spared),
                            optax.scale_by_learning_rate(0.01)), True),
    "clip_norm": (dict(clip_norm=0.5),
                  lambda: optax.chain(optax.clip_by_global_norm(0.5), optax.scale_by_adam(),
                                      optax.scale_by_learning_rate(0.01)), True),
    "everything": (dict(clip_norm=0.5, weight_decay=0.1, schedule="warmup_cosine", warmup_epochs=0.4),
                   lambda: optax.chain(optax.clip_by_global_norm(0.5), optax.scale_by_adam(),
                                       optax.add_decayed_weights(0.1, biases_spared),
                                       optax.scale_by_learning_rate(hand_schedule("warmup_cosine"))), False),
}


@pytest.mark.parametrize("case", HAND_BUILT)
def test_each_setting_updates_as_a_hand_built_optax_chain(case):
    changes, build, exact = HAND_BUILT[case]
    got = run_updates(make_optimizer(schedule_config(**changes), TRAIN_SIZE))
    want = run_updates(build())
    for step, (a, b) in enumerate(zip(got, want)):
        assert_same_updates(a, b, exact), step


def test_weight_decay_spares_the_biases():
    plain, decayed = (run_updates(make_optimizer(schedule_config(weight_decay=wd), TRAIN_SIZE))[-1] for wd in (0, 0.1))
    for (W, b), (W_decayed, b_decayed) in zip(plain, decayed):
        np.testing.assert_array_equal(b, b_decayed)
        assert not np.allclose(W, W_decayed)


def masked_batch(seed: int = 0, rows: int = 12, real: int = 9) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(jnp.asarray(rng.integers(0, 256, (rows, 28, 28, 1)), jnp.uint8),
                 jnp.asarray(rng.integers(0, 10, rows), jnp.int32), jnp.arange(rows) < real)


def test_label_smoothing_is_optax_cross_entropy_against_smoothed_labels():
    config = Config(layer_sizes=(784, 32, 10), label_smoothing=0.2, optimizer="sgd", learning_rate=0.01)
    steps, batch = make_steps(config), masked_batch()
    state = steps.init(0)

    def independent(params):
        scores = logits(params, batch.images.reshape(12, -1).astype(jnp.float32) / 255)
        targets = optax.smooth_labels(jax.nn.one_hot(batch.labels, 10), 0.2)
        return jnp.sum(jnp.where(batch.mask, optax.softmax_cross_entropy(scores, targets), 0))

    new_state, value = jax.jit(steps.train_step)(state, batch)
    assert float(value) == pytest.approx(float(independent(state.params)), rel=1e-5)
    optimizer = optax.sgd(config.learning_rate)  # linear in the gradient: rounding cannot flip a step
    updates, _ = optimizer.update(jax.grad(independent)(state.params), optimizer.init(state.params))
    assert_same_updates(new_state.params, optax.apply_updates(state.params, updates), exact=False)


def test_dropout_scales_the_kept_units_and_is_off_without_a_key():
    x = jnp.ones((1000, 100))
    dropped = np.asarray(models.dropout(x, 0.3, jax.random.key(0)))
    assert set(np.unique(dropped)) == {0.0, np.float32(1 / 0.7)}
    assert abs((dropped == 0).mean() - 0.3) < 0.01
    assert models.dropout(x, 0.3, None) is x


def test_mlp_dropout_masks_differ_per_step_and_per_seed_and_are_off_at_evaluation():
    config = Config(layer_sizes=(784, 64, 64, 10), dropout=0.5, input_dropout=0.2)
    model = models.mlp(config)
    params = model.init(jax.random.key(0))
    images = jnp.asarray(masked_batch().images, jnp.float32) / 255
    np.testing.assert_array_equal(model.apply(params, images, None), logits(params, images.reshape(12, -1)))
    step_keys = {(seed, step): jax.random.fold_in(epoch_key(seed, 1), step) for seed in (42, 43) for step in (0, 1)}
    outputs = {where: np.asarray(model.apply(params, images, key)) for where, key in step_keys.items()}
    for a in outputs:
        for b in outputs:
            assert (a == b) == np.array_equal(outputs[a], outputs[b]), (a, b)
    np.testing.assert_array_equal(outputs[(42, 0)], model.apply(params, images, step_keys[(42, 0)]))
    state = make_steps(config).init(0)
    step = jax.jit(make_steps(config).train_step)
    batch = masked_batch()
    assert float(step(state, batch, step_keys[(42, 0)])[1]) != float(step(state, batch, step_keys[(42, 1)])[1])


def test_cnn_dropout_is_off_at_evaluation():
    model = models.cnn(Config(model="cnn", dropout=0.5))
    params = model.init(jax.random.key(0))
    images = jnp.asarray(masked_batch().images, jnp.float32) / 255
    plain = models.cnn(Config(model="cnn")).apply(params, images)
    np.testing.assert_array_equal(model.apply(params, images, None), plain)
    assert not np.allclose(model.apply(params, images, jax.random.key(1)), plain)


# The best epoch by validation accuracy --------------------------------------------------------

def ascent_after(steps: int) -> optax.GradientTransformation:
    """Adam for `steps` steps, then the same steps uphill: validation accuracy peaks, then falls."""
    adam = optax.adam(0.01)

    def update(grads, state, params=None):
        count, inner = state
        updates, inner = adam.update(grads, inner, params)
        sign = jnp.where(count < steps, 1.0, -20.0)
        return jax.tree.map(lambda u: sign * u, updates), (count + 1, inner)

    return optax.GradientTransformation(lambda params: (jnp.zeros((), jnp.int32), adam.init(params)), update)


def numpy_accuracy(params, images, labels) -> float:
    x = images.reshape(len(images), -1).astype(np.float64) / 255
    for W, b in params[:-1]:
        x = np.tanh(x @ W + b)
    return float(np.mean(np.argmax(x @ params[-1][0] + params[-1][1], axis=1) == labels))


def test_the_best_epoch_is_recorded_and_its_parameters_kept(data_dir, tmp_path, capsys):
    config = Config(layer_sizes=(784, 16, 10), batch_size=20, eval_batch_size=50, num_epochs=5,
                    validation_size=100, data_dir=data_dir)
    result = train(config, str(tmp_path / "run"), optimizer=ascent_after(20))  # 10 steps an epoch
    validation = [m.validation_accuracy for m in result.history]
    best = int(np.argmax(validation))
    assert 1 <= best < 5 and validation[-1] < validation[best]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"] == {"epoch": best, "validation_accuracy": validation[best],
                               "test_accuracy": result.history[best].test_accuracy,
                               "test_loss": result.history[best].test_loss}
    with np.load(tmp_path / "run" / "params-best.npz") as f:
        kept = [(f[f"W{i}"], f[f"b{i}"]) for i in range(2)]
    images, labels = data.load_split("train", data_dir)
    assert numpy_accuracy(kept, images[200:], labels[200:]) == pytest.approx(validation[best], abs=1e-9)
    test_images, test_labels = data.load_split("test", data_dir)
    assert numpy_accuracy(kept, test_images, test_labels) == pytest.approx(summary["best"]["test_accuracy"])
    assert main(["eval", str(tmp_path / "run"), "--best"]) == 0
    assert f"test accuracy {100 * summary['best']['test_accuracy']:.2f}%" in capsys.readouterr().out
    plain = train(config.replace(validation_size=0, num_epochs=1), str(tmp_path / "plain"))
    assert plain.best_epoch is None and not (tmp_path / "plain" / "params-best.npz").exists()
    assert main(["eval", str(tmp_path / "plain"), "--best"]) == 2
    assert "has no params-best.npz" in capsys.readouterr().err


def test_a_sweep_records_each_seeds_best_epoch(data_dir):
    config = Config(**TINY, num_epochs=3, validation_size=100, data_dir=data_dir, learning_rate=0.01)
    result = sweep(config, [1, 2, 3])
    best = result.summary()["best"]
    validation = result.histories[:, :, result.metrics.index("validation_accuracy")]
    test = result.histories[:, :, result.metrics.index("test_accuracy")]
    assert best["epochs"] == [int(np.argmax(row)) for row in validation]
    assert best["test_accuracy"]["mean"] == pytest.approx(np.mean([t[e] for t, e in zip(test, best["epochs"])]))


def test_recipes_resume_bit_identically_with_the_best_parameters(data_dir, tmp_path):
    """Dropout, a schedule, weight decay, clipping and label smoothing, stopped part-way through an
    epoch on the stream path and resumed, end exactly where an uninterrupted run ends."""
    recipe = ["--dropout", "0.3", "--input-dropout", "0.1", "--schedule", "warmup_cosine", "--warmup-epochs", "1",
              "--weight-decay", "0.01", "--clip-norm", "1", "--label-smoothing", "0.1", "--validation-size", "20"]
    stopped, whole = str(tmp_path / "stopped"), str(tmp_path / "whole")
    worker = [sys.executable, "-m", "tests.interrupt_worker", data_dir]
    assert subprocess.run([*worker, stopped, "2", "stream", *recipe]).returncode == 130
    with open(os.path.join(stopped, "summary.json")) as f:
        assert json.load(f)["status"] == "interrupted"
    assert main(["train", "--resume", stopped, "--quiet"]) == 0
    assert subprocess.run([*worker, whole, "0", "stream", *recipe]).returncode == 0
    for name in ("params.npz", "params-best.npz"):
        with np.load(os.path.join(stopped, name)) as a, np.load(os.path.join(whole, name)) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), name
    histories = []
    for run in (stopped, whole):
        with open(os.path.join(run, "summary.json")) as f:
            histories.append([{k: v for k, v in m.items() if "second" not in k} for m in json.load(f)["history"]])
    assert histories[0] == histories[1]


# Presets, grids and refusals ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_and_trains_one_epoch(name, data_dir):
    config = preset(name).replace(num_epochs=1, warmup_epochs=min(preset(name).warmup_epochs, 0.5), data_dir=data_dir)
    result = train(config)
    assert [m.epoch for m in result.history] == [0, 1]
    assert all(np.isfinite([m.train_loss, m.test_loss]).all() for m in result.history)
    assert result.history[1].train_accuracy > result.history[0].train_accuracy


def test_linked_grid_axes_set_their_settings_together(data_dir, tmp_path, capsys):
    axes = _grid_axes([["optimizer/lr/momentum", "adam/0.01/none", "sgd/0.1/0.9"], ["dropout", "0", "0.5"]])
    assert axes == {("optimizer", "learning_rate", "momentum"): [("adam", 0.01, None), ("sgd", 0.1, 0.9)],
                    "dropout": [0.0, 0.5]}
    cells = [settings for settings, _ in grid_configs(Config(), axes)]
    assert cells == [{"optimizer": o, "learning_rate": lr, "momentum": m, "dropout": d}
                     for o, lr, m in axes[("optimizer", "learning_rate", "momentum")] for d in (0.0, 0.5)]
    flags = ["--layer-sizes", "784,16,10", "--batch-size", "32", "--eval-batch-size", "62", "--epochs", "1",
             "--data-dir", data_dir, "--seeds", "2", "--loss-reduction", "mean"]
    out = tmp_path / "grid"
    assert main(["sweep", *flags, "--grid", "optimizer/lr/momentum", "adam/0.01/none", "sgd/0.1/0.9",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "grid.json").read_text())
    assert saved["axes"] == {"optimizer/learning_rate/momentum": [["adam", 0.01, None], ["sgd", 0.1, 0.9]]}
    assert [(c["config"]["optimizer"], c["config"]["learning_rate"], c["config"]["momentum"])
            for c in saved["cells"]] == [("adam", 0.01, None), ("sgd", 0.1, 0.9)]
    with pytest.raises(ConfigError, match="gives 2 values for 3 settings"):
        _grid_axes([["optimizer/lr/momentum", "adam/0.01"]])


# One bad value per setting is in test_faults.py; these are the other ways to get a recipe wrong.
INVALID = {
    "stray_warmup": (["--warmup-epochs", "1"], "warmup_epochs applies to the warmup_cosine and onecycle"),
    "onecycle": (["--schedule", "onecycle"], "the onecycle schedule needs warmup_epochs > 0"),
    "whole_run_warmup": (["--schedule", "onecycle", "--warmup-epochs", "5"], "warmup_epochs must lie in [0, num_"),
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


def test_a_config_file_with_a_bad_recipe_names_the_line(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('schedule = "cosine"\ndropout = 1.5\n')
    with pytest.raises(ConfigError, match=r"recipe.toml: line 2: dropout must lie in \[0, 1\)"):
        from mnist_jax.config import read_config_file
        read_config_file(str(path))
