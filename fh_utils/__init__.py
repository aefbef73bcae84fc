"""FASHION-HOW workbook utilities: data, augmentation, models, training engine, metrics, plots.

Importing this package never touches the network: albumentations' update check is switched off here,
before anything imports albumentations, and the Hugging Face hub is put offline unless the user set it.
"""

import os as _os

_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
