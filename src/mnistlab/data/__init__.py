"""Data: MNIST-style datasets as uint8 tensors, where they come from, and how training reads
them.

- ``splits``: what a dataset is once read (splits of uint8 images and labels, class names).
- ``formats``: the readers of IDX, CSV and NPZ files, checked before trusted; a folder of them,
  or files given by path.
- ``sources``: the catalogue of named datasets and where each is found (a data folder, the
  cache, system copies, mirrors with checksums, the bundled sample); ``load_dataset``.
- ``batches``: the one batcher every loop iterates (the whole set on the device, batches by index).
- ``augment``: augmentation of whole batches on the device.

    >>> from mnistlab.data import load_dataset
    >>> ds = load_dataset("mnist-sample")
    >>> ds.train.images.shape, ds.train.images.dtype
    (torch.Size([8000, 28, 28]), torch.uint8)
"""

from .batches import Batches
from .formats import load_files, load_path, read_csv, read_idx, read_npz
from .sources import DATASETS, cache_root, dataset_classes, dataset_for, download_file, load_dataset, verify_file
from .splits import Dataset, Split, images_to_float, is_labelled, pick_digit

__all__ = [
    "DATASETS",
    "Batches",
    "Dataset",
    "Split",
    "cache_root",
    "dataset_classes",
    "dataset_for",
    "download_file",
    "images_to_float",
    "is_labelled",
    "load_dataset",
    "load_files",
    "load_path",
    "pick_digit",
    "read_csv",
    "read_idx",
    "read_npz",
    "verify_file",
]
