"""Parameter and FLOP counts, cheap enough to tabulate every registered model.

Models are built on the ``meta`` device: tensors there have shapes but no storage, so building
and running even ``vit_h_14`` or ``regnet_y_128gf`` costs milliseconds and no memory.

FLOP convention: ``count_flops`` reports FLOPs exactly as ``torch.utils.flop_counter`` gives
them, where one multiply-add is 2 FLOPs, and only matmul/conv/attention ops are counted (norms,
activations and additions are not; they are a few percent at most). Papers and torchvision's
model docs usually quote multiply-adds (MACs) instead (e.g. RegNet's "400MF", torchvision's
"GFLOPS" of 4.09 for resnet50): MACs = FLOPs / 2, given as ``macs`` in ``describe_models`` rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model, list_models
from .regnet import regnet_note, regnet_stages


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once); works on meta modules."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, image_size: int, channels: int = 3) -> int:
    """FLOPs (multiply-add = 2) of one eval-mode forward pass of one square image.

    The input is created on the model's device, so a meta-device model is counted without
    computing anything. Eval mode because that is the deployed cost (no aux heads, BN uses
    running statistics); the model's train/eval state is restored afterwards.
    """
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (None, None)
    x = torch.zeros(1, channels, image_size, image_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def build_meta_model(name: str, **kw) -> nn.Module:
    """``build_model`` on the meta device: real shapes, no storage, no initialisation cost.

    Most builders work under ``torch.device("meta")``. A few read tensor values while building
    (RegNet derives its widths with torch ops and ``.tolist()``), which meta tensors cannot
    provide; those are rebuilt with only parameters and buffers moved to meta as they are
    registered.
    """
    try:
        with torch.device("meta"):
            return build_model(name, **kw)
    except NotImplementedError:
        with _register_on_meta():
            return build_model(name, **kw)


@contextlib.contextmanager
def _register_on_meta() -> Iterator[None]:
    # The trick of accelerate's init_empty_weights: each tensor is allocated (uninitialised) on
    # the CPU, moved to meta the moment a module registers it, and then initialised on meta, so
    # the cost stays tiny however large the model. Patches nn.Module globally: not thread-safe.
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def on_meta_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register_parameter(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    def on_meta_buffer(module: nn.Module, name: str, tensor: torch.Tensor | None,
                       persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent)
        if tensor is not None:
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter, nn.Module.register_buffer = on_meta_parameter, on_meta_buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def describe_models(
    pattern: str | None = None, image_size: int = 224, num_classes: int = 1000, small_input: bool = False
) -> list[dict]:
    """One row per model matching ``pattern``: name, params, flops, macs, error, and for RegNets
    ``stages`` (depth, stage widths and depths, group widths) and ``note`` (whose definition it is).

    A model that cannot run at ``image_size`` (vit_b_16 is fixed to 224 unless built with
    ``image_size``, inception_v3 needs >= 75 px, alexnet >= 64 px) gets its error message in
    ``error`` and ``None`` for what could not be counted, instead of aborting the whole table.
    """
    rows = []
    for name in list_models(pattern):
        row: dict = {"name": name, "params": None, "flops": None, "macs": None, "error": None,
                     "stages": None, "note": regnet_note(name)}
        try:
            model = build_meta_model(name, num_classes=num_classes, small_input=small_input)
            if isinstance(model, torchvision.models.RegNet):
                row["stages"] = regnet_stages(model)
            row["params"] = count_parameters(model)
            row["flops"] = count_flops(model, image_size)
            row["macs"] = row["flops"] // 2
        except Exception as err:  # any architecture-specific failure belongs in its own row
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        rows.append(row)
    return rows


class InputSizeError(ValueError):
    """A model cannot run at the input size the recipe feeds it; the message names the sizes that work."""


_PROBE_SIZES = (16, 28, 32, 64, 75, 96, 128, 160, 192, 224, 256, 299, 384, 512)


def _runs_at(model: nn.Module, size: int) -> str | None:
    """None if one eval forward pass of a 1-image batch at ``size`` px runs, else the error's first line."""
    try:
        count_flops(model, size)
        return None
    except Exception as err:  # any architecture-specific refusal (assert, conv too small, reshape)
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def check_input_size(name: str, sizes, *, num_classes: int, small_input: bool = False,
                     data: str | None = None) -> None:
    """Raise InputSizeError before a run starts if model ``name`` cannot take square ``sizes`` (train and
    eval crops; 0 entries are skipped). Probed on the meta device (a 1-image batch, no storage, ms)."""
    model = build_meta_model(name, num_classes=num_classes, small_input=small_input)
    for size in sorted({s for s in sizes if s}):
        error = _runs_at(model, size)
        if error is None:
            continue
        works = [s for s in _PROBE_SIZES if _runs_at(model, s) is None]
        if not works:
            raise InputSizeError(f"{name} cannot run on {size}x{size} inputs ({error})")
        need = (f"{works[0]}x{works[0]} inputs" if len(works) == 1
                else f"inputs of at least {works[0]}x{works[0]}" if works == [s for s in _PROBE_SIZES
                                                                        if s >= works[0]]
                else f"inputs of one of the sizes {', '.join(str(s) for s in works)}")
        if small_input:  # small images are trained at their own size (recipes.resolve)
            remedy = (f"choose a model that runs at {size} px: `sotakit models --data {data or 'DATA'}` "
                      "lists them")
        else:
            remedy = (f"pass --train-crop-size {works[0]} --val-crop-size {works[0]} "
                      f"--val-resize-size {works[0]}")
        raise InputSizeError(f"{name} needs {need}, not {size}x{size} ({error}); {remedy}")
