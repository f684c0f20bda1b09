"""Names the command line offers before any work is done, kept free of torch so that
building the parser (and `--help`) costs no torch import. `data.DATASETS` and
`experiments.EXPERIMENTS` hold the things themselves, and a test keeps the two in step."""

AUTO = "auto"  # MNIST when it is available, else the bundled sample
DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist", "mnist-sample")
EXPERIMENT_NAMES = ("dream", "unbiased", "reencode")
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")  # data files given by path
