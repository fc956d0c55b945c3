"""fit(): the reference training loop, read top to bottom; copy it to write your own.

Follows TorchVision's ``references/classification/train.py`` (same options, same order of work)
and adds what a run needs to be trusted: a seed, a run directory, exact resume (also mid-epoch),
verified checkpoints every N steps or M minutes and on SIGTERM/SIGUSR1/Ctrl-C, skipped non-finite
steps, refusal to resume on changed inputs, and exact DDP evaluation. Every function it calls is
public (``sotakit.train``), and the recipe becomes keyword arguments in one place
(``recipe_kwargs``), so a copy of ``fit`` is a loop that runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import median

import torch
from torch import nn

from ..data import cached_bundle, data_fingerprint, load_data, make_loaders, normalized, set_data_epoch
from ..evaluate import evaluate, tta_report
from ..evaluate.evaluate import StopEvaluation
from ..models import build_model, check_input_size
from ..recipes import Recipe, resolve, training_images
from ..recipes.recipe import recipe_hash
from .checkpoint import state_fingerprint
from .distributed import DistInfo, all_ranks, barrier, init_distributed
from .ema import build_ema
from .fine_tune import build_fine_tune_scheduler, fine_tune_groups
from .loop import Interrupted, train_one_epoch
from .lr_auto import choose_lr
from .machine import tune_for_machine
from .optim import build_optimizer, build_scheduler, param_groups
from .precise_bn import update_precise_bn
from .preflight import check_classes, check_output_dir, check_splits
from .progress import RunProgress, TaskProgress, say_for, task_progress
from .recipe_kwargs import (
    amp_kwargs,
    backend_kwargs,
    compile_kwargs,
    criterion_kwargs,
    data_cache_kwargs,
    data_epoch_kwargs,
    ema_kwargs,
    epoch_kwargs,
    eval_kwargs,
    fine_tune_kwargs,
    input_size_kwargs,
    loader_kwargs,
    model_build_kwargs,
    model_kwargs,
    normalize_kwargs,
    optimizer_kwargs,
    param_group_kwargs,
    run_warnings,
    saver_kwargs,
    scheduler_kwargs,
    train_crop_at,
    tta_kwargs,
)
from .resume import ResumeMismatchError, check_resume, extend_run, find_resume_point
from .rundir import MetricsLog, environment, finish_run, open_run_dir, release_run, run_lifecycle
from .state import CheckpointSaver, restore_state, run_meta
from .stops import RunError, StopRequest, failures_as_run_errors
from .transfer import load_start_weights

__all__ = ["FitResult", "ResumeMismatchError", "RunError", "amp_dtype_for", "backend_for",
           "compile_for_training", "cpu_batch_workers", "epoch_line", "epoch_record", "final_evaluation",
           "fit", "log_step", "prepare_model", "run_banner", "run_device", "run_summary", "set_backend_flags",
           "validation_split", "wrap_ddp"]


@dataclass
class FitResult:
    run_dir: Path | None
    summary: dict


def fit(recipe: Recipe | None = None, *, resume: str | Path | None = None, verbose: bool = True,
        stop_at: tuple[int, int] | None = None, force_resume: bool = False,
        tracker: str | None = None, epochs: int | None = None, lr_find: dict | None = None) -> FitResult:
    """Train ``recipe`` (or continue the run in ``resume``, with its own recipe); return run dir and summary.

    ``stop_at=(epoch, steps)`` stops as a signal would once ``steps`` steps of epoch ``epoch`` (from 0)
    are done, writing a checkpoint to resume from: for time-sliced jobs and resume tests.
    ``force_resume`` continues even when the checkpoint was written for other inputs (see
    ``resume.check_resume``). ``tracker`` ("mlflow" or "wandb") also sends the recipe and metrics there.
    ``epochs`` with ``resume`` extends (or shortens, if not yet trained) the run: see ``resume.extend_run``.
    ``lr_find`` (``lr_find``'s start_lr/end_lr/num_it) runs the range test first, as ``recipe.lr_auto``
    (``--lr auto``) does with the defaults, and trains at its valley, noted in recipe.toml
    (``lr_auto.choose_lr``).
    """
    t_start = time.perf_counter()
    stop = StopRequest(stop_at=stop_at).install()  # signals honoured from here on, wherever the run is
    # Resume: the run's own recipe and newest verified checkpoint; never a run another process trains.
    point = find_resume_point(recipe, resume=resume, force=force_resume, epochs=epochs)
    if point.finished:  # nothing to train: no re-evaluation, and the run's wall time stays as it was
        if verbose:
            print(point.finished_message())
        release_run(point.run_dir)
        return FitResult(point.run_dir, point.finished_summary())
    recipe = point.recipe
    # The backend follows the device the run will really use (gloo on CPU, NCCL on CUDA).
    dist_info = init_distributed(backend_for(recipe.device), timeout_s=recipe.dist_timeout)
    say = say_for(verbose and dist_info.is_main)  # the "sotakit" logger (CLI: stderr), else print
    if not point.resumed and dist_info.is_main:
        check_output_dir(recipe.output_dir)  # before the data load, not after it

    # Data first: the recipe's sizes depend on the data's native resolution.
    bundle = normalized(load_data(recipe.data, recipe.data_root, progress=task_progress),
                        **normalize_kwargs(recipe))
    check_classes(bundle.classes, data=recipe.data)
    recipe, notes = resolve(recipe, native_size=bundle.native_size, world_size=dist_info.world_size,
                            cuda_available=torch.cuda.is_available(),
                            train_images=training_images(len(bundle.train), recipe))
    fingerprint = data_fingerprint(bundle)
    load_all, resume_notes = check_resume(point.ckpt, recipe, classes=bundle.classes, fingerprint=fingerprint,
                                          force=force_resume, run_dir=point.run_dir,
                                          allowed=("epochs",) if point.extended_from else ())
    # Folder data decoded once into the presized uint8 cache (rank 0 builds it, then the others open it).
    if dist_info.enabled and not dist_info.is_main:
        barrier()
    bundle, cache_note = cached_bundle(bundle, **data_cache_kwargs(recipe), fingerprint=fingerprint,
                                       progress=task_progress)
    if dist_info.enabled and dist_info.is_main:
        barrier()
    notes += [cache_note] if cache_note else []
    device = run_device(recipe.device, local_rank=dist_info.local_rank)
    set_backend_flags(device, **backend_kwargs(recipe))
    notes += resume_notes

    # Same initial weights on every rank; then per-rank streams for augmentation.
    torch.manual_seed(recipe.seed)
    built = model_build_kwargs(recipe, num_classes=len(bundle.classes), native_size=bundle.native_size)
    model = build_model(**built)
    check_input_size(**built, **input_size_kwargs(recipe))  # before the run directory exists (vit at 28 px)
    if not point.resumed:  # precision and memory format from the machine (CPU), stored in recipe.toml
        recipe, probe_note = tune_for_machine(recipe, model=model, device=device)
        notes += [probe_note] if probe_note else []
    amp_dtype, amp_note = amp_dtype_for(**amp_kwargs(recipe), device=device)
    notes += [amp_note] if amp_note else []
    model = prepare_model(model, **model_kwargs(recipe), device=device, distributed=dist_info.enabled,
                          classes=bundle.classes, say=notes.append)  # --weights: what was loaded, as a note
    torch.manual_seed(recipe.seed + dist_info.rank)
    loaders = make_loaders(bundle, **loader_kwargs(recipe), world_size=dist_info.world_size,
                           rank=dist_info.rank, pin_memory=device.type == "cuda",
                           batch_path_workers=cpu_batch_workers(device))
    if loaders.train.num_workers < recipe.workers:
        notes.append(f"workers {recipe.workers} -> {loaders.train.num_workers}: augmentation runs on whole "
                     "batches in this process; on a CPU a worker process only takes cores from the training "
                     "threads")
    steps_per_epoch = len(loaders.train)
    check_splits(loaders, classes=bundle.classes, holdout=recipe.holdout, steps_per_epoch=steps_per_epoch)
    notes += run_warnings(recipe, steps_per_epoch, train_images=len(loaders.train.dataset),
                          channels=bundle.channels)

    criterion = nn.CrossEntropyLoss(**criterion_kwargs(recipe))
    groups = param_groups(model, **param_group_kwargs(recipe))
    if recipe.freeze_epochs:  # fastai's fine_tune: groups by layer depth, the head alone first, one-cycle
        groups = fine_tune_groups(model, groups, num_classes=len(bundle.classes))
    optimizer = build_optimizer(groups, **optimizer_kwargs(recipe))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None
    if (recipe.lr_auto or lr_find is not None) and point.ckpt is None:  # --lr auto: before the scheduler
        recipe, lr_note = choose_lr(recipe, model, loaders.train, optimizer, criterion=criterion,
                                    device=device, amp_dtype=amp_dtype, scaler=scaler, **(lr_find or {}))
        notes.append(lr_note)
    if recipe.freeze_epochs:
        scheduler = build_fine_tune_scheduler(optimizer,
                                              **fine_tune_kwargs(recipe, steps_per_epoch=steps_per_epoch))
    else:
        scheduler = build_scheduler(optimizer, **scheduler_kwargs(recipe, steps_per_epoch=steps_per_epoch))
    ema = (build_ema(model, **ema_kwargs(recipe, steps_per_epoch=steps_per_epoch), device=device)
           if recipe.model_ema else None)
    # --compile: the module the steps run; parts["model"] stays the plain one (state dicts without _orig_mod.)
    train_model = compile_for_training(wrap_ddp(model, dist_info=dist_info, device=device),
                                       **compile_kwargs(recipe))
    # Everything a resume restores, named once (litgpt's `state`).
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "ema": ema, "scaler": scaler}

    # Resume: every piece of state, so the continued run equals an uninterrupted one.
    totals = restore_state(point.ckpt, parts, rank=dist_info.rank, load_all=load_all,
                           start_epoch=recipe.start_epoch, started=t_start, say=say, where=str(point.run_dir))
    if point.extended_from and load_all:  # --resume RUN --epochs N: the schedule rebuilt for N epochs, said
        schedule = partial(build_scheduler, **scheduler_kwargs(recipe, steps_per_epoch=steps_per_epoch))
        if recipe.freeze_epochs:  # the fine_tune phases, the unfrozen one stretched to the new length
            schedule = partial(build_fine_tune_scheduler,
                               **fine_tune_kwargs(recipe, steps_per_epoch=steps_per_epoch))
        scheduler = parts["scheduler"] = extend_run(
            point, optimizer, schedule, position=(totals.epoch, totals.step), steps_per_epoch=steps_per_epoch,
            per_step=recipe.lr_per_step, is_main=dist_info.is_main, say=say)
    run_dir = open_run_dir(point, recipe=recipe, notes=notes, data_report=bundle.report, totals=totals,
                           load_all=load_all, is_main=dist_info.is_main, say=say)
    meta = run_meta(recipe, bundle=bundle, fingerprint=fingerprint, recipe_hash=recipe_hash(recipe))
    saver = CheckpointSaver(run_dir, meta=meta, steps_per_epoch=steps_per_epoch, **saver_kwargs(recipe),
                            dist_info=dist_info, device=device)
    val_loader, val_split = validation_split(loaders)
    evaluate_on = partial(evaluate, device=device, amp_dtype=amp_dtype, **eval_kwargs(recipe),
                          progress=TaskProgress("evaluating", unit="batches", min_s=2.0),
                          should_stop=lambda: all_ranks(stop.signum is not None, device, op="max"))
    say(run_banner(run_dir, bundle=bundle, recipe=recipe, device=device, notes=notes,
                   train_images=len(loaders.train.dataset)))
    log = MetricsLog(run_dir, enabled=dist_info.is_main, tracker=tracker)
    progress = RunProgress(recipe.epochs, steps_per_epoch, enabled=verbose and dist_info.is_main,
                           start_epoch=totals.epoch)

    def close_epoch(epoch: int, stats: dict, lr: float, *, pending: bool = False) -> None:
        """Evaluate a trained epoch, log it, checkpoint it; a stop during the evaluation saves the trained
        epoch with the evaluation still to do (``pending``), which the resume does first. With
        ``--precise-bn`` the BatchNorm statistics are recomputed first (pycls), except for a ``pending``
        evaluation: its checkpoint already holds them."""
        if recipe.precise_bn and not pending:
            for m in [model] + ([ema.module] if ema is not None else []):
                update_precise_bn(m, loaders.train, samples=recipe.precise_bn, device=device,
                                  world_size=dist_info.world_size)
        saver.hold_rng()  # the resumed evaluation starts from the same random state
        try:
            val = evaluate_on(model, val_loader)
            ema_val = evaluate_on(ema.module, val_loader) if ema is not None else None
        except StopEvaluation:
            pending = {"epoch": epoch, "lr": lr, "stats": stats}
            saver.save(parts, totals, epoch=epoch + 1, step=0, pending=pending)
            raise stop.in_evaluation(epoch, run_dir=run_dir, progress=progress) from None
        rec = epoch_record(epoch, stats, lr=lr, train_crop=train_crop_at(recipe, epoch), split=val_split,
                           val=val, ema=ema_val)
        log.write(rec, global_step=(epoch + 1) * steps_per_epoch)
        saver.save(parts, totals, epoch=epoch + 1, step=0, best=totals.update_best(rec))
        progress.end_epoch(epoch_line(rec, epochs=recipe.epochs, world_size=dist_info.world_size))
        if all_ranks(stop.requested(epoch, steps_per_epoch), device, op="max"):  # the last epoch too
            raise stop.at_epoch_end(epoch, run_dir=run_dir, progress=progress)

    with (stop.training(),
          run_lifecycle(run_dir, enabled=dist_info.is_main, progress=progress, log=log),
          failures_as_run_errors(run_dir, dist_info=dist_info, dist_timeout=recipe.dist_timeout)):
        if totals.pending_eval is not None:  # stopped during an epoch's evaluation: finish that first
            close_epoch(**totals.pending_eval, pending=True)
        for epoch in range(totals.epoch, recipe.epochs):
            # Data order, crop size and worker seeds are functions of (seed, rank, epoch).
            set_data_epoch(loaders, epoch=epoch, skip_batches=totals.step, rank=dist_info.rank,
                           **data_epoch_kwargs(recipe, epoch=epoch))
            progress.start_epoch(epoch, totals.step)
            totals.start_epoch()
            if recipe.freeze_epochs and epoch == recipe.freeze_epochs and totals.step == 0:
                optimizer.state.clear()  # fastai's unfreeze(): the head-only phase's momenta are dropped

            def after_step(done: int, epoch: int = epoch) -> None:  # progress, then --checkpoint-every
                progress.step(done)
                saver.maybe_save(parts, totals, epoch=epoch, step=done)

            try:
                stats = train_one_epoch(
                    train_model, loaders.train, optimizer, criterion=criterion, device=device, epoch=epoch,
                    first_step=totals.step, step_scheduler=scheduler if recipe.lr_per_step else None, ema=ema,
                    scaler=scaler, amp_dtype=amp_dtype, **epoch_kwargs(recipe, epoch=epoch),
                    on_step=after_step,
                    on_log=partial(log_step, log=log, progress=progress, steps_per_epoch=steps_per_epoch),
                    should_stop=partial(stop.requested, epoch))
            except Interrupted as e:  # the stop decision was all-reduced: every rank is here
                totals.stop_epoch()
                saver.save(parts, totals, epoch=epoch, step=e.step_in_epoch)
                raise stop.stopped(e, epoch=epoch, run_dir=run_dir, progress=progress) from None
            totals.end_epoch(stats, world_size=dist_info.world_size)
            lr = optimizer.param_groups[0]["lr"]  # the lr this epoch ended with, before the epoch step
            if not recipe.lr_per_step:
                scheduler.step()
            close_epoch(epoch, stats, lr)

    # Final report: plain and EMA model on the holdout and, once, on the test split; TensorBoard (with the
    # recipe as hparams) and the tracker get them before the log closes, which it also does on an error here.
    with log, stop.final_evaluation(run_dir, progress=progress, enabled=dist_info.is_main):
        final = final_evaluation(evaluate_on, model=model, ema=ema, holdout=loaders.holdout,
                                 test=loaders.test)
        final.update(tta_report(model, loaders.test, ema_model=ema.module if ema is not None else None,
                                device=device, amp_dtype=amp_dtype, **tta_kwargs(recipe)))  # apart: test_tta
        summary = run_summary(final, recipe=recipe, bundle=bundle, totals=totals, parts=parts,
                              world_size=dist_info.world_size, fingerprint=fingerprint, run_dir=run_dir)
        log.finish(final, hparams=recipe.to_dict())
        if dist_info.is_main:
            finish_run(run_dir, summary)  # summary.json, run.pid -> finished, curves.png
    barrier()
    stop.restore()
    return FitResult(run_dir if dist_info.is_main else None, summary)


def backend_for(device: str) -> str:
    """The device the process group is for: CUDA only when asked for and present."""
    return "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def run_device(device: str, *, local_rank: int = 0) -> torch.device:
    """The recipe's device; plain "cuda" means this rank's GPU."""
    return torch.device(device if device != "cuda" else f"cuda:{local_rank}")


def amp_dtype_for(*, amp: bool, dtype: str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype (or None) and a note when mixed precision was asked for but cannot help."""
    if not amp:
        return None, None
    if device.type == "cpu":
        if dtype != "bfloat16":
            return None, "--amp on CPU supports bfloat16 only: running in float32"
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None, "--amp: this CPU has no native bfloat16 (avx512_bf16/AMX): running in float32"
    return getattr(torch, dtype), None


def set_backend_flags(device: torch.device, *, deterministic: bool = False) -> None:
    """Flush denormals on CPU; deterministic kernels when asked (bit-exact resume)."""
    if device.type == "cpu":
        # Denormal floats (tiny gradients and momenta) can slow CPU kernels several-fold; an early
        # version of this loop ran 6x slower without this. benchmarks/throughput.py sees no
        # difference over 28 steps of the current one; it costs nothing, so it stays.
        torch.set_flush_denormal(True)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def prepare_model(model: nn.Module, *, weights: str | None = None, channels_last: bool = False,
                  device: torch.device | str = "cpu", sync_bn: bool = False, distributed: bool = False,
                  classes: list[str] | None = None, say=None) -> nn.Module:
    """Start from ``weights`` (train/transfer.py: onto ``classes``, head rows copied by class name; ``say``
    gets the line saying what was loaded), set the memory format, move to ``device``; SyncBatchNorm only
    under DDP."""
    if weights:
        report = load_start_weights(model, weights, classes=classes)
        if say is not None:
            say(report)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device)
    if distributed and sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap_ddp(model: nn.Module, *, dist_info: DistInfo, device: torch.device) -> nn.Module:
    """The model the loop trains: DDP-wrapped under torchrun, else the model itself."""
    if not dist_info.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)


def cpu_batch_workers(device: torch.device) -> int | None:
    """DataLoader workers when augmentation runs on whole batches: none on a CPU, where the batched path
    costs a few percent of a step in the main process while a worker process takes cores from the
    training threads (benchmarks/ceiling.py, resnet18 at 32 px on 2 cores: the full recipe at 0.67 of a
    plain loop's img/s with one worker, 0.96 with none); the recipe's on a GPU, where workers overlap."""
    return 0 if device.type == "cpu" else None


def compile_for_training(model: nn.Module, *, enabled: bool = False) -> nn.Module:
    """``torch.compile(model)`` with ``enabled`` (the DDP-wrapped model under torchrun, as PyTorch's DDP
    and compile notes advise), else the model itself. It shares the model's parameters and buffers, so
    saving, evaluating and averaging the plain model see what the compiled one trains."""
    return torch.compile(model) if enabled else model


def validation_split(loaders) -> tuple:
    """(loader, name) evaluated every epoch: the holdout (or K-fold fold) when there is one, else test."""
    return (loaders.holdout, "holdout") if loaders.holdout is not None else (loaders.test, "test")


def run_banner(run_dir: Path | None, *, bundle, recipe: Recipe, device: torch.device, notes: list[str],
               train_images: int) -> str:
    """The lines printed before training: notes, skipped files, what trains on what."""
    lines = [f"note: {n}" for n in notes]
    if bundle.skipped:
        lines.append(f"skipped {len(bundle.skipped)} unreadable files (listed with the reason in "
                     "data_report.csv)")
    lines.append(f"run: {run_dir}  data: {bundle.name} ({train_images} train images, {len(bundle.classes)} "
                 f"classes, {bundle.native_size}px)  model: {recipe.model}  device: {device}")
    return "\n".join(lines)


def log_step(rec: dict, *, log: MetricsLog, progress: RunProgress, steps_per_epoch: int) -> None:
    """A step record (every --print-freq steps) to metrics.jsonl, TensorBoard and the progress display."""
    log.write({"kind": "step", **rec}, global_step=rec["epoch"] * steps_per_epoch + rec["step"])
    progress.log_step(rec)


def epoch_record(epoch: int, stats: dict, *, lr: float, train_crop: int, split: str, val: dict,
                 ema: dict | None = None) -> dict:
    """The epoch's line of metrics.jsonl: training statistics and the validation metrics of each model."""
    rec = {"kind": "epoch", "epoch": epoch, "lr": lr, "train_crop": train_crop,
           **{f"train_{k}": v for k, v in stats.items()}, "val_split": split}
    rec.update({f"val_{k}": v for k, v in val.items()})
    if ema is not None:
        rec.update({f"ema_{k}": v for k, v in ema.items()})
    return rec


def epoch_line(rec: dict, *, epochs: int, world_size: int = 1) -> str:
    """One line per epoch on the console."""
    ema_txt = f" ema {rec['ema_acc1']:.2f}" if "ema_acc1" in rec else ""
    acc5 = f" acc@5 {rec['val_acc5']:.2f}" if rec.get("val_acc5") is not None else ""  # None: <= 5 classes
    return (f"epoch {rec['epoch'] + 1}/{epochs} train loss {rec['train_loss']:.4f} acc@1 "
            f"{rec['train_acc1']:.2f} | {rec['val_split']} acc@1 {rec['val_acc1']:.2f}"
            f"{acc5}{ema_txt} | lr {rec['lr']:.4g} | {rec['train_img_s'] * world_size:.0f} "
            f"img/s | {rec['train_epoch_time']:.1f}s")


def final_evaluation(evaluate_on, *, model: nn.Module, ema=None, holdout=None, test=None) -> dict:
    """Metrics of the model (and EMA model) on each split there is: holdout, holdout_ema, test, test_ema."""
    out = {}
    for split, loader in (("holdout", holdout), ("test", test)):
        if loader is None:
            continue
        out[split] = evaluate_on(model, loader)
        if ema is not None:
            out[f"{split}_ema"] = evaluate_on(ema.module, loader)
    return out


def run_summary(final: dict, *, recipe: Recipe, bundle, totals, parts: dict, world_size: int,
                fingerprint: str, run_dir: Path | None) -> dict:
    """summary.json: final metrics, times, throughput, skips, fingerprints of data and final state."""
    ema = parts.get("ema")
    state = {"model": parts["model"].state_dict(), "optimizer": parts["optimizer"].state_dict(),
             "ema": ema.state_dict() if ema is not None else None}
    return {"run_dir": str(run_dir), "recipe": recipe.recipe_name, "model": recipe.model, "data": bundle.name,
            "epochs": recipe.epochs, "seed": recipe.seed, "world_size": world_size, **final,
            "wall_time_s": totals.wall_time(), "train_time_s": totals.train_time,
            "median_img_s": median(totals.img_rates) if totals.img_rates else None,
            "skipped_files": len(bundle.skipped), "skipped_steps": totals.skipped_steps,
            "data_fingerprint": fingerprint, "state_fingerprint": state_fingerprint(state),
            "decode_errors": sum(s.decode_errors() for s in (bundle.train, bundle.test)),
            "environment": environment()}

