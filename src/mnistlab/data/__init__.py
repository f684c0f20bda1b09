"""Data: MNIST-style datasets as uint8 tensors, where they come from, and how training reads
them.

- ``sources``: the catalogue of named datasets and where each is found (a data folder, the
  cache, system copies, mirrors with checksums, the bundled sample); ``load_dataset``.
- ``batches``: the one batcher every loop iterates (the whole set on the device, batches by index).
- ``augment``: augmentation of whole batches on the device.

    >>> from mnistlab.data import load_dataset
    >>> ds = load_dataset("mnist-sample")
    >>> ds.train.images.shape, ds.train.images.dtype
    (torch.Size([8000, 28, 28]), torch.uint8)
"""
from .sources import (
    DATASETS,
    Dataset,
    Split,
    cache_root,
    dataset_for,
    download_file,
    images_to_float,
    load_dataset,
    load_files,
    load_path,
    read_csv,
    read_idx,
    read_npz,
    verify_file,
)

__all__ = ["DATASETS", "Dataset", "Split", "cache_root", "dataset_for", "download_file", "images_to_float",
           "load_dataset", "load_files", "load_path", "read_csv", "read_idx", "read_npz", "verify_file"]
