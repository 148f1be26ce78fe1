"""Data sets: a registry of fixed splits (digits, their sequence view, 2-D toys)."""

from ppl_dgm.datasets import digits as _digits  # noqa: F401  (registers digits)
from ppl_dgm.datasets import toys as _toys  # noqa: F401  (registers the 2-D toys)
from ppl_dgm.datasets.registry import DatasetInfo, Split, dataset_info, list_datasets, load_dataset, register_dataset

__all__ = ["DatasetInfo", "Split", "dataset_info", "list_datasets", "load_dataset", "register_dataset"]
