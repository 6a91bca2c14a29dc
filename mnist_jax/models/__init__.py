"""The models: the `Model` interface, the built-in `mlp` and `cnn` by name, adapters that make
a `Model` of a Flax NNX, Flax Linen or Equinox module, and the rewrite of a model's own
convolutions into the package's forms."""

from __future__ import annotations

from mnist_jax.config import OBJECT_PREFIX, Config, Hyperparameters
from mnist_jax.errors import ConfigError
from mnist_jax.factories import call_factory
from mnist_jax.models.adapters import from_equinox, from_linen, from_nnx
from mnist_jax.models.cnn import as_run, check_cnn_form, cnn, layer_form
from mnist_jax.models.interface import Model, ModelState, Params, Variables, takes_key
from mnist_jax.models.mlp import mlp
from mnist_jax.models.rewrite import rewrite_convolutions

__all__ = [
    "BUILT_IN",
    "Model",
    "ModelState",
    "Params",
    "Variables",
    "as_run",
    "cnn",
    "from_equinox",
    "from_linen",
    "from_nnx",
    "layer_form",
    "make_model",
    "mlp",
    "rewrite_convolutions",
    "takes_key",
]

BUILT_IN = {"mlp": mlp, "cnn": cnn}  # the models `Config.model` names


def make_model(config: Config, hyperparameters: Hyperparameters | None = None) -> Model:
    """The model `config.model` names: built in (with a grid cell's traced dropout rates, if
    `hyperparameters` gives them), or `factory(config)` from an import path. Whatever the model,
    `config.cnn_form` must name a CNN layer form."""
    check_cnn_form(config)
    if config.model in BUILT_IN:
        return BUILT_IN[config.model](config, hyperparameters)
    if config.model.startswith(OBJECT_PREFIX):
        raise ConfigError(
            f"model {config.model!r} was a Python object: pass the same object "
            "again (train(config, model=...)); the command line cannot rebuild it"
        )
    if ":" not in config.model:
        raise ConfigError(
            f"model must be one of {', '.join(BUILT_IN)} or "
            f"package.module:factory, got {config.model!r}"
        )
    model = call_factory(config.model, config, "model")
    if not isinstance(model, Model):
        raise ConfigError(
            f"model {config.model!r}: the factory returned "
            f"{type(model).__name__}, not mnist_jax.Model(init, apply)"
        )
    return model
