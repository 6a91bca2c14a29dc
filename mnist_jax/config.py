"""Every hyperparameter in one place, with the seed notebook's values as defaults."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mnist_jax.errors import ConfigError

DTYPES = ("float32", "float64", "bfloat16")
_INT_TUPLES = ("layer_sizes", "cnn_channels", "cnn_kernels")  # settings held as tuples of ints
MATMUL_PRECISIONS = ("highest", "high", "default")
INITS = ("jax", "numpy", "glorot", "he")
ACTIVATIONS = ("tanh", "relu", "gelu", "sigmoid", "silu", "elu", "softplus")
CNN_PADDINGS = ("same", "valid")
CNN_POOLINGS = ("avg", "max")
LOSS_REDUCTIONS = ("sum", "mean")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear", "onecycle")
WARMUP_SCHEDULES = ("warmup_cosine", "onecycle")
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # package.module:factory
# tfds's training split; with validation_size, the last rows are held out
MNIST_TRAIN_SIZE = 60_000
# a model or optimizer given as a Python object, described after the colon
OBJECT_PREFIX = "object:"


def setting(default, help: str):
    """A `Config` field with its help text: the one description of a setting, shown by
    `mnist-jax train --help`, the docs' flag table and the API reference."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    """A training run's settings, the seed notebook's by default.

    Each field's help (its `metadata["help"]`) says what it does; the command line's flags, the
    documentation's flag table and the API reference all show that one text.
    """

    layer_sizes: tuple[int, ...] = setting(
        (784, 200, 100, 10), "the MLP's layer widths, from 784 to 10"
    )
    sigma: float = setting(0.1, "standard deviation of the MLP's initial weights and biases")
    activation: str = setting(
        "tanh", "the MLP's hidden layers' `jax.nn` function: " + ", ".join(ACTIVATIONS)
    )
    model: str = setting(
        "mlp",
        "`mlp` (the seed's MLP, shaped by `layer_sizes`, `sigma`, `activation` and "
        "`init`), `cnn` (Flax's MNIST CNN) or `package.module:factory`, "
        "`factory(config) -> mnist_jax.Model`",
    )
    cnn_channels: tuple[int, ...] = setting((32, 64), "`cnn`: output channels of each convolution")
    cnn_kernels: tuple[int, ...] = setting(
        (3, 3), "`cnn`: each convolution's (square) kernel size"
    )
    cnn_padding: str = setting(
        "same",
        "`cnn`: `same` (the size kept; odd kernels) or `valid` (shrunk by the kernel "
        "less one) padding of every convolution",
    )
    cnn_pooling: str = setting("avg", "`cnn`: `avg` or `max` 2x2 pooling after each convolution")
    cnn_dense: int = setting(256, "`cnn`: units of the dense hidden layer")
    cnn_batchnorm: bool = setting(
        False,
        "`cnn`: BatchNorm in each convolution and the dense hidden layer, before the bias; its "
        "running statistics are the model's state, which evaluation uses",
    )
    cnn_form: str = setting(
        "auto",
        "`cnn`: how XLA is given each convolution and its pooling (the same "
        "network, its arithmetic in another order): `im2col`, `shifted`, "
        "`native`, `space_to_depth`, `winograd`, or `auto`: `native` on a GPU or TPU, on a CPU "
        "the form measured fastest for the network (see the Performance page); a run records "
        "the form it took",
    )
    conv_rewrite: str = setting(
        "auto",
        "a model you bring (`--model`, a `Model` object): its convolutions and tiling pools "
        "rewritten into the package's forms, `on`; left as written, `off`; or `auto`, on "
        "for a CPU, off elsewhere (see the Your own model page)",
    )
    optimizer: str = setting(
        "adam",
        "any Optax optimizer by name, built as `optax.<name>(learning_rate, ...)` "
        "(`adam`, `adamw`, `sgd`, `rmsprop`, `lion`, ...), or `package.module:factory`, "
        "`factory(config) -> optax.GradientTransformation`",
    )
    learning_rate: float = setting(0.001, "the learning rate (the peak of a schedule)")
    b1: float = setting(0.9, "Adam's first-moment decay, for optimizers that take `b1`")
    b2: float = setting(0.999, "Adam's second-moment decay, for optimizers that take `b2`")
    eps: float = setting(1e-8, "Adam's epsilon, for optimizers that take `eps`")
    momentum: float | None = setting(
        None,
        "momentum, for optimizers that take one (`sgd`, `rmsprop`); unset: "
        "the optimizer's default",
    )
    loss_reduction: str = setting(
        "sum",
        "`sum`: the batch's summed negative log-likelihood (the seed's "
        "objective); `mean`: its mean over the batch's real rows",
    )
    schedule: str = setting(
        "constant",
        "the learning rate over the run, from its peak: `constant`, `cosine` (to "
        "zero), `warmup_cosine` (linear from zero for `warmup_epochs`, then cosine "
        "to zero), `linear` (to zero) or `onecycle` (Optax's cosine one-cycle, "
        "rising for `warmup_epochs`)",
    )
    warmup_epochs: float = setting(
        0.0, "the rising part of `warmup_cosine` and `onecycle`, in epochs (fractions allowed)"
    )
    weight_decay: float = setting(
        0.0, "decoupled weight decay (AdamW's rule) for any optimizer; biases are spared"
    )
    l2: float = setting(
        0.0,
        "a coupled L2 penalty, `l2 / 2` times the weights' squared norm added to the training "
        "objective (as reduced, sum or mean), its gradient going through the optimizer; biases "
        "are spared; the recorded losses stay the plain NLL",
    )
    dropout: float = setting(
        0.0,
        "dropout rate of the hidden units in training (the MLP's hidden layers, the "
        "CNN's dense layer)",
    )
    input_dropout: float = setting(0.0, "dropout rate of the pixels in training")
    label_smoothing: float = setting(
        0.0,
        "mix the one-hot targets with the uniform distribution (the recorded "
        "losses stay the plain NLL)",
    )
    clip_norm: float | None = setting(None, "clip the gradient's global norm to this")
    augment_shift: float = setting(
        0.0, "shift each training image by up to this many pixels along each axis (uniform)"
    )
    augment_rotation: float = setting(
        0.0, "rotate each training image by up to this many degrees either way (uniform)"
    )
    augment_scale: float = setting(
        0.0, "zoom each training image by a factor in [1 - this, 1 + this] (uniform)"
    )
    nesterov: bool = setting(
        False,
        "Nesterov momentum, for optimizers that take it (`sgd`, `rmsprop`); needs `momentum`",
    )
    batch_size: int = setting(256, "training minibatch")
    num_epochs: int = setting(5, "training epochs")
    seed: int = setting(42, "initialisation, shuffling and dropout seed")
    dtype: str = setting(
        "float32",
        "`float32`, `float64`, or `bfloat16`: mixed precision, every matmul and convolution "
        "(the whole forward and backward pass) computed in bfloat16 while parameters, optimizer "
        "state, loss and metrics stay float32",
    )
    matmul_precision: str = setting(
        "highest",
        "precision of every matrix product and convolution: `highest` (true "
        "float32 products, the same meaning on every platform), or the "
        "platform's faster `high` and `default` (TF32 on recent NVIDIA GPUs, "
        "bfloat16 passes on TPUs; on a CPU all three are float32)",
    )
    deterministic: bool = setting(
        False,
        "make the run bit-reproducible where the platform needs a switch for it (a "
        "GPU: XLA's deterministic ops); a CPU's runs are bit-identical anyway",
    )
    init: str = setting(
        "jax",
        "the MLP's weights: `jax` (`sigma * N(0, 1)` from `jax.random`), `numpy` (the same "
        "from `RandomState(seed)`, in the seed notebook's order), or scaled to each layer's "
        "fan, biases zero: `glorot` (uniform, Glorot and Bengio 2010) or `he` (normal, He et "
        "al. 2015, for ReLU)",
    )
    shuffle: bool = setting(
        True, "reshuffle the training set each epoch (off: the raw files' order)"
    )
    eval_batch_size: int = setting(10_000, "batch of the full-split evaluations")
    pipeline: str = setting(
        "device",
        "`device`: each split in device memory, an epoch one compiled program; "
        "`stream`: tf.data chunks streamed to the device",
    )
    devices: int | None = setting(
        None, "use the first N devices (unset: all); every batch is split across them"
    )
    platform: str | None = setting(
        None,
        "`cpu`, `gpu` or `tpu` (unset: JAX's default); an absent one is an "
        "error, never a silent fallback",
    )
    validation_size: int = setting(
        0,
        "hold out the last N examples of tfds's training split (in its stored "
        "order) as a validation split, scored every epoch; needs shuffling",
    )
    checkpoint_every: int = setting(1, "save a checkpoint every N epochs (and after the last)")
    keep_checkpoints: int = setting(3, "keep the newest K checkpoints")
    batches_per_chunk: int = setting(
        16, "`stream` only: batches per transfer (and at most per compiled call)"
    )
    data_dir: str | None = setting(
        None, "tfds data folder (unset: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`)"
    )

    def __post_init__(self):
        for name in _INT_TUPLES:
            object.__setattr__(self, name, tuple(int(n) for n in getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raises ConfigError on the first invalid setting."""
        sizes = self.layer_sizes
        checks = [
            (
                len(sizes) >= 2 and sizes[0] == 784 and sizes[-1] == 10,
                f"layer_sizes must start at 784 and end at 10, got {','.join(map(str, sizes))}",
            ),
            (all(n > 0 for n in sizes), f"layer sizes must be positive, got {sizes}"),
            (self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}"),
            (
                self.devices is None or self.devices > 0,
                f"devices must be positive, got {self.devices}",
            ),
            (
                self.validation_size >= 0,
                f"validation_size must not be negative, got {self.validation_size}",
            ),
            (
                self.validation_size == 0 or self.shuffle,
                "validation_size needs shuffle: the raw-order (seed) preset trains on the whole "
                "training split",
            ),
            (
                self.checkpoint_every > 0,
                f"checkpoint_every must be positive, got {self.checkpoint_every}",
            ),
            (
                self.keep_checkpoints > 0,
                f"keep_checkpoints must be positive, got {self.keep_checkpoints}",
            ),
            (
                self.batches_per_chunk > 0,
                f"batches_per_chunk must be positive, got {self.batches_per_chunk}",
            ),
            (
                self.eval_batch_size > 0,
                f"eval_batch_size must be positive, got {self.eval_batch_size}",
            ),
            (self.num_epochs > 0, f"num_epochs must be positive, got {self.num_epochs}"),
            (self.sigma > 0, f"sigma must be positive, got {self.sigma}"),
            (self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}"),
            (
                0 <= self.b1 < 1 and 0 <= self.b2 < 1,
                f"b1 and b2 must lie in [0, 1), got {self.b1}, {self.b2}",
            ),
            (self.eps >= 0, f"eps must not be negative, got {self.eps}"),
            (
                self.dtype in DTYPES,
                f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}",
            ),
            (
                self.matmul_precision in MATMUL_PRECISIONS,
                f"matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, got "
                f"{self.matmul_precision!r}",
            ),
            (
                self.activation in ACTIVATIONS,
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}",
            ),
            (
                len(self.cnn_channels) == len(self.cnn_kernels) >= 1,
                "cnn_channels and cnn_kernels must name the same convolutions, got "
                f"{self.cnn_channels} and {self.cnn_kernels}",
            ),
            (
                all(n > 0 for n in (*self.cnn_channels, *self.cnn_kernels, self.cnn_dense)),
                "cnn_channels, cnn_kernels and cnn_dense must be positive",
            ),
            (
                self.cnn_padding in CNN_PADDINGS,
                f"cnn_padding must be one of {', '.join(CNN_PADDINGS)}, got {self.cnn_padding!r}",
            ),
            (
                self.cnn_padding == "valid" or all(k % 2 for k in self.cnn_kernels),
                f"cnn_padding same needs odd kernels, got {self.cnn_kernels}",
            ),
            (
                self.cnn_pooling in CNN_POOLINGS,
                f"cnn_pooling must be one of {', '.join(CNN_POOLINGS)}, got {self.cnn_pooling!r}",
            ),
            (
                cnn_feature_side(self) > 0,
                "the cnn's convolutions and pools leave no pixels of 28x28: kernels "
                f"{self.cnn_kernels}, {self.cnn_padding} padding",
            ),
            (
                self.model.isidentifier() or _is_import_path(self.model),
                "model must name a built-in model or be package.module:factory, got "
                f"{self.model!r}",
            ),
            (
                _is_optax_optimizer(self.optimizer) or _is_import_path(self.optimizer),
                "optimizer must name an Optax optimizer (optax.<name>(learning_rate)) or be "
                f"package.module:factory, got {self.optimizer!r}",
            ),
            (
                self.momentum is None or 0 <= self.momentum < 1,
                f"momentum must lie in [0, 1), got {self.momentum}",
            ),
            (
                self.loss_reduction in LOSS_REDUCTIONS,
                f"loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, got "
                f"{self.loss_reduction!r}",
            ),
            (
                self.schedule in SCHEDULES,
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
            ),
            (
                0 <= self.warmup_epochs < self.num_epochs,
                f"warmup_epochs must lie in [0, num_epochs={self.num_epochs}), got "
                f"{self.warmup_epochs}",
            ),
            (
                self.warmup_epochs == 0 or self.schedule in WARMUP_SCHEDULES,
                f"warmup_epochs applies to the {' and '.join(WARMUP_SCHEDULES)} schedules, not "
                f"{self.schedule!r}",
            ),
            (
                self.schedule != "onecycle" or self.warmup_epochs > 0,
                "the onecycle schedule needs warmup_epochs > 0 (its rising part)",
            ),
            (
                self.weight_decay >= 0,
                f"weight_decay must not be negative, got {self.weight_decay}",
            ),
            (self.l2 >= 0, f"l2 must not be negative, got {self.l2}"),
            (0 <= self.dropout < 1, f"dropout must lie in [0, 1), got {self.dropout}"),
            (
                self.augment_shift >= 0 and self.augment_rotation >= 0,
                "augment_shift and augment_rotation must not be negative",
            ),
            (
                0 <= self.augment_scale < 1,
                f"augment_scale must lie in [0, 1), got {self.augment_scale}",
            ),
            (
                0 <= self.input_dropout < 1,
                f"input_dropout must lie in [0, 1), got {self.input_dropout}",
            ),
            (
                0 <= self.label_smoothing < 1,
                f"label_smoothing must lie in [0, 1), got {self.label_smoothing}",
            ),
            (
                self.clip_norm is None or self.clip_norm > 0,
                f"clip_norm must be positive, got {self.clip_norm}",
            ),
            (
                not self.nesterov or self.momentum,
                "nesterov needs a momentum (--momentum 0.9, say)",
            ),
            (self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}"),
            (0 <= self.seed < 2**32, f"seed must lie in [0, 2**32), got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def replace(self, **changes) -> Config:
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every setting."""
        return {
            **dataclasses.asdict(self),
            **{name: list(getattr(self, name)) for name in _INT_TUPLES},
        }

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """The inverse of `to_dict`; unknown keys are an error."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


# The numeric settings a grid varies inside one compiled program, as traced values (see
# `sweep.grid`), passed as `Hyperparameters`: {setting: array} beside the config, which keeps its
# own values.
Hyperparameters = Mapping[str, Any]
TRACEABLE = (
    "learning_rate",
    "b1",
    "b2",
    "eps",
    "momentum",
    "weight_decay",
    "clip_norm",
    "dropout",
    "input_dropout",
    "label_smoothing",
    "l2",
    "augment_shift",
    "augment_rotation",
    "augment_scale",
)


def parameter_dtype(config: Config) -> str:
    """The dtype of the parameters, optimizer state, images, loss and metrics: `dtype`, or float32
    under bfloat16's mixed precision (where only the model's computation is bfloat16)."""
    return "float32" if config.dtype == "bfloat16" else config.dtype


def cnn_conv_sides(config: Config) -> list[int]:
    """The side of each of the cnn's convolutions' output maps: from 28, through its padding, each
    after the 2x2 pool of the one before."""
    sides, side = [], 28
    for kernel in config.cnn_kernels:
        sides.append(side if config.cnn_padding == "same" else side - kernel + 1)
        side = sides[-1] // 2
    return sides


def cnn_feature_side(config: Config) -> int:
    """The side of the cnn's last feature maps, after the last convolution's pool."""
    sides = cnn_conv_sides(config)
    return sides[-1] // 2 if sides else 28


def is_on(value) -> bool:
    """Whether an optional numeric setting is in use: not None and not zero. A traced value is on:
    grid cells that leave a setting off are compiled apart from those that use it."""
    if value is None:
        return False
    return value != 0 if isinstance(value, (int, float)) else True


def numbers(config: Config, hyperparameters: Hyperparameters | None = None) -> dict[str, Any]:
    """The traceable settings' values: the config's, or where `hyperparameters` (a grid cell's
    traced values, one pytree of arrays) gives one, that."""
    given = hyperparameters or {}
    return {name: given.get(name, getattr(config, name)) for name in TRACEABLE}


def optimizer_by_name(config: Config) -> bool:
    """Whether the optimizer is Optax's, built by name from the settings (not a factory's or an
    object's, which read their own numbers)."""
    return not _is_import_path(config.optimizer)


def steps_per_epoch(config: Config, train_size: int) -> int:
    """An epoch's optimizer steps over `train_size` examples: batches of `batch_size`, the last
    one partial."""
    return -(-train_size // config.batch_size)


def extension_blocker(config: Config) -> str | None:
    """Why a run of `config` cannot be extended to more epochs, or None: settings that shape
    themselves over the run's length would have trained its epochs differently."""
    if config.schedule != "constant":
        return (
            f"its {config.schedule} learning-rate schedule is shaped over its "
            f"{config.num_epochs} epochs"
        )
    if not optimizer_by_name(config):
        return (
            "its optimizer comes from a factory or object, which may shape itself over num_epochs"
        )
    return None


def field_type(f: dataclasses.Field) -> type:
    """A setting's value type (for `int | None`, int)."""
    if f.default is not None:
        return type(f.default)
    return {"int": int, "float": float, "str": str}[str(f.type).split("|")[0].strip()]


def settings_label(settings: dict) -> str:
    """`name=value` pairs of a grid cell, lists written comma-separated."""
    return " ".join(
        f"{name}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
        for name, value in settings.items()
    )


def _is_import_path(value: str) -> bool:
    """`package.module:factory`, or the record of an object given in Python."""
    return bool(IMPORT_PATH.match(value)) or value.startswith(OBJECT_PREFIX)


def _is_optax_optimizer(name: str) -> bool:
    import inspect

    import optax

    function = getattr(optax, name, None) if name.isidentifier() else None
    if not inspect.isfunction(function):
        return False
    parameters = list(inspect.signature(function).parameters)
    return bool(parameters) and parameters[0] == "learning_rate"


# How each was chosen, on the validation split, is on the Recipes and presets page.
PRESETS: dict[str, Config] = {
    "default": Config(),
    "seed": Config(dtype="float64", init="numpy", shuffle=False),
    # Evaluated 1,000 images at a time: its forward pass computes about 1.3 MB of values an image.
    "cnn": Config(
        model="cnn",
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        batch_size=128,
        loss_reduction="mean",
        num_epochs=10,
        eval_batch_size=1000,
        schedule="cosine",
    ),
    "speedrun": Config(
        model="cnn",
        cnn_channels=(16, 32),
        cnn_kernels=(5, 3),
        cnn_padding="valid",
        cnn_pooling="max",
        cnn_dense=256,
        learning_rate=0.01,
        b1=0.7,
        b2=0.9,
        schedule="onecycle",
        warmup_epochs=0.3,
        batch_size=128,
        num_epochs=1,
        loss_reduction="mean",
        eval_batch_size=2000,
    ),
    # Evaluated 1,000 images at a time, as `cnn` is.
    "cnn-strong": Config(
        model="cnn",
        cnn_channels=(32, 64, 128),
        cnn_kernels=(3, 3, 3),
        cnn_batchnorm=True,
        dropout=0.4,
        augment_shift=3.0,
        augment_rotation=15.0,
        augment_scale=0.15,
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        batch_size=128,
        loss_reduction="mean",
        num_epochs=30,
        eval_batch_size=1000,
        schedule="cosine",
    ),
    "fast": Config(
        layer_sizes=(784, 128, 10),
        activation="relu",
        learning_rate=0.01,
        schedule="linear",
        batch_size=64,
        num_epochs=2,
        loss_reduction="mean",
    ),
    "strong": Config(
        layer_sizes=(784, 800, 800, 10),
        sigma=0.05,
        activation="relu",
        batch_size=128,
        loss_reduction="mean",
        num_epochs=20,
        schedule="warmup_cosine",
        warmup_epochs=1,
        dropout=0.2,
        weight_decay=0.05,
        label_smoothing=0.1,
    ),
}


# What each preset is, in a line (the command's help and the docs' table show it).
PRESET_HELP = {
    "default": (
        "the seed notebook's MLP and Adam in float32, `jax.random` weights, reshuffled every epoch"
    ),
    "seed": "the seed notebook exactly: float64, `RandomState(42)` weights, the raw files' order",
    "cnn": "Flax's MNIST CNN and recipe, its learning rate decayed to zero by a cosine",
    "cnn-strong": (
        "the best single CNN we tuned: conv 32-64-128 with BatchNorm, dropout, and training "
        "images shifted, rotated and zoomed"
    ),
    "fast": "the least time to 97% test accuracy: 784-128-10 ReLU, Adam at 0.01 decaying linearly",
    "strong": (
        "the best MLP without augmentation we tuned: 784-800-800-10 ReLU, dropout, label smoothing"
    ),
    "speedrun": (
        "99% in seconds: a small CNN (conv 16 5x5, conv 32 3x3, max pools), Adam, one cycle, "
        "one epoch"
    ),
}


def preset(name: str) -> Config:
    """The named preset's Config."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def read_config_file(path: str) -> dict:
    """Settings from a TOML or JSON file (by extension), checked against `Config`'s fields.

    A file may also name a `preset`. Errors name the file, the line and the key.
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        values = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}: {e.msg}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of settings")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for key, value in values.items():
        where = f"{path}: line {_line_of(text, key)}: key {key!r}"
        if key == "preset":
            expected = str
        elif key not in fields:
            raise ConfigError(f"{where} is not a setting")
        else:
            expected = field_type(fields[key])
        if not _fits(value, expected):
            raise ConfigError(
                f"{where} must be {_TYPE_NAMES.get(expected, expected.__name__)}, got {value!r}"
            )
    try:
        preset(values.get("preset", "default")).replace(
            **{k: v for k, v in values.items() if k != "preset"}
        )
    except ConfigError as e:
        key = next((k for k in values if str(e).startswith(k)), None)
        raise ConfigError(
            f"{path}: line {_line_of(text, key)}: {e}" if key else f"{path}: {e}"
        ) from None
    return values


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    tuple: "a list of integers",
}


def _fits(value, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is tuple:
        return isinstance(value, list) and all(_fits(v, int) for v in value)
    return isinstance(value, expected)


def _line_of(text: str, key: str) -> int:
    """The line on which `key` is set (TOML `key =` or JSON `"key":`), 1-based."""
    pattern = re.compile(rf'^\s*(?:{re.escape(key)}\s*=|.*"{re.escape(key)}"\s*:)')
    return next((n for n, line in enumerate(text.splitlines(), 1) if pattern.match(line)), 1)
