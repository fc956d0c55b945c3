"""`--weights FILE`: start a run from weights, also onto data with another class list.

Reads a sotakit weights file (or registered name, or run directory), a sotakit checkpoint, the
TorchVision reference script's ``checkpoint.pth`` (its ``args`` Namespace is the one global allowed
to the ``weights_only`` loader) or a plain ``.pth`` state dict already on disk; never a download.

When the classes differ, the body is loaded, the classifier head rebuilt for the new classes, and the
head rows of the classes whose names appear in both lists are copied: class-name-aware transfer, so a
model trained on {cat, dog, fox} starts a {cat, dog, owl} run already knowing cat and dog. A torchvision
state dict with a 1000-class head is taken to carry torchvision's ImageNet-1k category names.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..evaluate.weights import WEIGHTS_FILE, resolve_weights
from .checkpoint import CheckpointError, _refusal_reason, choose_checkpoint


@dataclass
class StartWeights:
    """Tensors to start from, the class names of their head when known, and what kind of file held them."""

    state: dict[str, torch.Tensor]
    classes: list[str] | None
    kind: str


class WeightsMismatchError(ValueError):
    """--weights do not fit the model (another architecture); the message says what to do."""


def _imagenet_categories() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # torchvision's own names of its weights
    return list(_IMAGENET_CATEGORIES)


def read_start_weights(spec: str | Path) -> StartWeights:
    """The tensors of ``spec`` (see the module docstring) and their class names."""
    path = Path(spec)
    if path.is_dir():
        path = path / WEIGHTS_FILE if (path / WEIGHTS_FILE).is_file() else choose_checkpoint(path)
    if not path.exists() or path.suffix == ".safetensors":
        w = resolve_weights(path if path.exists() else str(spec))
        return StartWeights(w.get_state_dict(), list(w.categories), "sotakit weights")
    try:
        # The reference script pickles its argparse Namespace in "args": the one class allowed, no code runs.
        with torch.serialization.safe_globals([argparse.Namespace]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"refused to load {path}: {_refusal_reason(path, e)}") from e
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        if "classes" in saved:
            return StartWeights(saved["model"], list(saved["classes"]), "sotakit checkpoint")
        state, kind = saved["model"], "TorchVision reference checkpoint"
    elif isinstance(saved, dict) and saved and all(isinstance(v, torch.Tensor) for v in saved.values()):
        state, kind = saved, "state dict"
    else:
        raise WeightsMismatchError(f"--weights {spec}: neither a state dict nor a checkpoint with a 'model' "
                                   "entry; pass a sotakit weights file, a checkpoint or a .pth state dict")
    if all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped model
        state = {k[len("module."):]: v for k, v in state.items()}
    return StartWeights(state, None, kind)


def head_name(model: nn.Module, num_classes: int) -> str | None:
    """The classifier: the last Linear (or 1x1 Conv2d, as SqueezeNet's) with ``num_classes`` outputs."""
    name = None
    for n, m in model.named_modules():
        if (isinstance(m, nn.Linear) and m.out_features == num_classes) or (
                isinstance(m, nn.Conv2d) and m.out_channels == num_classes and m.kernel_size == (1, 1)):
            name = n
    return name


def transfer_weights(model: nn.Module, start: StartWeights, *, classes: list[str], where: str) -> str:
    """Load ``start`` into ``model`` (built for ``classes``); returns the line that says what was loaded,
    re-initialised and copied. WeightsMismatchError when the body does not fit (another architecture)."""
    own, state = model.state_dict(), start.state
    head = head_name(model, len(classes))
    head_keys = {f"{head}.{p}" for p in ("weight", "bias")} & own.keys() if head is not None else set()
    body_bad = [k for k in own.keys() - head_keys if k not in state or state[k].shape != own[k].shape]
    unexpected = sorted(state.keys() - own.keys())
    if body_bad or unexpected:
        k = (body_bad or unexpected)[0]
        detail = (f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" if k in state and k in own
                  else f"{k} {'missing from the file' if k in own else 'not in this model'}")
        n = len(body_bad) + len(unexpected)
        raise WeightsMismatchError(f"--weights {where} do not fit this model: {n} tensors differ ({detail}); "
                                   "was it saved from another --model?")
    source_rows = state[f"{head}.weight"].shape[0] if head_keys else None
    src_classes = start.classes
    if src_classes is None and source_rows == 1000 and start.kind != "sotakit checkpoint":
        src_classes = _imagenet_categories()
    same = all(state[k].shape == own[k].shape for k in head_keys) and src_classes in (None, list(classes))
    if same:
        model.load_state_dict(state)
        return f"--weights {where} ({start.kind}): all {len(state)} tensors loaded"
    model.load_state_dict({k: v for k, v in state.items() if k not in head_keys}, strict=False)
    index = {c: i for i, c in enumerate(src_classes or [])}
    copied = [(i, index[c]) for i, c in enumerate(classes) if c in index]
    with torch.no_grad():
        for k in head_keys:
            param = dict(model.named_parameters())[k]
            for i, j in copied:
                param[i] = state[k][j].to(param.dtype)
    names = [classes[i] for i, _ in copied]
    new = [c for c in classes if c not in index]
    why = ("the file names no classes" if src_classes is None else
           f"{len(src_classes)} classes in the file, {len(classes)} here")
    return (f"--weights {where} ({start.kind}): {len(state) - len(head_keys)} body tensors loaded; "
            f"head {head} re-initialised for {len(classes)} classes ({why}); rows copied for {len(names)} "
            f"classes whose names match ({', '.join(names) or 'none'}); "
            f"new: {', '.join(new) if src_classes else 'all'}")


def load_start_weights(model: nn.Module, spec: str | Path, *, classes: list[str] | None = None) -> str:
    """``--weights``: read ``spec`` and load it into ``model`` (built for ``classes``); the report line.
    Without ``classes`` every tensor must fit as it is (no head transfer)."""
    start = read_start_weights(spec)
    if classes is None:
        start = StartWeights(start.state, None, start.kind)
        own = model.state_dict()
        if any(k not in own or own[k].shape != v.shape for k, v in start.state.items()) or len(own) != len(
                start.state):
            raise WeightsMismatchError(f"--weights {spec} do not fit this model as it is; pass the run's "
                                       "classes to transfer the body and rebuild the head")
        model.load_state_dict(start.state)
        return f"--weights {spec} ({start.kind}): all {len(start.state)} tensors loaded"
    return transfer_weights(model, start, classes=list(classes), where=str(spec))
