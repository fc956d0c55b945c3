"""Weights that carry their meaning: a safetensors file whose metadata says what the tensors are.

Modelled on torchvision's multi-weight API (``torchvision/models/_api.py``): ``Weights.meta`` holds
the categories, parameter and FLOP counts, metrics, the recipe (inline, resolved) and the file size
under torchvision's key names, plus what sotakit needs to rebuild the model and its input (``arch``,
``builder_args``, ``preprocessing``), the versions that wrote it and a SHA-256 of the tensors;
``Weights.transforms()`` is the eval preprocessing as one v2 transform (torchvision's
``ImageClassification`` steps, with this run's sizes and statistics).

The file is safetensors: tensors and a JSON string header, no pickle, so opening an untrusted file
runs no code. Each meta key is stored as a JSON string under its own metadata key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _version
from ..data.transforms import make_preprocess_transform
from ..models import UnknownModelError, build_meta_model, count_flops, get_model_builder
from ..models import build_model as build_registered

WEIGHTS_FILE = "weights.safetensors"

# torchvision's required keys for a classification weight (test_schema_meta_validation), and sotakit's.
REQUIRED_KEYS = frozenset({"categories", "num_params", "min_size", "_metrics", "_ops", "_file_size", "recipe",
                           "_docs", "arch", "builder_args", "preprocessing", "versions", "tensors_sha256",
                           "model_choice"})
PERMITTED_KEYS = REQUIRED_KEYS | {"temperature", "calibration", "source", "license"}
PREPROCESSING_KEYS = frozenset({"resize_size", "crop_size", "interpolation", "antialias", "mean", "std",
                                "channels"})
METRIC_KEYS = ("acc@1", "n")  # every _metrics[data][split] entry has at least these


class WeightsError(ValueError):
    """A weights file that cannot be used as asked; the message names the reason and what to do."""


def mib(size_bytes: int) -> float:
    """File size in MiB with 3 decimals, as torchvision's ``_file_size``."""
    return round(size_bytes / 2**20, 3)


def gflops(flops: int) -> float:
    """``_ops``: GFLOPs (one multiply-add = 2 FLOPs, sotakit's convention; torchvision's ``_ops`` counts
    multiply-adds), 6 decimals so that the small models of small images keep their digits."""
    return round(flops / 1e9, 6)


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order (not over the file, whose
    header also holds this hash)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    import torchvision
    return {"sotakit": _version.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def min_input_size(arch: str, builder_args: dict) -> list[int]:
    """The smallest square input (of 1, 2, 4, ... 512 px) the model runs on, as torchvision's ``min_size``
    (h, w): (1, 1) for a ResNet, (224, 224) for a ViT fixed to 224; probed on the meta device, in eval
    mode (no storage, milliseconds)."""
    model = build_meta_model(arch, **builder_args).eval()
    for s in (1, 2, 4, 8, 16, 28, 32, 64, 75, 96, 128, 160, 192, 224, 256, 299, 384, 512):
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, s, s, device="meta"))
            return [s, s]
        except Exception:  # any architecture-specific refusal (conv larger than the input, asserts)
            continue
    return [0, 0]


def model_counts(arch: str, builder_args: dict, crop_size: int) -> tuple[int, float]:
    """(num_params, _ops): every parameter (torchvision's count) and GFLOPs at the crop."""
    model = build_meta_model(arch, **builder_args)
    return sum(p.numel() for p in model.parameters()), gflops(count_flops(model, crop_size))


def encode_file(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """The bytes of the safetensors file: ``meta`` with its ``_file_size`` set to the file's own size.

    The size is part of the header it measures: the header is re-encoded until the number written
    equals the size of the bytes (twice at most in practice; the header is padded to 8 bytes).
    """
    from safetensors.torch import save
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}  # no shared storage
    meta = {**meta, "tensors_sha256": tensors_sha256(tensors), "_file_size": 0.0}
    for _ in range(10):
        data = save(tensors, metadata={"format": "pt", **{k: json.dumps(v) for k, v in meta.items()}})
        if meta["_file_size"] == mib(len(data)):
            return data
        meta["_file_size"] = mib(len(data))
    raise RuntimeError("the weights header did not settle on its own size")  # cannot happen: sizes converge


def write_weights(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``state`` with ``meta`` (hash and file size filled in) to ``path``, atomically."""
    from ..data.download import fsync_dir
    path = Path(path)
    data = encode_file(state, {**meta, "versions": meta.get("versions") or versions()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta dict of a weights file (no tensors read); WeightsError for anything else."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        hint = (" (a .pt/.pth checkpoint: `sotakit export-weights RUN` writes a weights file)"
                if path.suffix in (".pt", ".pth") else "")
        raise WeightsError(f"{path} is not a safetensors weights file ({e}){hint}") from None
    missing = sorted(REQUIRED_KEYS - raw.keys())
    if missing:
        raise WeightsError(f"{path} is a safetensors file but not sotakit weights: its metadata lacks "
                           f"{', '.join(missing)}; write one with `sotakit export-weights RUN`")
    try:
        return {k: json.loads(v) for k, v in raw.items() if k != "format"}
    except ValueError as e:
        raise WeightsError(f"{path}: damaged metadata ({e})") from None


@dataclass(eq=False)
class Weights:
    """A weights file: ``meta`` (torchvision's keys and sotakit's), ``transforms()``, ``get_state_dict()``."""

    path: Path
    meta: dict[str, Any] = field(repr=False)
    name: str | None = None  # the registry name it was found under, if any

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> "Weights":
        path = Path(path)
        return cls(path, read_meta(path), name)

    def transforms(self):
        """The eval preprocessing of one PIL image or uint8 tensor: a torchvision v2 transform."""
        return make_preprocess_transform(**self.meta["preprocessing"])

    @property
    def categories(self) -> list[str]:
        return self.meta["categories"]

    @property
    def temperature(self) -> float:
        """Softmax temperature fitted by `sotakit calibrate` (1.0 when not calibrated)."""
        return float(self.meta.get("temperature") or 1.0)

    @cached_property
    def _state(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file
        state = load_file(str(self.path))
        got = tensors_sha256(state)
        if got != self.meta["tensors_sha256"]:
            raise WeightsError(f"{self.path}: the tensors do not match their SHA-256 (stored "
                               f"{self.meta['tensors_sha256'][:16]}..., computed {got[:16]}...): the file "
                               "is damaged or was edited; export it again from its run")
        return state

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors, verified against the stored hash (WeightsError on a mismatch)."""
        return dict(self._state)

    def __repr__(self) -> str:
        return f"Weights({self.name or str(self.path)!r}, arch={self.meta['arch']!r})"


def builder_for(meta: dict, *, where: str) -> str:
    """The weights' architecture, checked against the registry (WeightsError naming it when unknown)."""
    arch = meta["arch"]
    try:
        get_model_builder(arch)
    except UnknownModelError as e:
        raise WeightsError(f"{where} holds a {arch!r} model, an architecture this sotakit does not know "
                           f"({e}); use a sotakit version that has it (it was written by sotakit "
                           f"{meta['versions'].get('sotakit')})") from None
    return arch


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, where: str) -> None:
    """``load_state_dict`` with the reason a user can act on when the tensors do not fit the model."""
    own = model.state_dict()
    differ = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if differ or missing or unexpected:
        detail = (f"{len(differ)} tensors differ in shape ({differ[-1]}: {tuple(state[differ[-1]].shape)} vs "
                  f"{tuple(own[differ[-1]].shape)})" if differ else
                  f"{len(missing)} missing (e.g. {missing[0]})" if missing else
                  f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise WeightsError(f"the tensors of {where} do not fit this model: {detail}; build the model the "
                           "weights were saved from (their meta's arch and builder_args)")
    model.load_state_dict(state)


def build_model(name: str | None = None, *, weights: "Weights | str | Path | None" = None,
                **kw) -> nn.Module:
    """A registered model, freshly initialised, or built and loaded from ``weights``.

    ``weights`` is a Weights, a weights file, a run directory or a registered name
    (``build_model("resnet18", weights="fmnist-v2")``, like torchvision's enums); the model is then
    built with the weights' own builder arguments (``num_classes``, ``small_input``), and ``name``,
    when given, must be their architecture. Without weights: ``models.build_model`` (``num_classes``
    required).
    """
    if weights is None:
        if name is None:
            raise TypeError("build_model needs a model name or weights")
        return build_registered(name, **kw)
    w = weights if isinstance(weights, Weights) else resolve_weights(weights)
    where = w.name or str(w.path)
    arch = builder_for(w.meta, where=where)
    if name is not None and name != arch:
        raise WeightsError(f"{where} holds a {arch!r} model, not {name!r}: "
                           f"build_model({arch!r}, weights=...)")
    args = {**w.meta["builder_args"], **kw}
    model = build_registered(arch, **args)
    load_state(model, w.get_state_dict(), where=where)
    return model


def resolve_weights(spec: "str | Path | Weights") -> Weights:
    """A Weights from a Weights, a weights file, a run directory (its weights.safetensors) or a name in
    the local registry (`sotakit weights list`); FileNotFoundError naming what was tried."""
    from .weights_registry import registered_path
    if isinstance(spec, Weights):
        return spec
    path = Path(spec)
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{path} has no {WEIGHTS_FILE}; write it with `sotakit export-weights "
                                    f"{path}`")
        return Weights.from_file(path / WEIGHTS_FILE)
    if path.is_file():
        return Weights.from_file(path)
    found = registered_path(str(spec))
    if found is not None:
        return Weights.from_file(found, name=str(spec))
    raise FileNotFoundError(f"{spec!r} is neither a weights file, a run directory nor a registered name "
                            "(`sotakit weights list` shows the names; `sotakit weights add NAME FILE` adds "
                            "one)")


def load_model(spec: "str | Path | Weights", *, device: torch.device | str = "cpu") -> tuple[nn.Module,
                                                                                          Weights]:
    """(model in eval mode on ``device``, its Weights) from a weights file, run directory or name."""
    w = resolve_weights(spec)
    model = build_model(weights=w).to(device)
    return model.eval(), w


def schema_problems(path: str | Path) -> list[str]:
    """What is wrong with a weights file's meta, as torchvision's ``test_schema_meta_validation`` checks
    it: required and permitted keys, metric entries, ``num_params`` and ``_ops`` against the built
    model, ``_file_size`` against the file, the tensors against their hash. Empty when all is right."""
    path = Path(path)
    try:
        w = Weights.from_file(path)
        meta = w.meta
    except (WeightsError, FileNotFoundError) as e:
        return [str(e)]
    problems = []
    if extra := sorted(meta.keys() - PERMITTED_KEYS):
        problems.append(f"unsupported keys: {', '.join(extra)}")
    if (keys := set(meta["preprocessing"])) != PREPROCESSING_KEYS:
        problems.append(f"preprocessing keys {sorted(keys)}, expected {sorted(PREPROCESSING_KEYS)}")
    for data, splits in meta["_metrics"].items():
        for split, m in splits.items():
            if not all(k in m for k in METRIC_KEYS):
                problems.append(f"_metrics[{data!r}][{split!r}] lacks {', '.join(k for k in METRIC_KEYS)}")
    if len(meta["categories"]) != meta["builder_args"].get("num_classes"):
        problems.append(f"{len(meta['categories'])} categories for num_classes "
                        f"{meta['builder_args'].get('num_classes')}")
    try:
        params, ops = model_counts(meta["arch"], meta["builder_args"], meta["preprocessing"]["crop_size"])
        if params != meta["num_params"]:
            problems.append(f"num_params {meta['num_params']} but the model has {params}")
        if ops != meta["_ops"]:
            problems.append(f"_ops {meta['_ops']} but the model computes {ops} GFLOPs")
        model = build_registered(meta["arch"], **meta["builder_args"])
        load_state(model, w.get_state_dict(), where=str(path))
    except (WeightsError, UnknownModelError) as e:
        problems.append(str(e))
    if meta["_file_size"] != mib(path.stat().st_size):
        problems.append(f"_file_size {meta['_file_size']} MiB but the file has {mib(path.stat().st_size)}")
    return problems
