"""Model registry and complexity counts.

A leaf package: it imports only torch, torchvision and the standard library, so every other part
of sotakit can depend on it without cycles.
"""

import importlib

from . import regnet  # noqa: F401  registers the paper's 24 RegNetX/RegNetY models
from .complexity import (
    InputSizeError,
    build_meta_model,
    check_input_size,
    count_flops,
    count_parameters,
    describe_models,
)
from .registry import UnknownModelError, build_model, get_model_builder, list_models, register_model

for _module in ("compact", "xresnet"):
    try:
        # Registers sotakit's own models. import_module rather than ``from . import compact``: the
        # latter reports a missing submodule as a plain ImportError, indistinguishable from others.
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as err:
        # Only a missing model module is optional; a missing import inside it is a real error.
        if err.name != f"{__name__}.{_module}":
            raise
del _module

__all__ = [
    "InputSizeError",
    "UnknownModelError",
    "build_meta_model",
    "build_model",
    "check_input_size",
    "count_flops",
    "count_parameters",
    "describe_models",
    "get_model_builder",
    "list_models",
    "register_model",
]
