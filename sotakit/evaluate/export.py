"""Export a weights file's model for deployment: ONNX (through the dynamo exporter) or a PT2 program.

``torch.onnx.export(..., dynamo=True)`` and ``torch.export.export`` trace the eval-mode model with a
dynamic batch dimension; the preprocessing, categories and temperature go with the file (ONNX model
metadata, or ``sotakit_meta.json`` in the PT2 archive), since the exported graph starts at the
normalized tensor. Each export is checked by running the written file on a batch of another size than
the one traced and comparing its logits with PyTorch's. Not TorchScript (deprecated upstream).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from .weights import Weights, load_model

FORMATS = ("onnx", "pt2")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class MissingPackageError(ValueError):
    """An optional package the asked-for export needs is not installed; the message says what to install."""


def deployment_meta(w: Weights) -> dict[str, str]:
    """What a deployed model needs beside its graph, as strings: preprocessing, categories, temperature."""
    m = w.meta
    return {"sotakit.arch": m["arch"], "sotakit.preprocessing": json.dumps(m["preprocessing"]),
            "sotakit.categories": json.dumps(m["categories"]), "sotakit.temperature": str(w.temperature),
            "sotakit.tensors_sha256": m["tensors_sha256"], "sotakit.versions": json.dumps(m["versions"])}


def require_onnx() -> None:
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingPackageError(f"ONNX export needs {', '.join(missing)}: pip install 'sotakit[export]' "
                                  f"(or pip install {' '.join(missing)})")


def example_batch(w: Weights, batch: int, seed: int = 0) -> torch.Tensor:
    crop = w.meta["preprocessing"]["crop_size"]
    return torch.randn(batch, 3, crop, crop, generator=torch.Generator().manual_seed(seed))


def export_model(spec, *, format: str, out: str | Path) -> dict:
    """Write the model of ``spec`` (weights file, run directory or registered name) as ``format`` to ``out``.

    Returns {"path", "format", "max_abs_diff"}: the largest difference between the exported file's
    logits and PyTorch's on a 3-image batch (the graph was traced with 2, so the batch is dynamic).
    """
    if format not in FORMATS:
        raise ValueError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if format == "onnx":
        require_onnx()  # before building anything
    model, w = load_model(spec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    traced, check = example_batch(w, 2), example_batch(w, 3, seed=1)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.inference_mode():
        expected = model(check)
    if format == "pt2":
        program = torch.export.export(model, (traced,), dynamic_shapes=({0: batch},))
        torch.export.save(program, out, extra_files={"sotakit_meta.json": json.dumps(deployment_meta(w))})
        with torch.inference_mode():
            got = torch.export.load(out).module()(check)
    else:
        got = torch.from_numpy(_export_onnx(model, w, traced, check, batch, out))
    return {"path": str(out), "format": format, "max_abs_diff": float((got - expected).abs().max())}


def _export_onnx(model, w: Weights, traced: torch.Tensor, check: torch.Tensor, batch, out: Path):
    """ONNX via the dynamo exporter, metadata added, then the logits onnxruntime computes on ``check``."""
    import onnx
    import onnxruntime

    program = torch.onnx.export(model, (traced,), dynamo=True, input_names=["images"],
                                output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(out))
    proto = onnx.load(str(out))
    onnx.helper.set_model_props(proto, deployment_meta(w))
    onnx.save(proto, str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": check.numpy()})[0]
