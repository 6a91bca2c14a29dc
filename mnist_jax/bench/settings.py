"""How much `mnist-jax bench` measures: every knob with its help, the full run and `--quick`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mnist_jax.config import DTYPES, MATMUL_PRECISIONS
from mnist_jax.errors import ConfigError


def knob(default, help: str):
    """A `BenchSettings` field with its help text (shown by `mnist-jax bench --help` and the
    docs)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class BenchSettings:
    """What `mnist-jax bench` measures: `FULL_BENCH`, or the smaller `QUICK_BENCH` (`--quick`)."""

    epochs: int = knob(5, "epochs per timed training run")
    repeats: int = knob(3, "timed runs per pipeline")
    warmup: int = knob(
        1, "discarded runs per pipeline, and epochs per sweep value and device count"
    )
    reference_epochs: int = knob(2, "epochs of PyTorch and autograd")
    layer_sizes: tuple[int, ...] = knob((784, 200, 100, 10), "the MLP's widths")
    batch_sizes: tuple[int, ...] = knob((64, 128, 256, 512, 1024), "the batch-size sweep")
    width_scales: tuple[float, ...] = knob(
        (0.5, 1.0, 2.0, 4.0), "the hidden-width sweep, times the widths"
    )
    device_counts: tuple[int, ...] = knob((1, 2, 4, 8), "device-count scaling")
    sweep_seeds: int = knob(8, "seeds in the vmapped-sweep comparison")
    timed_epochs: int = knob(
        3, "timed epochs per sweep value and device count, after the warm-up epochs"
    )
    cnn_epochs: int = knob(1, "epochs per timed run of the `cnn` preset, and of PyTorch's CNN")
    cnn_repeats: int = knob(
        2,
        "timed runs of the `cnn` and `speedrun` presets (no warm-up: they are compiled ahead of "
        "time)",
    )
    matmul_precision: str = knob(
        "highest",
        "every row's matmul precision (`Config.matmul_precision`): `highest`, `high` or `default`",
    )
    dtype: str = knob(
        "float32",
        "every row's dtype but the seed preset's (`Config.dtype`, PyTorch's too): "
        + ", ".join(f"`{dtype}`" for dtype in DTYPES),
    )

    def __post_init__(self):
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ConfigError(
                f"bench matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, "
                f"got {self.matmul_precision!r}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"bench dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"
            )
        for f in dataclasses.fields(self):
            if f.type == "str":
                continue
            values = getattr(self, f.name)
            for value in values if isinstance(values, tuple) else (values,):
                if not value > 0 and not (f.name == "warmup" and value == 0):
                    raise ConfigError(f"bench {f.name} must be positive, got {values}")
        if not self.layer_sizes or len(self.layer_sizes) < 2:
            raise ConfigError(
                f"bench layer_sizes needs an input and an output size, got {self.layer_sizes}"
            )


FULL_BENCH = BenchSettings()
QUICK_BENCH = BenchSettings(
    epochs=1,
    repeats=1,
    warmup=0,
    reference_epochs=1,
    batch_sizes=(1024,),
    width_scales=(2.0,),
    device_counts=(2,),
    sweep_seeds=2,
    timed_epochs=1,
    cnn_repeats=1,
)
