"""The one data configuration: where the images are and how they are read, cropped, augmented and batched.

Saved in every run's ``config.json`` under ``"data"`` and reloadable with :meth:`DataConfig.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fh_utils.config import config_from_dict, config_to_dict
from fh_utils.data.folds import parse_split
from fh_utils.paths import derived_dir

SAMPLERS = ("shuffle", "balanced")
RESIZES = ("stretch", "letterbox")


@dataclass(frozen=True)
class DataConfig:
    """Data parameters shared by :func:`~fh_utils.data.datasets.create_dataset` and ``create_loaders``.

    Attributes:
        data_root: Data root in the FASHION-HOW layout.
        img_size: Model input side, px.
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size (0: twice ``batch_size``).
        augment: Training augmentation pipeline (``"myungbin"`` or ``"none"``).
        crop_prob: Probability of the box crop in training (evaluation crops when it is > 0).
        crop_margin: Margin around the box, as a fraction of its size.
        resize: How a crop becomes the square input: ``"stretch"`` (resize to the square, the aspect lost) or
            ``"letterbox"`` (resize keeping the aspect, pad to the square: ETRI's baseline, team VCL), in training,
            validation and prediction alike (:func:`fh_utils.data.images.letterbox`).
        pad_value: Letterbox pad colour: a grey level 0-255 or an RGB triple (stored as the triple); with
            ``"letterbox"`` the training affine fills its border with it too.
        use_nobg: Read the background-removed copies (notebook 02) instead of the raw images.
        nobg_root: Their folder ("" : beside the data root).
        sampler: ``"shuffle"`` or ``"balanced"`` (each class of ``sampler_head`` drawn equally often).
        sampler_head: Head the balanced sampler balances ("" : the task's first head).
        color_spaces: Colour spaces stacked into the input channels.
        cache: Serve crops from the decode-once cache.
        cache_dir: Cache folder ("" : beside the data root).
        num_workers: DataLoader worker processes.
        seed: Seed of sampling and augmentation (re-seeded per epoch by the engine).
        on_error: ``"raise"`` on a bad CSV row, or ``"skip"`` it (reported).
        limit: Keep only the first ``limit`` rows of each split (quick runs); 0 keeps all.
        split: What ``create_loaders`` trains and validates on: ``"val"`` (train / val), ``"fold:K/N"``
            (fold K of N stratified folds over train ∪ val, from ``seed``) or ``"full"`` (train ∪ val, no
            validation); see :mod:`fh_utils.data.folds`.
        exclude: An exclusion list: a CSV with an ``image_name`` column (e.g. notebook 08's ``label_issues.csv``)
            whose rows are left out of training, never of validation; a path, or relative to the repository root
            or ``outputs/runs`` (``"<run>/label_issues.csv"``); "" : none (:mod:`fh_utils.data.exclude`).
    """

    data_root: str = ""
    img_size: int = 224
    batch_size: int = 64
    eval_batch_size: int = 0
    augment: str = "myungbin"
    crop_prob: float = 1.0
    crop_margin: float = 0.0
    resize: str = "stretch"
    pad_value: tuple[int, int, int] = (0, 0, 0)
    use_nobg: bool = False
    nobg_root: str = ""
    sampler: str = "shuffle"
    sampler_head: str = ""
    color_spaces: tuple[str, ...] = ("rgb",)
    cache: bool = False
    cache_dir: str = ""
    num_workers: int = 0
    seed: int = 0
    on_error: str = "raise"
    limit: int = 0
    split: str = "val"
    exclude: str = ""

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        object.__setattr__(self, "pad_value", pad_rgb(self.pad_value))
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        spaces = self.color_spaces
        if isinstance(spaces, str):
            spaces = tuple(p.strip().lower() for p in spaces.split(",") if p.strip())
        object.__setattr__(self, "color_spaces", tuple(spaces))
        for name in ("data_root", "nobg_root", "cache_dir", "exclude"):
            value = getattr(self, name)
            object.__setattr__(self, name, "" if value is None else str(value))
        object.__setattr__(self, "limit", int(self.limit or 0))
        object.__setattr__(self, "split", str(parse_split(self.split)))

    @property
    def root(self) -> Path:
        """``data_root`` as a path."""
        return Path(self.data_root)

    def images_root(self) -> Path | None:
        """The tree the split images are read from; None: the data root's own split folders.

        With ``use_nobg`` the background-removed copies: ``nobg_root``, else ``<root>_nobg`` beside the data root.
        """
        if not self.use_nobg:
            return None
        return Path(self.nobg_root) if self.nobg_root else derived_dir(self.root, "nobg")

    def cache_root(self) -> Path:
        """The decode-once cache's folder.

        ``cache_dir``, else beside the data root: ``<root>_cache``, or ``<root>_cache_nobg`` for the
        background-removed images.
        """
        if self.cache_dir:
            return Path(self.cache_dir)
        return derived_dir(self.root, "cache_nobg" if self.use_nobg else "cache")

    def replace(self, **changes: Any) -> DataConfig:
        """A copy with ``changes`` (each must be a field)."""
        return config_from_dict(DataConfig, {**self.to_dict(), **changes}, "DataConfig.replace")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``config.json``."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Rebuild from :meth:`to_dict` output; an unknown key is an error."""
        return config_from_dict(cls, values, "data config")


def pad_rgb(value: Any) -> tuple[int, int, int]:
    """A pad colour as an RGB triple of ints 0-255: from a grey level or a triple (a JSON list too).

    Raises:
        ValueError: Anything else, naming the value.
    """
    values = [value] * 3 if isinstance(value, int) else value
    try:
        ok = len(values) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
                                      for v in values)  # fmt: skip
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"pad_value must be a grey level 0-255 or an RGB triple of them, got {value!r}")
    return tuple(int(v) for v in values)


def as_data_config(data: DataConfig | str | Path, **overrides: Any) -> DataConfig:
    """A :class:`DataConfig` from a config or a data root, with ``overrides`` (fields only) applied."""
    if isinstance(data, DataConfig):
        return data.replace(**overrides) if overrides else data
    return config_from_dict(DataConfig, {"data_root": str(data), **overrides}, "create_loaders")
