"""Dataset registry: `load_dataset(name, root=None)` -> `DataBundle`.

Importing this package registers the built-in datasets (the module imports below exist for
that side effect) in the order `list_datasets()` reports; `digits` comes first (the default
of `RunConfig.dataset`) because it is bundled with scikit-learn and trains in seconds.
"""

from . import sources  # noqa: F401  (registers digits, fashion_mnist, mnist)

# isort: split
from . import cifar  # noqa: F401  (registers cifar10, cifar100)

# isort: split
from . import imagefolder  # noqa: F401  (registers imagefolder)
from .idx import IdxFormatError, read_idx, write_idx
from .loaders import BatchLoader, random_crop_flip
from .registry import (
    DataBundle,
    DatasetInfo,
    DatasetUnavailable,
    get_dataset_info,
    list_datasets,
    load_dataset,
)

__all__ = [
    "BatchLoader",
    "DataBundle",
    "DatasetInfo",
    "DatasetUnavailable",
    "IdxFormatError",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "random_crop_flip",
    "read_idx",
    "write_idx",
]
