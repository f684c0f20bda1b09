"""The names the command line offers before any work is done, kept free of torch so that
building the parser (and ``--help``) costs no torch import. Each list is the key set of a
table that holds the things themselves (``tests/test_names.py`` keeps them equal):

- ``DATASET_NAMES``: ``data.sources.DATASETS``
- ``EXPERIMENT_NAMES``: ``studies.experiments.EXPERIMENTS``
- ``EXPLAIN_METHODS``: ``attribution.maps.METHODS``
- ``REPORT_JOBS``: ``studies.report.jobs()``

Models are listed by their registry (``mnistlab models``), which needs the models themselves.
"""

AUTO = "auto"  # MNIST when it is available, else the bundled sample
DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist", "mnist-sample")
EXPERIMENT_NAMES = ("dream", "unbiased", "reencode")
EXPLAIN_METHODS = ("saliency", "smoothgrad", "ig", "occlusion", "gradcam", "hirescam")
REPORT_JOBS = (
    "cnn",
    "cnn-fast",
    "cnn-robust",
    "ae-dense",
    "ae-convtranspose",
    "ae-upsample",
    "ae-code3d",
    "ae-code4x4",
    "ae-convbn",
    "encoder-classifier",
    "reencode",
    "dream",
    "unbiased",
    "explain",
)
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")  # data files given by path
SEED_MAX = 2**32 - 1  # every seed: numpy's generators take at most this
