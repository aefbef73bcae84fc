"""Data layer: CSV reading and validation, image decoding, crops cache, augmentation, datasets and loaders.

Nothing here knows about models or training. What writes beside the raw data (background removal, the demo
data generator) is offline preparation, in :mod:`fh_utils.prep`.
"""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "read_split": "reader", "read_csv": "reader", "validate_root": "reader", "csv_path": "reader",
        "DataConfig": "config",
        "create_dataset": "datasets", "create_loaders": "datasets", "FashionHowDataset": "datasets",
        "load_image": "images",
    },
)  # fmt: skip
