"""One name -> one builder for every architecture sotakit can train.

Modelled on ``torchvision/models/_api.py``: builders are keyword-only, a duplicate name is an error
(so two modules cannot silently shadow each other), and names are selected with fnmatch patterns.
Every torchvision classification model is registered at import, always without pretrained weights:
sotakit trains from scratch and never touches a weights hub.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence

import torch.nn as nn
import torchvision

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}

# Per-model defaults that make a torchvision builder behave like a plain classifier.
# GoogLeNet/Inception: with aux heads, train-mode forward returns a namedtuple (breaking generic
# loss code) and the aux pooling fails on small images; init_weights=None only adds a
# FutureWarning before choosing True anyway.
_TORCHVISION_DEFAULTS: dict[str, dict] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


class UnknownModelError(KeyError, ValueError):
    """An unregistered model name; both a KeyError (a lookup) and a ValueError (like torchvision)."""

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0])


def register_model(name: str | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``fn(*, num_classes, **kw) -> nn.Module`` under ``name``.

    Args:
        name: Registry key; defaults to the function's ``__name__``.

    Raises:
        ValueError: If the name is already taken, so no builder is ever silently replaced.
    """

    def wrapper(fn: ModelBuilder) -> ModelBuilder:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"A model is already registered under the name {key!r}.")
        _BUILDERS[key] = fn
        return fn

    return wrapper


def _patterns(patterns: str | Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def list_models(
    include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None
) -> list[str]:
    """Sorted registered names matching any ``include`` and no ``exclude`` fnmatch pattern.

    Matching is case-sensitive on every OS so a pattern selects the same models everywhere;
    ``"resnet*"`` does not match ``"wide_resnet50_2"``.
    """
    inc, exc = _patterns(include), _patterns(exclude)
    return sorted(
        n
        for n in _BUILDERS
        if (not inc or any(fnmatch.fnmatchcase(n, p) for p in inc))
        and not any(fnmatch.fnmatchcase(n, p) for p in exc)
    )


def get_model_builder(name: str) -> ModelBuilder:
    """The builder registered under ``name``.

    Raises:
        UnknownModelError: (a KeyError and a ValueError) naming the closest registered names,
            because a typo in a recipe should be a one-glance fix.
    """
    try:
        return _BUILDERS[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "see list_models()."
    raise UnknownModelError(f"Unknown model {name!r}; {hint}")


def build_model(name: str, *, num_classes: int, small_input: bool = False, **kw) -> nn.Module:
    """Build a freshly initialised model.

    Args:
        name: A registered model name.
        num_classes: Size of the classifier output.
        small_input: Use the CIFAR-style stem for images of at most ~64 px: on ResNet-family
            models (resnet*, resnext*, wide_resnet*, any ``torchvision.models.ResNet``) the 7x7
            stride-2 conv becomes a 3x3 stride-1 conv and the max-pool is removed, so a 32 px
            image is not shrunk to 8 px before the first block; on RegNets (regnet*, any
            ``torchvision.models.RegNet``) the 3x3 stem conv's stride becomes 1. Other families
            have no such stem and are returned unchanged (their own size arguments, e.g. ViT's
            ``image_size``, go in ``kw``). A sotakit model with its own small stem offers
            ``use_small_input_stem()`` (xresnet: stride-1 stem conv, no max-pool).
        **kw: Passed to the builder.
    """
    model = get_model_builder(name)(num_classes=num_classes, **kw)
    if small_input and isinstance(model, torchvision.models.ResNet):
        _use_small_input_stem(model)
    if small_input and isinstance(model, torchvision.models.RegNet):
        # RegNet's stem is already a 3x3 conv: only its stride 2 goes, as in pycls's CIFAR stem
        # (res_stem_cifar), so the parameters stay those of the ImageNet model.
        model.stem[0].stride = (1, 1)
    elif small_input and hasattr(model, "use_small_input_stem"):
        model.use_small_input_stem()
    return model


def _use_small_input_stem(model: torchvision.models.ResNet) -> None:
    old = model.conv1
    model.conv1 = nn.Conv2d(
        old.in_channels,
        old.out_channels,
        kernel_size=3,
        stride=1,
        padding=1,
        bias=False,
        device=old.weight.device,  # stay on meta when the model was built there
        dtype=old.weight.dtype,
    )
    # Same init torchvision's ResNet gives every conv, so only the stem geometry changes.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def _torchvision_builder(tv_name: str) -> ModelBuilder:
    defaults = _TORCHVISION_DEFAULTS.get(tv_name, {})

    def build(*, num_classes: int, **kw) -> nn.Module:
        if "weights" in kw:
            raise ValueError("sotakit builds models from scratch; pretrained weights are not supported.")
        return torchvision.models.get_model(
            tv_name, weights=None, num_classes=num_classes, **{**defaults, **kw}
        )

    build.__name__ = build.__qualname__ = tv_name
    build.__doc__ = f"torchvision's ``{tv_name}`` without pretrained weights."
    return build


# list_models(module=...) keeps only classification builders: detection, segmentation, video,
# quantization and optical-flow models live in submodules and are excluded.
for _name in torchvision.models.list_models(module=torchvision.models):
    register_model(_name)(_torchvision_builder(_name))
del _name
