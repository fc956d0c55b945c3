"""The start-up probe of the machine: bf16 autocast where the CPU has native bf16, channels-last where
it measures faster, chosen once per machine and written into the run's recipe.

What it may choose is the recipe's ``machine_probe`` (``amp``, ``channels_last``); a choice the recipe
already makes (``--amp``, ``--channels-last``, a preset's value, or a flag typed to turn it off, which
the command line takes out of ``machine_probe``) is never changed. It runs for new runs on a CPU device
only: CUDA keeps its own autocast, pinned memory and copies, and a resumed run keeps the choices stored
in its recipe.toml, on this machine or another. ``$SOTAKIT_PROBE=off`` switches it off (the test suite
does, so runs there stay in float32 unless a test asks).

The probe reads the CPU's bf16 support from torch (``torch.cpu``: AVX512_BF16 or AMX tiles; AVX-512
without them only emulates bf16, slower than float32) and times a small conv block, forward and
backward, in both memory formats at each precision (about 0.2 s, on one thread: a second one
spin-waits on a busy 2-core machine and the timings turn to noise). Native bf16 is not enough: on a
Xeon with AMX, resnet18 at 32 px trained at 629 img/s under bf16 autocast against 698 in float32
(docs/performance.md). So before it switches bf16 on, the probe
also times the run's own model, forward and backward at the run's crop size, in both precisions, and
keeps float32 unless bf16 is at least ``BF16_GAIN`` faster (0.4 s for resnet9_w16 at 28 px, 1.2 s for
resnet18 at 32 px, measured on a busy 2-core EPYC; larger inputs get a smaller batch, down to one
image). The results are cached under ``$XDG_CACHE_HOME/sotakit/machine/``, keyed by CPU, torch version
and capability (and the model, input and memory format for the model check), so later runs read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

PROBE_ENV = "SOTAKIT_PROBE"
PROBE_CHOICES = ("amp", "channels_last")
CHANNELS_LAST_GAIN = 1.05  # channels-last is chosen when the block runs at least 5% faster with it
BF16_GAIN = 1.05  # bf16 autocast is chosen when the run's model trains at least 5% faster under it
MODEL_PROBE_PIXELS = 16 * 32 * 32  # images x pixels of the model check's batch: 16 at 32 px, 1 at 224 px


@dataclass(frozen=True)
class MachineProbe:
    """What the probe found: native bf16 and how much faster (NCHW time / NHWC time) a conv block runs
    channels-last in float32 and under bf16 autocast (0.0: not measured)."""

    cpu: str
    native_bf16: bool
    channels_last_fp32: float
    channels_last_bf16: float


def probe_enabled() -> bool:
    """False when ``$SOTAKIT_PROBE`` is off (0, false, no, off)."""
    return os.environ.get(PROBE_ENV, "").strip().lower() not in ("0", "off", "false", "no")


def native_bf16() -> bool:
    """The CPU computes in bf16 natively (AVX512_BF16 or AMX), so bf16 autocast is faster than float32."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file(cpu: str, bf16: bool, *extra) -> Path:
    key = hashlib.sha256("|".join(map(str, (cpu, bf16, torch.__version__,
                                           torch.backends.cpu.get_cpu_capability(), *extra)))
                         .encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sotakit" / "machine" / f"{key}.json"


def _write_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)  # atomic: a concurrent run reads the old file or the whole new one
    except OSError:
        pass  # a read-only cache costs a probe per run, nothing else


def _block_time(*, channels_last: bool, bf16: bool, reps: int = 5) -> float:
    """The fastest of ``reps`` forward+backward passes of a conv-BN-ReLU-conv block (the first not
    counted): the minimum is what the machine can do, the rest is other processes' load."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1, bias=False))
    x = torch.randn(16, 32, 16, 16)
    if channels_last:
        block = block.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return _model_pass_time(block, x, bf16=bf16, reps=reps)


def measure(bf16: bool) -> tuple[float, float]:
    """The channels-last speed-ups of the conv block in float32 and (with native bf16) bf16."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng_state = torch.get_rng_state()  # the probe must not move the run's random stream
    try:
        with torch.enable_grad():
            fp32 = _block_time(channels_last=False, bf16=False) / _block_time(channels_last=True, bf16=False)
            low = (_block_time(channels_last=False, bf16=True) / _block_time(channels_last=True, bf16=True)
                   if bf16 else 0.0)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng_state)
    return round(fp32, 3), round(low, 3)


def probe_machine(*, refresh: bool = False) -> tuple[MachineProbe, bool]:
    """This machine's probe and whether it came from the cache."""
    cpu, bf16 = cpu_name(), native_bf16()
    path = _cache_file(cpu, bf16)
    if path.exists() and not refresh:
        try:
            return MachineProbe(**json.loads(path.read_text())), True
        except (ValueError, TypeError):
            pass  # a torn or old cache file: probe again
    fp32, low = measure(bf16)
    probe = MachineProbe(cpu=cpu, native_bf16=bf16, channels_last_fp32=fp32, channels_last_bf16=low)
    _write_cache(path, asdict(probe))
    return probe, False


def _model_pass_time(model: nn.Module, x: torch.Tensor, *, bf16: bool, reps: int = 3) -> float:
    """The fastest of ``reps`` forward+backward passes of ``model`` on ``x`` (the first not counted)."""
    best = float("inf")
    for i in range(reps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = model(x)
        y.float().sum().backward()
        if i:
            best = min(best, time.perf_counter() - t)
    return best


def measure_model(model: nn.Module, *, size: int, fp32_channels_last: bool,
                  bf16_channels_last: bool) -> float:
    """How much faster (float32 time / bf16 time) a copy of ``model`` trains a step under bf16 autocast,
    each precision in its memory format, at ``size`` px on one thread. The run's model, its random
    stream and its thread count are left as they were."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else 3
    batch = max(1, MODEL_PROBE_PIXELS // (size * size))
    threads, rng_state = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(1)
    try:
        copy = deepcopy(model).cpu().train()
        x = torch.randn(batch, channels, size, size)
        times = []
        for bf16, cl in ((False, fp32_channels_last), (True, bf16_channels_last)):
            fmt = torch.channels_last if cl else torch.contiguous_format
            with torch.enable_grad():
                times.append(_model_pass_time(copy.to(memory_format=fmt), x.contiguous(memory_format=fmt),
                                              bf16=bf16))
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng_state)
    return round(times[0] / times[1], 3)


def model_bf16_gain(probe: MachineProbe, model: nn.Module, *, name: str, size: int, fp32_channels_last: bool,
                    bf16_channels_last: bool) -> tuple[float, bool]:
    """``measure_model``'s speed-up for this machine, model and input, and whether it came from the cache."""
    # The repr names every layer, stride and width: resnet18's ImageNet and small-image stems differ.
    arch = hashlib.sha256(repr(model).encode()).hexdigest()[:16]
    path = _cache_file(probe.cpu, probe.native_bf16, "model", arch, size, fp32_channels_last,
                       bf16_channels_last)
    try:
        return float(json.loads(path.read_text())["bf16_gain"]), True
    except (OSError, ValueError, TypeError, KeyError):
        pass  # not measured yet, or a torn file
    gain = measure_model(model, size=size, fp32_channels_last=fp32_channels_last,
                         bf16_channels_last=bf16_channels_last)
    _write_cache(path, {"model": name, "size": size, "bf16_gain": gain})
    return gain, False


def is_conv_net(model: nn.Module) -> bool:
    """More than one 2-d convolution: where the memory format matters (a ViT's patch embedding alone does
    not make it one)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def wants_bf16_check(probe: MachineProbe, *, allowed: tuple[str, ...], amp: bool, amp_dtype: str) -> bool:
    """Whether bf16 is the probe's to switch on here, so the run's model is worth timing in it."""
    return "amp" in allowed and not amp and probe.native_bf16 and amp_dtype == "bfloat16"


def channels_last_for(probe: MachineProbe, *, bf16: bool, channels_last: bool, allowed: tuple[str, ...],
                      conv_net: bool) -> bool:
    """The memory format the run would have at a precision: the recipe's, or the probe's choice."""
    gain = probe.channels_last_bf16 if bf16 else probe.channels_last_fp32
    return channels_last or ("channels_last" in allowed and conv_net and gain >= CHANNELS_LAST_GAIN)


def machine_choices(probe: MachineProbe, *, allowed: tuple[str, ...], amp: bool, amp_dtype: str,
                    channels_last: bool, conv_net: bool, bf16_gain: float | None = None,
                    model_label: str = "the model") -> tuple[dict[str, bool], str]:
    """The recipe changes the probe makes (only switching on what ``allowed`` names and the recipe leaves
    off) and the note that says what it found and chose. ``bf16_gain``: the run's model measured under
    bf16 autocast against float32 (None: not measured, native bf16 decides)."""
    changes: dict[str, bool] = {}
    said = []
    if "amp" in allowed and not amp:
        if not (probe.native_bf16 and amp_dtype == "bfloat16"):
            said.append("no native bf16: float32")
        elif bf16_gain is not None and bf16_gain < BF16_GAIN:
            said.append(f"native bf16, but {model_label} trains {bf16_gain:.2f}x as fast under bf16 "
                        "autocast: float32")
        else:
            changes["amp"] = True
            measured = f", {bf16_gain:.2f}x on {model_label}" if bf16_gain is not None else ""
            said.append(f"native bf16{measured}: --amp (bf16 autocast)")
    run_bf16 = changes.get("amp", amp) and amp_dtype == "bfloat16" and probe.native_bf16
    gain = probe.channels_last_bf16 if run_bf16 else probe.channels_last_fp32
    if "channels_last" in allowed and not channels_last:
        if channels_last_for(probe, bf16=run_bf16, channels_last=False, allowed=allowed, conv_net=conv_net):
            changes["channels_last"] = True
            said.append(f"channels-last {gain:.2f}x on a conv block: --channels-last")
        else:
            why = f"{gain:.2f}x on a conv block" if conv_net else "no conv net"
            said.append(f"channels-last kept off ({why})")
    if not said:
        return changes, ""
    off = " / ".join(f"--no-{k.replace('_', '-')}" for k in changes)
    return changes, (f"machine probe ({probe.cpu}): {'; '.join(said)}"
                     + (f" ({off} or --machine-probe none to keep the recipe's)" if changes else ""))


def tune_for_machine(recipe, *, model: nn.Module, device: torch.device, say=None):
    """``recipe`` with the probe's choices applied (see the module docstring), and the note, or None when
    the probe does not run. Under DDP every rank takes rank 0's choices (timings differ between ranks)."""
    allowed = tuple(k for k in recipe.machine_probe.split(",") if k in PROBE_CHOICES)
    if device.type != "cpu" or not allowed or not probe_enabled():
        return recipe, None
    import torch.distributed as dist
    distributed = dist.is_available() and dist.is_initialized()
    decided = [None]
    if not distributed or dist.get_rank() == 0:
        probe, _ = probe_machine()
        conv_net, gain = is_conv_net(model), None
        label = f"{recipe.model} at {recipe.train_crop_size} px"
        if wants_bf16_check(probe, allowed=allowed, amp=recipe.amp, amp_dtype=recipe.amp_dtype):
            fmt = {bf16: channels_last_for(probe, bf16=bf16, channels_last=recipe.channels_last,
                                           allowed=allowed, conv_net=conv_net) for bf16 in (False, True)}
            gain, _ = model_bf16_gain(probe, model, name=recipe.model, size=recipe.train_crop_size,
                                      fp32_channels_last=fmt[False], bf16_channels_last=fmt[True])
        decided = [machine_choices(probe, allowed=allowed, amp=recipe.amp, amp_dtype=recipe.amp_dtype,
                                   channels_last=recipe.channels_last, conv_net=conv_net, bf16_gain=gain,
                                   model_label=label)]
    if distributed:
        dist.broadcast_object_list(decided, src=0)
    changes, note = decided[0]
    return (recipe.replace(**changes) if changes else recipe), (note or None)
