"""`sotakit bench`: where a recipe's training time goes on this machine, in three measured stages.

* compute ceiling: a plain PyTorch loop (in-memory uint8 images, no augmentation) on the recipe's model,
  optimizer, precision, memory format and batch size: what the model alone allows;
* data pipeline alone: the recipe's training loader, iterated without a model;
* full step: ``train_one_epoch`` with the whole recipe (loader, augmentation, mixing, EMA, guard).

The stages run in interleaved blocks (ceiling, data, full, ceiling, ...) after one warm-up block each,
so a change in machine load hits all three alike (airbench's untimed warm-up; the ABAB order of issue
14's benchmarks); each stage's figure is the median over its blocks. The full step can be no faster
than the slower of the other two: the ratios say which of them the full step is close to.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..data import cached_bundle, data_fingerprint, load_data, make_loaders, normalized, set_data_epoch
from ..evaluate import autocast
from ..models import build_model
from ..recipes import Recipe, resolve, training_images
from ..train import train_one_epoch
from ..train.fit import amp_dtype_for, cpu_batch_workers, prepare_model, run_device, set_backend_flags
from ..train.machine import cpu_name, tune_for_machine
from ..train.optim import build_optimizer, param_groups
from ..train.progress import task_progress
from ..train.recipe_kwargs import (
    amp_kwargs,
    backend_kwargs,
    criterion_kwargs,
    data_cache_kwargs,
    data_epoch_kwargs,
    ema_kwargs,
    epoch_kwargs,
    loader_kwargs,
    model_build_kwargs,
    model_kwargs,
    normalize_kwargs,
    optimizer_kwargs,
    param_group_kwargs,
)

STAGES = ("ceiling", "data", "full")
# A stage within this fraction of the full step's speed is what the full step waits for.
LIMIT_MARGIN = 0.15


def machine_line() -> str:
    """Architecture, CPU model, cores, torch threads (and the GPU): the line every result starts with."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{platform.machine()} {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads{gpu}; python {platform.python_version()}, torch {torch.__version__}")


def machine_tag() -> str:
    """A short file-name tag for the machine: architecture and CPU family word (xeon, epyc, ...)."""
    words = [w.lower() for w in cpu_name().replace("(R)", "").replace("(TM)", "").split()]
    family = next((w for w in words if w in ("xeon", "epyc", "ryzen", "core", "graviton", "neoverse")),
                  words[0] if words else "cpu")
    return f"{platform.machine()}-{family}"


@dataclass
class BenchResult:
    """Images per second of each stage, one value per timed block."""

    ceiling: list[float]
    data: list[float]
    full: list[float]
    batch_size: int
    steps_per_block: int
    notes: list[str] = field(default_factory=list)
    setting: str = ""  # model, precision, memory format, workers: what the numbers are of

    def median(self, stage: str) -> float:
        return statistics.median(getattr(self, stage))


def limiting_stage(result: BenchResult) -> str:
    """The sentence saying what limits the full step, from the three medians."""
    ceiling, data, full = (result.median(s) for s in STAGES)
    near_ceiling, near_data = full >= ceiling * (1 - LIMIT_MARGIN), full >= data * (1 - LIMIT_MARGIN)
    if data < ceiling and near_data:
        return (f"The data pipeline limits: the full step ({full:.0f} img/s) runs at the loader's speed "
                f"({data:.0f} img/s), below what the model allows ({ceiling:.0f} img/s); more workers, "
                "cheaper augmentation or in-memory data would help.")
    if near_ceiling:
        return (f"The model's compute limits: the full step ({full:.0f} img/s) is within "
                f"{LIMIT_MARGIN:.0%} of the plain loop ({ceiling:.0f} img/s); only a faster model, precision "
                "or machine helps.")
    return (f"The combination limits: the full step ({full:.0f} img/s) is well below both the plain loop "
            f"({ceiling:.0f} img/s) and the loader alone ({data:.0f} img/s), so the cost is in running them "
            "together (augmentation sharing cores with compute, per-step work in the loop).")


def bench_table(result: BenchResult) -> str:
    """The table `sotakit bench` prints: each stage's median img/s (min-max, n) and ratio to the ceiling."""
    ceiling = result.median("ceiling")
    rows = [("compute ceiling (plain loop, in-memory uint8, no augmentation)", "ceiling"),
            ("data pipeline alone (training loader, no model)", "data"),
            ("full step (train_one_epoch, whole recipe)", "full")]
    lines = [f"| stage | img/s median (min-max, n = {len(result.ceiling)}) | ratio to ceiling |",
             "|---|---|---|"]
    for label, stage in rows:
        vals = getattr(result, stage)
        lines.append(f"| {label} | {statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f}) | "
                     f"{statistics.median(vals) / ceiling:.2f} |")
    full, data = result.median("full"), result.median("data")
    lines += ["", f"full step / data pipeline: {full / data:.2f}; full step / ceiling: {full / ceiling:.2f}",
              f"batch {result.batch_size}, {result.steps_per_block} steps per timed block"
              + (f"; {result.setting}" if result.setting else ""), "",
              limiting_stage(result)]
    return "\n".join(f"note: {n}" for n in result.notes) + ("\n" if result.notes else "") + "\n".join(lines)


class _Block:
    """``steps`` batches of a loader whose first batch (worker start-up included) is fetched untimed."""

    def __init__(self, loader, steps: int):
        self.it, self.steps = iter(loader), steps
        self.first = next(self.it)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        yield self.first
        yield from itertools.islice(self.it, self.steps - 1)


def uint8_pool(source, *, size: int, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``images`` training images as one uint8 (N, 3, size, size) tensor and their labels."""
    from torchvision.transforms.v2 import functional as F
    out, labels = [], []
    for i in range(min(images, len(source))):
        image, j = source.load(i)
        image = F.pil_to_tensor(image) if not isinstance(image, torch.Tensor) else image
        image = F.center_crop(F.resize(image, size, antialias=True), size)
        out.append(image.expand(3, -1, -1) if image.shape[0] == 1 else image)
        labels.append(int(source.targets[j]))
    return torch.stack(out).as_subclass(torch.Tensor).contiguous(), torch.tensor(labels)


def plain_steps(model: nn.Module, optimizer, pool: torch.Tensor, labels: torch.Tensor, *, steps: int,
                batch_size: int, start: int, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                amp_dtype, channels_last: bool) -> float:
    """The compute ceiling: ``steps`` steps of the plainest loop on in-memory uint8 images; img/s."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for k in range(steps):
        idx = torch.arange(start + k * batch_size, start + (k + 1) * batch_size) % len(pool)
        x = ((pool[idx].to(device).float() / 255 - mean) / std)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with autocast(device, amp_dtype):
            loss = criterion(model(x), labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.item()  # waits for the device
    return steps * batch_size / (time.perf_counter() - t0)


def loader_steps(loader, *, steps: int) -> float:
    """The data pipeline alone: ``steps`` batches of the training loader after its first; img/s."""
    block = _Block(loader, steps + 1)
    it = iter(block)
    next(it)
    t0, n = time.perf_counter(), 0
    for images, _ in it:
        n += len(images)
    return n / (time.perf_counter() - t0)


def run_blocks(measure: dict[str, Callable[[int], float]], *, steps: int,
               blocks: int) -> dict[str, list[float]]:
    """``blocks`` rounds of one timed block of ``steps`` steps per stage, the stages in turn."""
    out = {stage: [] for stage in STAGES}
    for _ in range(blocks):
        for stage in STAGES:
            out[stage].append(measure[stage](steps))
    return out


def steps_for_budget(seconds: float, step_times: dict[str, float], *, blocks: int) -> int:
    """Steps per block so that ``blocks`` rounds of the three stages take about ``seconds``; at least 2."""
    per_round = sum(step_times.values())
    return max(2, round(seconds / (blocks * max(per_round, 1e-9))))


def bench_recipe(recipe: Recipe, *, seconds: float = 5.0, blocks: int = 3,
                 small_input: bool | None = None) -> BenchResult:
    """Measure the three stages for ``recipe`` (resolved for its data and this machine) in about
    ``seconds`` of timed work (warm-up and data loading not counted). ``small_input`` overrides the
    stem ``fit`` picks from the data's size (``build_model``): False keeps the ImageNet stem on 28 px
    data, as issue 14's figures for resnet18 at 32 px crops have it."""
    if seconds <= 0 or blocks < 1:
        raise ValueError("bench: --seconds must be > 0 and --blocks at least 1")
    bundle = normalized(load_data(recipe.data, recipe.data_root, progress=task_progress),
                        **normalize_kwargs(recipe))
    recipe, notes = resolve(recipe, native_size=bundle.native_size, cuda_available=torch.cuda.is_available(),
                            train_images=training_images(len(bundle.train), recipe))
    # Folder data through the data cache, as fit() reads it (the batch path, not a decode per image).
    bundle, cache_note = cached_bundle(bundle, **data_cache_kwargs(recipe),
                                       fingerprint=data_fingerprint(bundle), progress=task_progress)
    notes += [cache_note] if cache_note else []
    device = run_device(recipe.device)
    built = model_build_kwargs(recipe, num_classes=len(bundle.classes), native_size=bundle.native_size)
    if small_input is not None:
        built["small_input"] = small_input
    # The precision and memory format `sotakit train` would choose here (the machine probe, on a CPU).
    recipe, probe_note = tune_for_machine(recipe, model=build_model(**built), device=device)
    notes += [probe_note] if probe_note else []
    amp_dtype, amp_note = amp_dtype_for(**amp_kwargs(recipe), device=device)
    notes += [amp_note] if amp_note else []
    set_backend_flags(device, **backend_kwargs(recipe))
    loaders = make_loaders(bundle, **loader_kwargs(recipe), pin_memory=device.type == "cuda",
                           batch_path_workers=cpu_batch_workers(device))
    set_data_epoch(loaders, epoch=0, skip_batches=0, **data_epoch_kwargs(recipe, epoch=0))
    steps_per_epoch = len(loaders.train)

    def trained(seed: int):  # the same model, optimizer and precision for the ceiling and the full step
        torch.manual_seed(seed)
        model = prepare_model(build_model(**built), **model_kwargs(recipe), device=device)
        return model, build_optimizer(param_groups(model, **param_group_kwargs(recipe)),
                                      **optimizer_kwargs(recipe))

    plain_model, plain_opt = trained(recipe.seed)
    model, optimizer = trained(recipe.seed)
    ema = None
    if recipe.model_ema:
        from ..train.ema import build_ema
        ema = build_ema(model, **ema_kwargs(recipe, steps_per_epoch=steps_per_epoch), device=device)
    criterion = nn.CrossEntropyLoss(**criterion_kwargs(recipe))
    batch = recipe.batch_size
    pool, labels = uint8_pool(bundle.train, size=recipe.train_crop_size, images=batch * 4)
    mean = torch.tensor(bundle.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std, device=device).view(1, -1, 1, 1)
    done = itertools.count()

    def full(steps: int) -> float:
        stats = train_one_epoch(model, _Block(loaders.train, steps), optimizer, criterion=criterion,
                                device=device, epoch=0, ema=ema, amp_dtype=amp_dtype,
                                **epoch_kwargs(recipe, epoch=0))
        return stats["img_s"]

    measure = {"ceiling": lambda steps: plain_steps(
                   plain_model, plain_opt, pool, labels, steps=steps, batch_size=batch,
                   start=next(done) * batch, mean=mean, std=std, device=device, amp_dtype=amp_dtype,
                   channels_last=recipe.channels_last),
               "data": lambda steps: loader_steps(loaders.train, steps=steps),
               "full": full}
    steps_cap = max(2, steps_per_epoch - 1)  # a block is part of one pass over the loader
    # An untimed warm-up block per stage, which also tells the seconds per step of each.
    probe = {stage: batch / measure[stage](2) for stage in STAGES}
    steps = min(steps_for_budget(seconds, probe, blocks=blocks), steps_cap)
    rates = run_blocks(measure, steps=steps, blocks=blocks)
    setting = (f"model {recipe.model}, {str(amp_dtype).replace('torch.', '') if amp_dtype else 'float32'}"
               f"{', channels-last' if recipe.channels_last else ''}, "
               f"{loaders.train.num_workers} loader workers, device {device}")
    return BenchResult(**rates, batch_size=batch, steps_per_block=steps, notes=notes, setting=setting)
