"""Loading a user's factory from an import path, `package.module:factory`, with one-line errors."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from mnist_jax.config import Config
from mnist_jax.errors import ConfigError


def call_factory(path: str, config: Config, what: str) -> object:
    """Imports `package.module:factory` and returns `factory(config)`.

    Any failure (the module or the name is missing, the factory raises) is a ConfigError
    naming the path, the setting (`what`) and the fault.
    """
    module_name, _, name = path.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        # as `python -m` would: the user's own modules, from where they run
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module raises as it loads
        raise ConfigError(
            f"{what} {path!r}: cannot import {module_name}: {_one_line(e)}"
        ) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ConfigError(f"{what} {path!r}: {module_name} has no function {name!r}")
    return guarded(factory, f"{what} {path!r}: the factory")(config)


def guarded(function: Callable, name: str) -> Callable:
    """`function`, with whatever it raises turned into a one-line ConfigError starting with
    `name`."""

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ConfigError:
            raise
        except Exception as e:  # a user's code can raise anything
            raise ConfigError(f"{name} raised {_one_line(e)}") from None

    return call


def describe(obj: object) -> str:
    """A short description of a Python object, for the record: its type and where it was
    defined."""
    function = next((f for f in (obj if isinstance(obj, tuple) else ()) if callable(f)), obj)
    where = (
        f"{getattr(function, '__module__', '?')}."
        f"{getattr(function, '__qualname__', type(function).__name__)}"
    )
    return f"{type(obj).__name__}({where})"


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
