"""The Recipe: every option of TorchVision's ``references/classification/train.py`` plus sotakit's own.

Field names are the reference script's argparse ``dest`` names and defaults are the reference
defaults (torchvision 0.29), so a recipe written for the reference reads the same here. Each field's
``help`` metadata is its ``--help`` text; flags are derived from names (``lr_min`` -> ``--lr-min``).
Standard library only: this module is a leaf every other part may read.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional


def _f(default: Any, help: str, *, ref: bool = True, choices: tuple | None = None, aliases: tuple = ()):
    return field(default=default, metadata={"help": help, "ref": ref, "choices": choices, "aliases": aliases})


OPTIMIZERS = ("sgd", "sgd-nesterov", "rmsprop", "adamw")
SCHEDULERS = ("steplr", "cosineannealinglr", "exponentiallr", "onecycle", "flatcos")
PER_STEP_SCHEDULERS = ("onecycle", "flatcos")  # fastai's: stepped every batch (train.schedules)
AUTO_AUGMENT = ("ta_wide", "ra", "augmix", "imagenet", "cifar10", "svhn")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
MACHINE_PROBE_CHOICES = ("amp", "channels_last")  # what train.machine may switch on


@dataclass(frozen=True)
class Recipe:
    """A complete, immutable description of one training run."""

    # --- the 51 options of references/classification/train.py, same names and defaults ---
    data_path: str = _f("/datasets01/imagenet_full_size/061417/",
                        "dataset folder with train/ and val/ (same as --data PATH)")
    model: str = _f("resnet18", "model name (see `sotakit models`)")
    device: str = _f("cuda", "cuda or cpu; cuda falls back to cpu with a warning when no GPU is present")
    batch_size: int = _f(32, "images per process per step; global batch = world_size x batch_size",
                         aliases=("-b",))
    epochs: int = _f(90, "number of total epochs to run")
    workers: int = _f(16, "DataLoader worker processes (capped at the cores available)", aliases=("-j",))
    opt: str = _f("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = _f(0.1, "initial learning rate (scaled by global batch / lr_ref_batch when that is set)")
    momentum: float = _f(0.9, "momentum (sgd, rmsprop)")
    weight_decay: float = _f(1e-4, "weight decay", aliases=("--wd",))
    norm_weight_decay: Optional[float] = _f(None, "weight decay for normalization layers (default: "
                                                  "weight_decay)")
    bias_weight_decay: Optional[float] = _f(None, "weight decay for bias parameters (default: weight_decay)")
    transformer_embedding_decay: Optional[float] = _f(None, "weight decay for class token, position "
                                                            "embeddings and relative position bias tables")
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss")
    mixup_alpha: float | str = _f(0.0, "mixup Beta(alpha, alpha); 0 disables; 'auto': by model size as the "
                                        "Keras RegNet training chose it (RegNets only; the run notes the "
                                        "value)")
    cutmix_alpha: float = _f(0.0, "cutmix Beta(alpha, alpha); 0 disables; with mixup, one of the two per "
                                  "batch")
    lr_scheduler: str = _f("steplr", "learning-rate schedule after warm-up", choices=SCHEDULERS)
    lr_warmup_epochs: int = _f(0, "epochs of warm-up")
    lr_warmup_method: str = _f("constant", "warm-up shape", choices=("constant", "linear"))
    lr_warmup_decay: float = _f(0.01, "learning-rate factor at the start of warm-up")
    lr_step_size: int = _f(30, "StepLR: decay every this many epochs")
    lr_gamma: float = _f(0.1, "StepLR/ExponentialLR decay factor")
    lr_min: float = _f(0.0, "cosine schedule's minimum learning rate")
    print_freq: int = _f(10, "log a metrics line every this many steps")
    output_dir: str = _f(".", "runs are created under OUTPUT_DIR/runs/")
    resume: str = _f("", "run directory or checkpoint to continue from")
    start_epoch: int = _f(0, "first epoch (overridden by --resume)")
    cache_dataset: bool = _f(False, "accepted for compatibility; folder indexes are cached anyway")
    sync_bn: bool = _f(False, "convert BatchNorm to SyncBatchNorm under DDP")
    test_only: bool = _f(False, "only evaluate (with --resume or --weights)")
    auto_augment: Optional[str] = _f(None, "automatic augmentation policy", choices=AUTO_AUGMENT)
    ra_magnitude: int = _f(9, "RandAugment magnitude")
    augmix_severity: int = _f(3, "AugMix severity")
    random_erase: float = _f(0.0, "random erasing probability")
    amp: bool = _f(False, "mixed precision (autocast with amp_dtype)")
    world_size: int = _f(1, "number of processes (set from WORLD_SIZE under torchrun)")
    dist_url: str = _f("env://", "url used to set up distributed training")
    model_ema: bool = _f(False, "keep an exponential moving average of parameters and buffers")
    model_ema_steps: int = _f(32, "update the EMA every this many steps")
    model_ema_decay: float = _f(0.99998, "EMA decay (adjusted to batch, steps and epochs as the reference "
                                         "does)")
    use_deterministic_algorithms: bool = _f(False, "deterministic kernels only (bit-exact resume)")
    interpolation: str = _f("bilinear", "resize interpolation", choices=INTERPOLATIONS)
    val_resize_size: int = _f(256, "validation resize size")
    val_crop_size: int = _f(224, "validation center-crop size")
    train_crop_size: int = _f(224, "training random-resized-crop size")
    clip_grad_norm: Optional[float] = _f(None, "maximum gradient norm; unset disables")
    ra_sampler: bool = _f(False, "repeated-augmentation sampler (one process or DDP)")
    ra_reps: int = _f(3, "repetitions per image with --ra-sampler")
    weights: Optional[str] = _f(None, "weights to start from: a sotakit weights/checkpoint file (no hub "
                                      "downloads)")
    backend: str = _f("pil", "image backend", choices=("pil", "tensor"))
    use_v2: bool = _f(False, "accepted for compatibility; sotakit always uses transforms.v2")

    # --- sotakit's own ---
    data: str = _f("fashion-mnist", "a data set name (fashion-mnist, cifar10, imagenette-160, ...) or a "
                                    "folder", ref=False)
    data_root: Optional[str] = _f(None, "where named data sets are looked up and downloaded ($SOTAKIT_DATA)",
                                  ref=False)
    seed: int = _f(0, "seed for weights, data order and augmentation", ref=False)
    holdout: float = _f(0.0, "fraction of the training set held out (stratified) as validation", ref=False)
    channels_last: bool = _f(False, "channels-last memory format", ref=False)
    amp_dtype: str = _f("bfloat16", "autocast dtype; float16 uses a GradScaler (CUDA)", ref=False,
                        choices=("bfloat16", "float16"))
    compile: bool = _f(False, "torch.compile the training module (the model DDP wraps; evaluation and EMA "
                              "run it eagerly); checkpoints and weights hold the plain model's state dict, "
                              "and steps that compile are left out of img/s", ref=False)
    machine_probe: str = _f("amp,channels_last", "what a short probe of the machine at the start may switch "
                                                 "on where the recipe leaves it off, on a CPU device: amp "
                                                 "(bf16 autocast where the CPU has native bf16), "
                                                 "channels_last (where it measures faster); 'none': nothing. "
                                                 "A flag you type (--amp, --no-amp, --channels-last, "
                                                 "--no-channels-last) takes its name out; the choices are "
                                                 "noted and stored in recipe.toml, so a resume keeps them; "
                                                 "$SOTAKIT_PROBE=off switches the probe off", ref=False)
    run_name: str = _f("", "name of the run directory (default: recipe or model name)", ref=False)
    lr_ref_batch: Optional[int] = _f(None, "global batch the lr was tuned for; lr is scaled linearly by "
                                           "global batch / this", ref=False)
    recipe_name: str = _f("", "preset this recipe came from (informational)", ref=False)
    lr_per_step: bool = _f(False, "step the schedule every batch (warm-up and decay in steps) instead of "
                                  "every epoch", ref=False)
    train_limit: int = _f(0, "train on a stratified, seeded subset of this many images (0: all), for quick "
                             "runs", ref=False)
    test_limit: int = _f(0, "evaluate on a stratified, seeded subset of this many test images (0: all)",
                         ref=False)
    progressive_resize: int = _f(0, "fastai's progressive resizing: the train crop starts at this size and "
                                    "grows linearly to --train-crop-size by three quarters of the epochs "
                                    "(0: off)", ref=False)
    progressive_resize_epochs: int = _f(0, "with --progressive-resize S: fastbook ch. 7's two phases instead "
                                           "of the ramp: the first this many epochs train at S, the rest at "
                                           "--train-crop-size (0: the linear ramp)", ref=False)
    crop_min_scale: float = _f(0.08, "smallest area fraction of the training random-resized crop (the "
                                     "inception crop's area factor: the Keras RegNets used 0.08, 0.16, 0.25)",
                               ref=False, aliases=("--area-factor",))
    color_jitter: float = _f(0.0, "colour jitter strength f: brightness, contrast and saturation each scaled "
                                  "by a random factor in [1-f, 1+f] per image "
                                  "(timm's --color-jitter, e.g. 0.4; 0: off)",
                             ref=False)
    model_ema_horizon: Optional[float] = _f(None, "EMA averaging horizon as a fraction F of the run's EMA "
                                                  "updates: decay = 1 - 1/(F x updates) (unset: the "
                                                  "reference's decay adjustment; ~0.04 on its ImageNet run)",
                                            ref=False)
    pca_jitter: float = _f(0.0, "AlexNet's PCA colour jitter: std of the per-image weights of the colour "
                                "eigenvectors (ImageNet's eigen-decomposition; 0.1 in AlexNet, pycls and the "
                                "Keras RegNets; 0: off; no effect on one-channel images)", ref=False)
    pca_stats: str = _f("imagenet", "the colour eigen-decomposition --pca-jitter uses: ImageNet's, or the "
                                    "training split's own ('data': `sotakit data stats`, cached)", ref=False,
                        choices=("imagenet", "data"))
    batch_augment: bool = _f(True, "on in-memory data, run crop, flip, TrivialAugment/RandAugment and "
                                   "random erasing on whole batches in the collate function (each image "
                                   "its own draws, from torchvision's distributions); --no-batch-augment: "
                                   "torchvision's per-image transforms", ref=False)
    precise_bn: int = _f(0, "before each evaluation, set BatchNorm statistics (model and EMA) to the average "
                            "of the batch statistics of this many training images, as pycls (8192; 0: off)",
                         ref=False)
    # Reliability (issue 3): how often state is saved and how failures are bounded.
    checkpoint_every: str = _f("", "also checkpoint every N steps ('500'), M minutes ('10m') or S seconds "
                                   "('90s'); empty: at epoch ends only", ref=False)
    max_nonfinite_skips: int = _f(5, "consecutive steps with a NaN/inf loss skipped (not applied) before the "
                                     "run stops; 0 stops at the first", ref=False)
    dist_timeout: float = _f(1800.0, "seconds a DDP collective waits for a hung or dead rank before the job "
                                     "fails", ref=False)
    loader_timeout: float = _f(600.0, "seconds to wait for a DataLoader worker's batch before failing "
                                      "(workers > 0)", ref=False)
    lr_auto: bool = _f(False, "run the LR range test (`sotakit lr-find`) before training and train at its "
                              "valley suggestion instead of --lr (`--lr auto` sets this); noted in "
                              "recipe.toml",
                       ref=False)
    # --- fastai's schedules (issue 11): onecycle and flatcos, see sotakit/train/schedules.py ---
    lr_pct_start: Optional[float] = _f(None, "onecycle: fraction of steps rising to --lr; flatcos: fraction "
                                             "held flat (unset: fastai's 0.25 and 0.75; torch's OneCycleLR "
                                             "uses 0.3)", ref=False)
    lr_div: float = _f(25.0, "onecycle starts at lr/div (fastai and torch: 25)", ref=False)
    lr_div_final: float = _f(1e5, "onecycle and flatcos end at lr/div_final (fastai: 1e5; torch's "
                                  "OneCycleLR: 2.5e5)", ref=False)
    tta: str = _f("", "test-time augmentation in the final report, reported apart as test_tta: N augmented "
                      "passes with the training transforms blended with the plain view (fastai's), or 'flip' "
                      "('': off)", ref=False)
    tta_beta: float = _f(0.25, "weight of the plain view in the N-pass TTA blend (fastai's beta)", ref=False)
    normalize: str = _f("", "Normalize statistics: data (mean/std measured on the training split, "
                            "`sotakit data stats`), imagenet, none (raw [0, 1] pixels); '': the data set's "
                            "own (catalog figures, ImageNet's for folders)", ref=False,
                        choices=("", "data", "imagenet", "none"))
    # --- K-fold cross-validation (issue 4): confirm a choice on data it was not chosen on ---
    kfold: int = _f(0, "split the training set into K stratified folds, one of them the validation split "
                       "(0: off); `train --kfold K` without --fold runs all K folds and reports mean ± std",
                    ref=False)
    fold: int = _f(0, "with --kfold: the fold (0..K-1) this run validates on; it trains on the other K-1",
                   ref=False)
    max_decode_errors: float = _f(0.01, "fraction of a split's images that may fail to decode during the run "
                                        "(each is replaced by the next readable image and counted) before "
                                        "the run stops; the index pass has already excluded files broken at "
                                        "the start (data_report.csv)", ref=False)
    data_cache: str = _f("auto", "image folders: decode every image once into a presized uint8 cache "
                                 "($XDG_CACHE_HOME/sotakit/images, keyed by the data fingerprint) that later "
                                 "runs and every epoch memory-map instead of decoding the files; auto: when "
                                 "it fits in half the free disk and half the RAM; on: whatever its size; "
                                 "off: decode the files every epoch", ref=False,
                         choices=("auto", "on", "off"))
    # --- fine-tuning from --weights (issue 13) ---
    freeze_epochs: int = _f(0, "fastai's fine_tune: the first K of --epochs train only the head (and the "
                               "normalization layers), the rest everything at half the lr, lower for earlier "
                               "layers; a one-cycle schedule per phase replaces --lr-scheduler (0: off)",
                            ref=False)

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(Recipe)}
REFERENCE_FIELDS = tuple(f.name for f in fields(Recipe) if f.metadata["ref"])


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache  # get_type_hints evaluates every annotation of Recipe: ~0.4 ms a call
def field_type(name: str) -> type:
    """The scalar type of a field (Optional[...] unwrapped)."""
    hint = typing.get_type_hints(Recipe)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]  # Optional[X] is Union[X, None]
    return args[0] if args else hint


class RecipeError(ValueError):
    """A recipe value or key is invalid; the message says what to use instead."""


def closest(name: str, candidates) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


# Fields that also take the word "auto": resolve() turns it into a number for the model (model_size).
AUTO_FIELDS = ("mixup_alpha",)


def coerce(name: str, value: Any) -> Any:
    """Check one key/value against the Recipe schema and return the typed value."""
    if name not in FIELDS:
        from .flags import key_hint  # flags imports this module; the synonyms table lives there
        raise RecipeError(f"unknown recipe key {name!r}.{key_hint(name)}")
    if name in AUTO_FIELDS and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if value is None:
        if FIELDS[name].default is not None:
            raise RecipeError(f"{name} cannot be empty")
        return None
    t = field_type(name)
    if t is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            value = value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise RecipeError(f"{name} must be true or false, got {value!r}")
    elif t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif t is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RecipeError(f"{name} must be a number, got {value!r}") from None
    elif t is int and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise RecipeError(f"{name} must be an integer, got {value!r}") from None
    if not isinstance(value, t) or (t is int and isinstance(value, bool)):
        raise RecipeError(f"{name} must be {t.__name__}, got {value!r}")
    choices = FIELDS[name].metadata["choices"]
    if choices is not None:
        if t is str:
            value = value.lower() if name in ("backend", "opt", "lr_scheduler", "lr_warmup_method") else value
        if name == "opt" and value.startswith("sgd") and value not in choices:
            value = "sgd-nesterov" if "nesterov" in value else "sgd"  # the reference matches by prefix
        if value not in choices:
            raise RecipeError(f"{name}={value!r} is not one of "
                              f"{', '.join(choices)}.{closest(str(value), choices)}")
    return value


def make_recipe(base: Recipe | None = None, **changes: Any) -> Recipe:
    """A Recipe from ``base`` with ``changes`` checked, typed and validated."""
    typed = {k: coerce(k, v) for k, v in changes.items()}
    recipe = (base or Recipe()).replace(**typed)
    validate(recipe)
    return recipe


_POSITIVE = ("batch_size", "epochs", "lr", "model_ema_steps", "val_resize_size", "val_crop_size",
             "train_crop_size", "lr_step_size", "ra_reps", "print_freq", "world_size")
_NON_NEGATIVE = ("workers", "momentum", "weight_decay", "norm_weight_decay", "bias_weight_decay",
                 "transformer_embedding_decay", "mixup_alpha", "cutmix_alpha", "lr_warmup_epochs",
                 "lr_min", "start_epoch", "ra_magnitude", "clip_grad_norm", "seed", "train_limit",
                 "test_limit", "progressive_resize", "max_nonfinite_skips", "color_jitter", "pca_jitter",
                 "precise_bn", "progressive_resize_epochs")
_UNIT = ("crop_min_scale", "max_decode_errors", "label_smoothing", "random_erase", "lr_warmup_decay",
         "model_ema_decay", "lr_gamma", "tta_beta")


def checkpoint_interval(text: str) -> tuple[int, float]:
    """``--checkpoint-every`` as (steps, seconds); 0 means unset. '500' -> (500, 0), '10m' -> (0, 600)."""
    t = text.strip().lower()
    try:
        if not t:
            return 0, 0.0
        if t.endswith("m"):
            value = (0, float(t[:-1]) * 60)
        elif t.endswith("s") and not t.endswith("steps"):
            value = (0, float(t[:-1]))
        else:
            value = (int(t.removesuffix("steps")), 0.0)
    except ValueError:
        value = (-1, -1.0)
    if min(value) < 0 or max(value) <= 0:
        raise RecipeError(f"checkpoint_every={text!r}: give a number of steps ('500'), minutes ('10m') or "
                          "seconds ('90s')")
    return value


def validate(r: Recipe) -> None:
    """Raise RecipeError for values no run could use."""
    for name in _POSITIVE:
        if getattr(r, name) <= 0:
            raise RecipeError(f"{name} must be > 0, got {getattr(r, name)}")
    for name in _NON_NEGATIVE:
        v = getattr(r, name)
        if v is not None and v != "auto" and v < 0:
            raise RecipeError(f"{name} must be >= 0, got {v}")
    for name in _UNIT:
        if not 0.0 <= getattr(r, name) <= 1.0:
            raise RecipeError(f"{name} must be in [0, 1], got {getattr(r, name)}")
    for name in ("dist_timeout", "loader_timeout"):
        if getattr(r, name) <= 0:
            raise RecipeError(f"{name} must be > 0 seconds, got {getattr(r, name)}")
    checkpoint_interval(r.checkpoint_every)  # raises on a malformed value
    if r.start_epoch >= r.epochs:
        raise RecipeError(f"start_epoch ({r.start_epoch}) must be below epochs ({r.epochs}): the run would "
                          "train nothing and report an untrained model; lower --start-epoch or raise "
                          "--epochs")
    if not 0.0 <= r.holdout < 1.0:
        raise RecipeError(f"holdout must be in [0, 1), got {r.holdout}; use e.g. --holdout 0.1")
    if not 1 <= r.augmix_severity <= 10:
        raise RecipeError(f"augmix_severity must be in 1..10, got {r.augmix_severity}")
    if r.ra_magnitude > 30:  # torchvision's RandAugment indexes its 31 magnitude bins with it
        raise RecipeError(f"ra_magnitude must be in 0..30 (RandAugment's 31 magnitude bins), got "
                          f"{r.ra_magnitude}; 9 is the reference's and timm's default")
    if r.progressive_resize > r.train_crop_size:
        raise RecipeError(f"progressive_resize ({r.progressive_resize}) must not exceed train_crop_size "
                          f"({r.train_crop_size})")
    if r.progressive_resize_epochs and not (r.progressive_resize and r.progressive_resize_epochs < r.epochs):
        raise RecipeError(f"progressive_resize_epochs ({r.progressive_resize_epochs}) needs "
                          f"--progressive-resize SIZE and fewer epochs than --epochs ({r.epochs}): the rest "
                          "train at full size")
    if r.kfold == 1 or r.kfold < 0:
        raise RecipeError(f"kfold must be 0 (off) or at least 2, got {r.kfold}")
    if r.kfold and not 0 <= r.fold < r.kfold:
        raise RecipeError(f"fold must be in 0..{r.kfold - 1} with kfold {r.kfold}, got {r.fold}")
    if r.freeze_epochs and not 0 < r.freeze_epochs < r.epochs:
        raise RecipeError(f"freeze_epochs must be below epochs (the unfrozen phase needs at least one), got "
                          f"freeze_epochs {r.freeze_epochs} with epochs {r.epochs}")
    if r.kfold and r.holdout:
        raise RecipeError("kfold and holdout both choose the validation split; use --kfold K or --holdout F, "
                          "not both")
    if r.model_ema_horizon is not None and not 0.0 < r.model_ema_horizon <= 1.0:
        raise RecipeError(f"model_ema_horizon must be in (0, 1], got {r.model_ema_horizon}; e.g. 0.1 "
                          "averages over the last tenth of the run's EMA updates")
    if r.lr_scheduler in PER_STEP_SCHEDULERS and r.lr_warmup_epochs:
        raise RecipeError(f"{r.lr_scheduler} has its own warm-up; use --lr-warmup-epochs 0 (or "
                          "--lr-pct-start for a longer rise)")
    if r.tta and r.tta != "flip" and not (r.tta.isdigit() and int(r.tta) >= 1):
        raise RecipeError(f"tta must be a number of passes (e.g. 4), 'flip' or '' (off), got {r.tta!r}")
    if r.lr_pct_start is not None and not 0.0 <= r.lr_pct_start <= 1.0:
        raise RecipeError(f"lr_pct_start must be in [0, 1], got {r.lr_pct_start}")
    if r.lr_div <= 0 or r.lr_div_final <= 0:
        raise RecipeError("lr_div and lr_div_final must be > 0")
    if r.lr_ref_batch is not None and r.lr_ref_batch <= 0:
        raise RecipeError("lr_ref_batch must be > 0")
    probed = [k.strip() for k in r.machine_probe.split(",") if k.strip()]
    if probed != ["none"] and not set(probed) <= set(MACHINE_PROBE_CHOICES):
        raise RecipeError(f"machine_probe={r.machine_probe!r}: give a comma-separated list of "
                          f"{', '.join(MACHINE_PROBE_CHOICES)}, or 'none'")
    if r.mixup_alpha == "auto":
        from .model_size import auto_mixup_alpha  # raises for a model the rule has no size for
        auto_mixup_alpha(r.model)


def warnings_for(r: Recipe, typed: set[str] | None = None) -> list[str]:
    """Options the reference silently ignores or that contradict each other, each with the reason.

    Only about options the user chose: ``typed`` names them; None means the fields that differ from the
    preset ``r.recipe_name`` (all of them without one), so a preset's own values raise no note.
    What depends on the data (the EMA horizon against the run's steps) is train.recipe_kwargs'.
    """
    chosen = _chosen_fields(r) if typed is None else set(typed)
    out = []
    if r.ra_sampler and r.ra_reps < 2 and chosen & {"ra_sampler", "ra_reps"}:
        out.append(f"--ra-sampler with --ra-reps {r.ra_reps} repeats nothing: use --ra-reps 2 or more, or "
                   "drop --ra-sampler")
    if not r.ra_sampler and r.ra_reps != FIELDS["ra_reps"].default and "ra_reps" in chosen:
        out.append(f"--ra-reps {r.ra_reps} has no effect without --ra-sampler")
    if (r.mixup_alpha != 0 or r.cutmix_alpha > 0) and r.batch_size < 2:
        out.append("mixup/cutmix mix images within a batch; with --batch-size 1 each image is mixed with "
                   "itself")
    if r.val_crop_size > r.val_resize_size:
        out.append(f"--val-crop-size {r.val_crop_size} is larger than --val-resize-size {r.val_resize_size}: "
                   "the crop pads")
    if r.lr_scheduler != "steplr" and r.lr_step_size != FIELDS["lr_step_size"].default \
            and "lr_step_size" in chosen:
        out.append(f"--lr-step-size only applies to steplr, not {r.lr_scheduler}")
    for name in COMPATIBILITY_FIELDS:
        if getattr(r, name) != FIELDS[name].default and name in chosen:
            out.append(f"{flag_of(name)} is accepted for compatibility and has no effect in sotakit")
    if r.freeze_epochs and not r.weights and "freeze_epochs" in chosen:
        out.append("--freeze-epochs without --weights trains the head of a randomly initialised body first; "
                   "it is meant for fine-tuning from --weights FILE")
    if r.sync_bn and r.world_size == 1 and "sync_bn" in chosen:
        out.append("--sync-bn only applies under DDP (torchrun with several processes)")
    if note := warmup_note(r):
        out.append(note)
    if r.lr_warmup_epochs == 0 and r.lr_warmup_method != "constant" and "lr_warmup_method" in chosen:
        out.append("--lr-warmup-method has no effect with --lr-warmup-epochs 0")
    return out


def warmup_note(r: Recipe) -> str | None:
    """The one rule for a warm-up as long as the run or longer, shared by train, sweep and ablate.

    TorchVision's train.py accepts it (SequentialLR's milestone lies beyond the last epoch), so the
    whole run is warm-up; sotakit does the same and says so instead of refusing or shrinking it.
    """
    if r.lr_warmup_epochs < r.epochs or r.lr_warmup_epochs == 0:
        return None
    if r.lr_warmup_method == "linear":
        end = r.lr_warmup_decay + (1 - r.lr_warmup_decay) * r.epochs / r.lr_warmup_epochs
        shape = (f"the lr rises linearly from {r.lr_warmup_decay:g} x lr and ends at {end:.2g} x lr "
                 f"(lr {r.lr:g})")
    else:
        shape = f"the lr stays at {r.lr_warmup_decay:g} x lr (lr {r.lr:g}) throughout"
    return (f"--lr-warmup-epochs {r.lr_warmup_epochs} >= --epochs {r.epochs}: the whole run is warm-up, as "
            f"in TorchVision's train.py; {shape} and the {r.lr_scheduler} schedule never starts "
            f"(use --lr-warmup-epochs {max(0, r.epochs - 1)} or fewer to reach it)")


def _chosen_fields(r: Recipe) -> set[str]:
    """The fields of ``r`` that differ from its preset's (all fields when it names none)."""
    if not r.recipe_name:
        return set(FIELDS)
    from .presets import load_preset  # presets imports this module
    try:
        preset = load_preset(r.recipe_name)
    except RecipeError:
        return set(FIELDS)
    return {k for k in FIELDS if getattr(r, k) != getattr(preset, k)}


# Reference flags accepted so its command lines run, with a warning and no effect.
COMPATIBILITY_FIELDS = ("cache_dataset", "use_v2", "backend", "dist_url")
# Fields that say how a run is carried out or evaluated, not what it trains: a resume may change them
# (val_resize_size: `sotakit tune-resize` stores its choice in the run's recipe).
OPERATIONAL_FIELDS = ("resume", "output_dir", "data_root", "print_freq", "workers", "test_only",
                      "checkpoint_every", "val_resize_size",
                      "dist_timeout", "loader_timeout", "max_nonfinite_skips", "dist_url", "backend",
                      "use_v2", "cache_dataset")


def recipe_hash(recipe: Recipe, ignore=OPERATIONAL_FIELDS) -> str:
    """SHA-256 (16 hex digits) of the recipe without the fields in ``ignore``: by default what the
    recipe computes (resume checks); experiments pass their own list (one configuration over seeds).

    Only fields away from their defaults count: a field a later version adds, at a default that keeps
    the old behaviour, leaves every hash as it was, so an upgrade neither re-runs an experiment's
    finished runs nor changes what a run reports.
    """
    import hashlib
    import json
    defaults = Recipe().to_dict()
    d = {k: v for k, v in recipe.to_dict().items() if k not in ignore and v != defaults[k]}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
