"""fit(): the reference training loop, read top to bottom. The only place a Recipe becomes arguments.

Follows TorchVision's ``references/classification/train.py`` (same options, same order of work)
and adds what a run needs to be trusted: a seed, a run directory, exact resume (also mid-epoch),
a checkpoint on SIGTERM/Ctrl-C, a clean stop on a non-finite loss, and exact DDP evaluation.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import torch
from torch import nn

from ..data import load_data, make_loaders, set_train_crop_size, write_data_report
from ..evaluate import evaluate
from ..models import build_model
from ..recipes import Recipe, dump_recipe, load_recipe, resolve, warnings_for
from ..recipes.recipe import ema_alpha, train_crop_at
from .checkpoint import copy_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import barrier, init_distributed
from .ema import build_ema
from .loop import Interrupted, NonFiniteLossError, all_ranks, train_one_epoch
from .optim import build_optimizer, build_scheduler, param_groups
from .progress import RunProgress
from .rundir import MetricsLog, create_run_dir, environment, plot_curves, write_json


@dataclass
class FitResult:
    run_dir: Path | None
    summary: dict


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop polls at step boundaries."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self, *_) -> bool:
        return self.signum is not None


def amp_dtype_for(recipe: Recipe, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype (or None) and a note when mixed precision was asked for but cannot help."""
    if not recipe.amp:
        return None, None
    if device.type == "cpu":
        if recipe.amp_dtype != "bfloat16":
            return None, "--amp on CPU supports bfloat16 only: running in float32"
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None, "--amp: this CPU has no native bfloat16 (avx512_bf16/AMX): running in float32"
    return getattr(torch, recipe.amp_dtype), None


def fit(recipe: Recipe | None = None, *, resume: str | Path | None = None, verbose: bool = True,
        stop_at: tuple[int, int] | None = None) -> FitResult:
    """Train ``recipe`` (or continue the run in ``resume``, with its own recipe); return run dir and summary.

    ``stop_at=(epoch, steps)`` stops as a signal would once ``steps`` steps of epoch ``epoch`` (from 0)
    are done, writing a checkpoint to resume from: for time-sliced jobs and resume tests.
    """
    t_start = time.perf_counter()
    ckpt = None
    resume = resume or (recipe.resume if recipe is not None else None)
    if resume:
        resume_dir = Path(resume)
        ckpt = load_checkpoint(resume_dir)
        run_dir = resume_dir if resume_dir.is_dir() else resume_dir.parent
        recipe = load_recipe(run_dir / "recipe.toml")
    # The backend follows the device the run will really use (gloo on CPU, NCCL on CUDA).
    dist_info = init_distributed("cuda" if recipe.device.startswith("cuda") and torch.cuda.is_available() else "cpu")
    say = print if (verbose and dist_info.is_main) else (lambda *a, **k: None)

    # Data first: the recipe's sizes depend on the data's native resolution.
    bundle = load_data(recipe.data, recipe.data_root)
    recipe, notes = resolve(recipe, native_size=bundle.native_size, world_size=dist_info.world_size,
                            cuda_available=torch.cuda.is_available())
    device = torch.device(recipe.device if recipe.device != "cuda" else f"cuda:{dist_info.local_rank}")
    amp_dtype, amp_note = amp_dtype_for(recipe, device)
    notes += [amp_note] if amp_note else []
    if device.type == "cpu":
        # Denormal floats (tiny gradients and momenta) can slow CPU kernels several-fold; an early
        # version of this loop ran 6x slower without this. benchmarks/throughput.py sees no
        # difference over 28 steps of the current one; it costs nothing, so it stays.
        torch.set_flush_denormal(True)
    if recipe.use_deterministic_algorithms:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    # Same initial weights on every rank; then per-rank streams for augmentation.
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, num_classes=len(bundle.classes), small_input=bundle.native_size <= 64)
    if recipe.weights:
        model.load_state_dict(_model_state(load_checkpoint(recipe.weights)))
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device)
    if dist_info.enabled and recipe.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    torch.manual_seed(recipe.seed + dist_info.rank)

    loaders = make_loaders(
        bundle, batch_size=recipe.batch_size, train_crop_size=recipe.train_crop_size,
        val_resize_size=recipe.val_resize_size, val_crop_size=recipe.val_crop_size,
        interpolation=recipe.interpolation, auto_augment=recipe.auto_augment, ra_magnitude=recipe.ra_magnitude,
        augmix_severity=recipe.augmix_severity, random_erase=recipe.random_erase,
        crop_min_scale=recipe.crop_min_scale, mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
        ra_sampler=recipe.ra_sampler, ra_reps=recipe.ra_reps, holdout=recipe.holdout, seed=recipe.seed,
        workers=recipe.workers, world_size=dist_info.world_size, rank=dist_info.rank,
        pin_memory=device.type == "cuda", train_limit=recipe.train_limit, test_limit=recipe.test_limit,
        max_decode_errors=recipe.max_decode_errors)
    steps_per_epoch = len(loaders.train)
    notes += warnings_for(recipe, steps_per_epoch)

    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    optimizer, scheduler = _optimizer_and_schedule(recipe, model, steps_per_epoch)
    use_scaler = amp_dtype == torch.float16 and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    ema = build_ema(model, decay=1.0 - ema_alpha(recipe), device=device) if recipe.model_ema else None
    train_model = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)

    # Resume: every piece of state, so the continued run equals an uninterrupted one.
    start_epoch, first_step, best = recipe.start_epoch, 0, -1.0
    train_time, img_rates, wall_before = 0.0, [], 0.0  # totals over all sessions of the run
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, first_step, best = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["best_acc1"]
        train_time, img_rates, wall_before = ckpt["train_time"], list(ckpt["img_rates"]), ckpt["wall_time"]
        set_rng_state(ckpt["rng"][min(dist_info.rank, len(ckpt["rng"]) - 1)])
        say(f"resuming {run_dir} at epoch {start_epoch + 1}, step {first_step}")

    if dist_info.is_main and ckpt is None:
        run_dir = create_run_dir(recipe.output_dir, recipe.run_name or recipe.recipe_name or recipe.model)
        (run_dir / "recipe.toml").write_text(dump_recipe(recipe, {"notes": "; ".join(notes)} if notes else None))
        if bundle.report:
            write_data_report(run_dir / "data_report.csv", bundle.report)
    elif ckpt is None:
        run_dir = None
    for n in notes:
        say(f"note: {n}")
    if bundle.skipped:
        say(f"skipped {len(bundle.skipped)} unreadable files (listed with the reason in data_report.csv)")
    log = MetricsLog(run_dir, enabled=dist_info.is_main) if run_dir else MetricsLog(Path("."), enabled=False)
    say(f"run: {run_dir}  data: {bundle.name} ({len(loaders.train.dataset)} train images, {len(bundle.classes)} "
        f"classes, {bundle.native_size}px)  model: {recipe.model}  device: {device}")

    def state(epoch: int, step_in_epoch: int, rngs: list) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch,
                "step_in_epoch": step_in_epoch, "best_acc1": best, "train_time": train_time,
                "img_rates": list(img_rates), "wall_time": time.perf_counter() - t_start + wall_before, "rng": rngs, "recipe": recipe.to_dict(), "classes": list(bundle.classes),
                "native_size": bundle.native_size, "mean": list(bundle.mean), "std": list(bundle.std)}

    def interrupted(e: Interrupted, epoch: int, step: int, signum, epoch_start: float) -> Interrupted:
        nonlocal train_time
        train_time += time.perf_counter() - epoch_start  # the part of the epoch that was trained
        rngs = _gather_rng(dist_info)  # a collective: the stop decision was all-reduced, so every rank is here
        if dist_info.is_main:
            save_checkpoint(state(epoch, step, rngs), run_dir / "checkpoint-last.pt")
        barrier()  # no rank exits before the checkpoint is written (torchrun would kill rank 0)
        progress.message(f"stopped ({_signal_name(signum)}) at epoch {epoch + 1} step {step}; checkpoint written. "
                         f"Continue with: sotakit train --resume {run_dir}")
        e.signum = signum
        return e

    progress = RunProgress(recipe.epochs, steps_per_epoch, enabled=verbose and dist_info.is_main,
                           start_epoch=start_epoch)
    val_loader, val_split = (loaders.holdout, "holdout") if loaders.holdout is not None else (loaders.test, "test")
    try:
        with StopRequest() as stop:
            def should_stop(epoch: int, done: int) -> bool:
                return stop() or (stop_at is not None and (epoch, done) == tuple(stop_at))

            for epoch in range(start_epoch, recipe.epochs):
                # Data order is a function of (seed, epoch); a mid-epoch resume skips what was done.
                loaders.train_sampler.set_epoch(epoch, skip=first_step * recipe.batch_size)
                set_train_crop_size(loaders, train_crop_at(recipe, epoch))
                # Worker seeds are a function of (seed, rank, epoch), like the data order.
                loaders.train.generator.manual_seed((recipe.seed * 1000 + dist_info.rank) * 100_003 + epoch)
                progress.start_epoch(epoch, first_step)
                epoch_start = time.perf_counter()
                try:
                    stats = train_one_epoch(
                        train_model, loaders.train, optimizer, criterion=criterion, device=device, epoch=epoch,
                        first_step=first_step, step_scheduler=scheduler if recipe.lr_per_step else None,
                        ema=ema, ema_steps=recipe.model_ema_steps, ema_in_warmup=epoch < recipe.lr_warmup_epochs,
                        scaler=scaler, amp_dtype=amp_dtype, clip_grad_norm=recipe.clip_grad_norm,
                        channels_last=recipe.channels_last, print_freq=recipe.print_freq,
                        on_log=lambda r: (log.write({"kind": "step", **r}, global_step=r["epoch"] * steps_per_epoch + r["step"]),
                                          progress.log_step(r)),
                        on_step=progress.step if progress.live else None,
                        should_stop=lambda done, e=epoch: should_stop(e, done))
                except Interrupted as e:
                    raise interrupted(e, epoch, e.step_in_epoch, stop.signum, epoch_start) from None
                first_step = 0
                lr = optimizer.param_groups[0]["lr"]  # the lr this epoch ended with, before the epoch step
                if not recipe.lr_per_step:
                    scheduler.step()
                train_time += stats["epoch_time"]
                img_rates.append(stats["img_s"] * dist_info.world_size)
                rec = {"kind": "epoch", "epoch": epoch, "lr": lr, "train_crop": train_crop_at(recipe, epoch),
                       **{f"train_{k}": v for k, v in stats.items()},
                       "val_split": val_split}
                for prefix, net in (("val", model), ("ema", ema.module if ema is not None else None)):
                    if net is not None:
                        m = evaluate(net, val_loader, device=device, amp_dtype=amp_dtype,
                                     channels_last=recipe.channels_last)
                        rec.update({f"{prefix}_{k}": v for k, v in m.items()})
                log.write(rec, global_step=(epoch + 1) * steps_per_epoch)
                is_best = max(rec["val_acc1"], rec.get("ema_acc1", -1.0)) > best
                best = max(best, rec["val_acc1"], rec.get("ema_acc1", -1.0))
                rngs = _gather_rng(dist_info)  # a collective: every rank takes part
                if dist_info.is_main:
                    save_checkpoint(state(epoch + 1, 0, rngs), run_dir / "checkpoint-last.pt")
                    if is_best:
                        copy_checkpoint(run_dir / "checkpoint-last.pt", run_dir / "checkpoint-best.pt")
                ema_txt = f" ema {rec['ema_acc1']:.2f}" if ema is not None else ""
                progress.end_epoch(
                    f"epoch {epoch + 1}/{recipe.epochs} train loss {stats['loss']:.4f} acc@1 {stats['acc1']:.2f} | "
                    f"{val_split} acc@1 {rec['val_acc1']:.2f} acc@5 {rec['val_acc5']:.2f}{ema_txt} | lr {lr:.4g} | "
                    f"{stats['img_s'] * dist_info.world_size:.0f} img/s | {stats['epoch_time']:.1f}s")
                if epoch + 1 < recipe.epochs and all_ranks(should_stop(epoch, steps_per_epoch), device, op="max"):
                    progress.message(f"stopped ({_signal_name(stop.signum)}) after epoch {epoch + 1}. "
                                     f"Continue with: sotakit train --resume {run_dir}")
                    barrier()
                    e = Interrupted(0)
                    e.signum = stop.signum
                    raise e
    except NonFiniteLossError as e:
        progress.message(f"error: {e}")
        raise
    finally:
        progress.close()
        log.close()

    # Final report: plain and EMA model on the holdout and, once, on the test split.
    final = {}
    for split, loader in (("holdout", loaders.holdout), ("test", loaders.test)):
        if loader is None:
            continue
        final[split] = evaluate(model, loader, device=device, amp_dtype=amp_dtype, channels_last=recipe.channels_last)
        if ema is not None:
            final[f"{split}_ema"] = evaluate(ema.module, loader, device=device, amp_dtype=amp_dtype,
                                             channels_last=recipe.channels_last)
    summary = {"run_dir": str(run_dir), "recipe": recipe.recipe_name, "model": recipe.model, "data": bundle.name,
               "epochs": recipe.epochs, "seed": recipe.seed, "world_size": dist_info.world_size, **final,
               "wall_time_s": time.perf_counter() - t_start + wall_before, "train_time_s": train_time,
               "median_img_s": median(img_rates) if img_rates else None, "skipped_files": len(bundle.skipped),
               "decode_errors": sum(s.decode_errors() for s in (bundle.train, bundle.test)),
               "environment": environment()}
    if dist_info.is_main:
        write_json(run_dir / "summary.json", summary)
        plot_curves(run_dir)
    barrier()
    return FitResult(run_dir if dist_info.is_main else None, summary)


def _optimizer_and_schedule(recipe: Recipe, model: nn.Module, steps_per_epoch: int):
    """The reference's optimizer (with its weight-decay groups) and schedule, from the recipe."""
    groups = param_groups(model, weight_decay=recipe.weight_decay, norm_weight_decay=recipe.norm_weight_decay,
                          bias_weight_decay=recipe.bias_weight_decay,
                          transformer_embedding_decay=recipe.transformer_embedding_decay)
    optimizer = build_optimizer(groups, opt=recipe.opt, lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    unit = steps_per_epoch if recipe.lr_per_step else 1  # schedule lengths in epochs or in steps
    gamma = recipe.lr_gamma ** (1 / unit) if recipe.lr_scheduler == "exponentiallr" else recipe.lr_gamma  # per epoch
    scheduler = build_scheduler(optimizer, lr_scheduler=recipe.lr_scheduler, total=recipe.epochs * unit,
                                warmup=recipe.lr_warmup_epochs * unit, warmup_method=recipe.lr_warmup_method,
                                warmup_decay=recipe.lr_warmup_decay, step_size=recipe.lr_step_size * unit,
                                gamma=gamma, lr_min=recipe.lr_min)
    return optimizer, scheduler


def _signal_name(signum) -> str:
    return signal.Signals(signum).name if signum is not None else "stop_at"


def _model_state(ckpt: dict) -> dict:
    return ckpt["model"] if "model" in ckpt else ckpt


def _gather_rng(dist_info) -> list:
    """RNG states of every rank (rank r resumes with its own stream)."""
    mine = rng_state()
    if not dist_info.enabled:
        return [mine]
    out = [None] * dist_info.world_size
    torch.distributed.all_gather_object(out, mine)
    return out
