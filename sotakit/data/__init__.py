"""Data: data sets, transforms, mixing collate, samplers, loaders (a leaf: torch and torchvision only)."""

from .batch_augment import BatchCropFlip, batch_crop_for
from .datasets import (
    DataBundle,
    DecodeErrorLimit,
    FolderSource,
    TensorSource,
    image_channels,
    load_data,
    load_image_folder,
)
from .fingerprint import data_fingerprint
from .folder_index import write_data_report
from .image_cache import CachedFolderSource, cached_bundle
from .loaders import (
    Loaders,
    SampleDataset,
    kill_loader_workers,
    make_loaders,
    set_data_epoch,
    set_train_crop_size,
    split_indices,
    stratified_folds,
    stratified_split,
)
from .mixing import Collate
from .samplers import RASampler, sample_seed, worker_seed
from .stats import ColorStats, color_stats, compute_color_stats, normalization, normalized
from .transforms import BatchFinish, make_eval_transform, make_preprocess_transform, make_train_transform

__all__ = ["BatchCropFlip", "BatchFinish", "CachedFolderSource", "cached_bundle",
           "ColorStats", "Collate", "color_stats", "compute_color_stats",
           "normalization", "normalized", "DataBundle", "DecodeErrorLimit", "FolderSource",
           "Loaders", "RASampler", "SampleDataset", "TensorSource", "batch_crop_for", "data_fingerprint",
           "image_channels", "kill_loader_workers", "load_data", "load_image_folder", "make_eval_transform",
           "make_loaders", "make_preprocess_transform", "make_train_transform", "sample_seed",
           "set_train_crop_size", "set_data_epoch", "split_indices",
           "stratified_folds", "stratified_split", "worker_seed", "write_data_report"]
