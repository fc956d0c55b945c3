"""fit(): the reference training loop, read top to bottom. The only place a Recipe becomes arguments.

Follows TorchVision's ``references/classification/train.py`` (same options, same order of work)
and adds what a run needs to be trusted: a seed, a run directory, exact resume (also mid-epoch),
verified checkpoints every N steps or M minutes and on SIGTERM/SIGUSR1/Ctrl-C, skipped non-finite
steps, refusal to resume on changed inputs, and exact DDP evaluation.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import torch
from torch import nn

from ..data import data_fingerprint, kill_loader_workers, load_data, make_loaders, set_train_crop_size, write_data_report
from ..evaluate import evaluate
from ..models import build_model
from ..recipes import Recipe, dump_recipe, load_recipe, resolve, warnings_for
from ..recipes.recipe import OPERATIONAL_FIELDS, checkpoint_interval, ema_alpha, recipe_hash, train_crop_at
from .checkpoint import (LAST, PREV, CheckpointError, copy_checkpoint, load_checkpoint, remove_stale_temps, rng_state,
                         save_checkpoint, set_rng_state, state_fingerprint)
from .distributed import barrier, init_distributed, kill_local_peers
from .ema import build_ema
from .loop import Interrupted, NonFiniteLossError, all_ranks, train_one_epoch
from .optim import build_optimizer, build_scheduler, param_groups
from .progress import RunProgress
from .rundir import MetricsLog, create_run_dir, environment, plot_curves, write_json
from .rundir import mark_finished, mark_running, mark_stopped, run_owner, trim_metrics


@dataclass
class FitResult:
    run_dir: Path | None
    summary: dict


class RunError(RuntimeError):
    """A run failed in a way the user can act on; the message names the last good checkpoint."""


class ResumeMismatchError(RuntimeError):
    """The checkpoint was written for another model, class list, recipe or data set."""


class StopRequest:
    """Turns SIGTERM/SIGINT/SIGUSR1 into a flag the loop polls at step boundaries.

    SIGUSR1 is what SLURM sends ahead of a time limit (``--signal``); it is treated as SIGTERM.
    """

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
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
        stop_at: tuple[int, int] | None = None, force_resume: bool = False,
        tracker: str | None = None) -> FitResult:
    """Train ``recipe`` (or continue the run in ``resume``, with its own recipe); return run dir and summary.

    ``stop_at=(epoch, steps)`` stops as a signal would once ``steps`` steps of epoch ``epoch`` (from 0)
    are done, writing a checkpoint to resume from: for time-sliced jobs and resume tests.
    ``force_resume`` continues even when the checkpoint was written for other inputs (see
    ``_resume_check``).
    ``tracker`` ("mlflow" or "wandb") also sends the recipe and metrics there.
    """
    t_start = time.perf_counter()
    ckpt = None
    resume = resume or (recipe.resume if recipe is not None else None)
    if resume:
        resume_dir = Path(resume)
        run_dir = resume_dir if resume_dir.is_dir() else resume_dir.parent
        if int(os.environ.get("RANK", "0")) == 0:
            remove_stale_temps(run_dir)  # what a crash mid-save left behind
        _refuse_if_running(run_dir, force=force_resume)
        fresh = resume_dir.is_dir() and not any((run_dir / n).exists() for n in (LAST, PREV))
        # A run killed before its first checkpoint starts over in its own directory; otherwise the
        # newest checkpoint whose hash verifies.
        ckpt = None if fresh else load_checkpoint(resume_dir)
        recipe = load_recipe(run_dir / "recipe.toml")
    # The backend follows the device the run will really use (gloo on CPU, NCCL on CUDA).
    dist_info = init_distributed("cuda" if recipe.device.startswith("cuda") and torch.cuda.is_available() else "cpu",
                                 timeout_s=recipe.dist_timeout)
    say = print if (verbose and dist_info.is_main) else (lambda *a, **k: None)

    # Data first: the recipe's sizes depend on the data's native resolution.
    bundle = load_data(recipe.data, recipe.data_root)
    recipe, notes = resolve(recipe, native_size=bundle.native_size, world_size=dist_info.world_size,
                            cuda_available=torch.cuda.is_available())
    fingerprint = data_fingerprint(bundle)
    load_all = True
    if ckpt is not None:
        load_all, resume_notes = _resume_check(ckpt, recipe, bundle.classes, fingerprint, force=force_resume,
                                               run_dir=run_dir)
        notes += resume_notes
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
        timeout=recipe.loader_timeout, kfold=recipe.kfold, fold=recipe.fold,
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
    train_time, img_rates, wall_before, skipped_steps = 0.0, [], 0.0, 0  # totals over all sessions of the run
    if ckpt is not None and not load_all:
        _load_matching(model, ckpt["model"])
        if ema is not None and ckpt.get("ema") is not None:
            _load_matching(ema, ckpt["ema"])
        say(f"forced resume of {run_dir}: matching weights loaded; optimizer, schedule and position start afresh")
    elif ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, first_step, best = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["best_acc1"]
        train_time, img_rates, wall_before = ckpt["train_time"], list(ckpt["img_rates"]), ckpt["wall_time"]
        skipped_steps = ckpt.get("skipped_steps", 0)
        set_rng_state(ckpt["rng"][min(dist_info.rank, len(ckpt["rng"]) - 1)])
        say(f"resuming {run_dir} at epoch {start_epoch + 1}, step {first_step}")
    if ckpt is not None and load_all and dist_info.is_main:
        trim_metrics(run_dir, start_epoch, first_step)  # what was logged after the checkpoint is redone

    if dist_info.is_main and ckpt is None and not resume:
        run_dir = create_run_dir(recipe.output_dir, recipe.run_name or recipe.recipe_name or recipe.model)
        (run_dir / "recipe.toml").write_text(dump_recipe(recipe, {"notes": "; ".join(notes)} if notes else None))
        if bundle.report:
            write_data_report(run_dir / "data_report.csv", bundle.report)
    elif ckpt is None and not resume:
        run_dir = None
    elif ckpt is None:
        say(f"{run_dir} has no checkpoint yet: starting it over")
        if dist_info.is_main:
            trim_metrics(run_dir, 0, 0)
    for n in notes:
        say(f"note: {n}")
    if bundle.skipped:
        say(f"skipped {len(bundle.skipped)} unreadable files (listed with the reason in data_report.csv)")
    log = MetricsLog(run_dir, enabled=dist_info.is_main, tracker=tracker) if run_dir else MetricsLog(Path("."), enabled=False)
    mark_running(run_dir, enabled=dist_info.is_main)  # run.pid: `sotakit runs` tells running from interrupted
    say(f"run: {run_dir}  data: {bundle.name} ({len(loaders.train.dataset)} train images, {len(bundle.classes)} "
        f"classes, {bundle.native_size}px)  model: {recipe.model}  device: {device}")

    rhash = recipe_hash(recipe)  # the recipe is final from here on

    def state(epoch: int, step_in_epoch: int, rngs: list, trained: float) -> dict:
        """Everything a resume needs, as tensors and plain types; ``trained``: training seconds so far."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch,
                "step_in_epoch": step_in_epoch, "best_acc1": best, "train_time": trained,
                "img_rates": list(img_rates), "wall_time": time.perf_counter() - t_start + wall_before, "rng": rngs,
                "skipped_steps": skipped_steps, "recipe": recipe.to_dict(), "recipe_hash": rhash,
                "data_fingerprint": fingerprint, "classes": list(bundle.classes),
                "native_size": bundle.native_size, "mean": list(bundle.mean), "std": list(bundle.std)}

    def checkpoint(epoch: int, step: int, trained: float) -> None:
        """Save the state after ``step`` steps of ``epoch`` (a collective: every rank calls it)."""
        nonlocal last_save
        rngs = _gather_rng(dist_info)
        if dist_info.is_main:
            save_checkpoint(state(epoch, step, rngs, trained), run_dir / LAST, keep_previous=True,
                            meta={"epoch": epoch, "step": step})
        last_save = time.perf_counter()

    every_steps, every_s = checkpoint_interval(recipe.checkpoint_every)
    last_save = time.perf_counter()

    def periodic(epoch: int, done: int, epoch_start: float) -> None:
        """--checkpoint-every: mid-epoch saves (the epoch's end saves anyway)."""
        if done >= steps_per_epoch or not (every_steps or every_s):
            return
        due = bool(every_steps) and (epoch * steps_per_epoch + done) % every_steps == 0
        if every_s:  # clocks differ between ranks: any rank's clock decides for all
            due = all_ranks(due or time.perf_counter() - last_save >= every_s, device, op="max")
        if due:
            checkpoint(epoch, done, train_time + time.perf_counter() - epoch_start)

    def interrupted(e: Interrupted, epoch: int, step: int, signum, epoch_start: float) -> Interrupted:
        nonlocal train_time
        train_time += time.perf_counter() - epoch_start  # the part of the epoch that was trained
        checkpoint(epoch, step, train_time)  # the stop decision was all-reduced, so every rank is here
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
                        on_step=lambda done, e=epoch, t0=epoch_start: (progress.step(done) if progress.live else None,
                                                                       periodic(e, done, t0)),
                        should_stop=lambda done, e=epoch: should_stop(e, done),
                        max_nonfinite_skips=recipe.max_nonfinite_skips)
                except Interrupted as e:
                    raise interrupted(e, epoch, e.step_in_epoch, stop.signum, epoch_start) from None
                except NonFiniteLossError as e:
                    raise NonFiniteLossError(e.epoch, e.step, e.value, e.skipped,
                                             hint=_last_checkpoint_hint(run_dir)) from None
                except CheckpointError as e:
                    kill_local_peers(dist_info)  # they would wait for rank 0 in the next collective
                    raise RunError(f"{e}. {_last_checkpoint_hint(run_dir)}") from e
                except RuntimeError as e:
                    loading = "DataLoader" in str(e)
                    if not (loading or dist_info.enabled):
                        raise
                    if loading:
                        kill_loader_workers()  # a hung worker would block the interpreter's exit
                    if dist_info.enabled:  # the others would wait in a collective until the timeout
                        kill_local_peers(dist_info)
                    what = "data loading failed" if loading else ("DDP training failed (a peer died, or did not "
                                                                  f"answer within --dist-timeout {recipe.dist_timeout:g}s)")
                    raise RunError(f"{what}: {str(e).splitlines()[0].rstrip('. ')}. {_last_checkpoint_hint(run_dir)}") from e
                skipped_steps += stats["skipped_steps"]
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
                try:
                    checkpoint(epoch + 1, 0, train_time)
                    if dist_info.is_main and is_best:
                        copy_checkpoint(run_dir / LAST, run_dir / "checkpoint-best.pt")
                except CheckpointError as e:
                    kill_local_peers(dist_info)
                    raise RunError(f"{e}. {_last_checkpoint_hint(run_dir)}") from e
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
    except BaseException as e:
        if isinstance(e, (NonFiniteLossError, RunError)):
            progress.message(f"error: {e}")
        progress.close()
        log.close()
        mark_stopped(run_dir, e, enabled=dist_info.is_main)  # run.pid goes; an error is recorded
        raise
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
               "skipped_steps": skipped_steps, "data_fingerprint": fingerprint,
               "state_fingerprint": state_fingerprint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                       "ema": ema.state_dict() if ema is not None else None}),
               "decode_errors": sum(s.decode_errors() for s in (bundle.train, bundle.test)),
               "environment": environment()}
    if dist_info.is_main:
        write_json(run_dir / "summary.json", summary)
        mark_finished(run_dir)
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


def _resume_check(ckpt: dict, recipe: Recipe, classes: list[str], fingerprint: str, *, force: bool,
                  run_dir: Path) -> tuple[bool, list[str]]:
    """Refuse to resume on changed inputs; (load everything?, notes) when the checks pass or are forced.

    Forced: with the same model and classes every piece of state is loaded and the run continues
    with the current recipe and data; with another model or class list only the weights whose name
    and shape match are loaded and training starts afresh from epoch 1.
    """
    saved = ckpt.get("recipe", {})
    problems = []
    if saved.get("model", recipe.model) != recipe.model:
        problems.append(f"model: checkpoint {saved['model']}, now {recipe.model}")
    if list(ckpt.get("classes", classes)) != list(classes):
        problems.append(f"classes: checkpoint {len(ckpt['classes'])} ({', '.join(ckpt['classes'][:5])}...), "
                        f"now {len(classes)} ({', '.join(classes[:5])}...)")
    # Field by field (the hash alone would refuse every run after an upgrade adds a field): a field
    # the checkpoint does not know counts as changed only when it is not at its default.
    defaults = Recipe().to_dict()
    changed = sorted(k for k, v in recipe.to_dict().items() if k not in OPERATIONAL_FIELDS
                     and saved.get(k, defaults[k]) != v)
    if saved and changed:
        problems.append(f"recipe hash: checkpoint {ckpt.get('recipe_hash', '?')}, now {recipe_hash(recipe)} "
                        f"(changed: {', '.join(f'{k} {saved.get(k, defaults[k])!r} -> {getattr(recipe, k)!r}' for k in changed)})")
    if ckpt.get("data_fingerprint", fingerprint) != fingerprint:
        problems.append(f"data fingerprint: checkpoint {ckpt['data_fingerprint']}, now {fingerprint} "
                        "(images, labels or classes changed)")
    if not problems:
        return True, []
    if not force:
        raise ResumeMismatchError(
            f"refusing to resume {run_dir}: the checkpoint was written for other inputs.\n  "
            + "\n  ".join(problems)
            + "\nStart a new run (add --weights FILE to begin from its weights), or pass --force-resume to "
              "continue anyway (same model and classes: all state is loaded; otherwise only matching weights).")
    same_shape = not any(p.startswith(("model", "classes")) for p in problems)
    return same_shape, [f"--force-resume overrides: {p}" for p in problems]


def _refuse_if_running(run_dir: Path, *, force: bool) -> None:
    """Two processes rotating one run's checkpoints would undo each other's work (a requeued job
    whose first incarnation still runs): refuse while run.pid names a live process."""
    owner = run_owner(run_dir) if int(os.environ.get("RANK", "0")) == 0 and not force else None
    if owner is None:
        return
    info, alive = owner
    if alive and info.get("pid") != os.getpid():
        raise ResumeMismatchError(f"refusing to resume {run_dir}: process {info['pid']} on {info.get('host')} is "
                                  "still training it (run.pid). Stop it first, or pass --force-resume if it is gone.")


def _load_matching(module: nn.Module, saved: dict) -> None:
    """Load the tensors of ``saved`` whose name and shape match ``module``'s; leave the rest as built."""
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}, strict=False)


def _last_checkpoint_hint(run_dir: Path | None) -> str:
    found = [Path(run_dir) / n for n in (LAST, PREV) if run_dir is not None and (Path(run_dir) / n).exists()]
    if not found:
        return "No checkpoint was written yet."
    return f"The last good checkpoint is {found[0]}; continue with: sotakit train --resume {run_dir}"


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
