"""Data layer: CSV reading and validation, image decoding, crops cache, augmentation, datasets and loaders.

Also the data-derived tools that write beside the raw data, never into it: background removal and the demo
data generator. Nothing here knows about models or training.
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
