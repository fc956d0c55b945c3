"""Data: data sets, transforms, mixing collate, samplers, loaders (a leaf: torch and torchvision only)."""

from .datasets import DataBundle, DecodeErrorLimit, FolderSource, TensorSource, load_data, load_image_folder
from .fingerprint import data_fingerprint
from .folder_index import write_data_report
from .loaders import Loaders, SampleDataset, kill_loader_workers, make_loaders, set_train_crop_size, stratified_folds, stratified_split
from .mixing import Collate
from .samplers import RASampler
from .transforms import BatchFinish, make_eval_transform, make_train_transform

__all__ = ["DataBundle", "DecodeErrorLimit", "FolderSource", "Loaders", "BatchFinish", "Collate", "RASampler",
           "SampleDataset", "TensorSource", "data_fingerprint", "kill_loader_workers", "load_data", "load_image_folder", "make_eval_transform",
           "make_loaders", "make_train_transform", "set_train_crop_size", "stratified_folds", "stratified_split",
           "write_data_report"]
