"""The model configuration: :class:`ModelConfig`, with per-backbone defaults in the manner of timm's pretrained cfgs.

A setting left out takes its backbone's default (:func:`backbone_defaults`: input side, colour spaces, dropout
and the learning rates ``lr = 0`` stands for). Saved in every run's ``config.json`` under ``"model"``, with the
facts the built model adds (``task``, ``in_chans``, ``class_names``: its ``model_config``), and reloadable from it
with :meth:`ModelConfig.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fh_utils.config import config_from_dict, config_to_dict
from fh_utils.data.colorspaces import check_spaces

DEFAULT_BACKBONE = "eva02_tiny_patch14_224.mim_in22k"
# What the built model records beside the settings (FashionHowNet.model_config): from the task, not chosen.
MODEL_RECORD_KEYS = ("task", "in_chans", "class_names")


@dataclass(frozen=True)
class BackboneDefaults:
    """What a backbone gets for a setting left out (timm keeps the like in each model's pretrained cfg).

    Attributes:
        img_size: Input side, px.
        color_spaces: Colour spaces stacked into the input channels.
        drop_rate: Dropout before the heads.
        lr: Learning rate from scratch (``lr = 0``, no pretrained weights).
        finetune_lr: Learning rate with pretrained weights (``lr = 0``).
    """

    img_size: int = 224
    color_spaces: tuple[str, ...] = ("rgb",)
    drop_rate: float = 0.0
    lr: float = 1e-4
    finetune_lr: float = 5e-6


def _cfg(**overrides: Any) -> BackboneDefaults:
    return BackboneDefaults(**overrides)


# Backbone name (timm's "arch.tag", or the arch alone) -> its defaults; any other backbone gets _cfg().
# The rows hold the values every backbone had before this table (224 px, rgb, no dropout, 1e-4 / 5e-6), so a
# call that leaves a setting out trains as it did; a row of its own is where a backbone's measured best goes.
BACKBONE_DEFAULTS: dict[str, BackboneDefaults] = {
    DEFAULT_BACKBONE: _cfg(),  # the seed's ViT: 224 px, fine-tuned at 5e-6 (the seed's rate), 1e-4 from scratch
    "fh_colornet": _cfg(),  # fh_utils.models.colornet (notebook 04 sets 56 px and 2e-3 explicitly)
}


def backbone_defaults(backbone: str) -> BackboneDefaults:
    """The defaults of ``backbone``: its row of :data:`BACKBONE_DEFAULTS`, else generic (:class:`BackboneDefaults`).

    A name matches its own row, else a row of the same arch (``"eva02_tiny_patch14_224"`` and any of its tags
    find ``"eva02_tiny_patch14_224.mim_in22k"``), as timm resolves a name without a pretrained tag.
    """
    if backbone in BACKBONE_DEFAULTS:
        return BACKBONE_DEFAULTS[backbone]
    arch = backbone.partition(".")[0]
    return next((d for name, d in BACKBONE_DEFAULTS.items() if name.partition(".")[0] == arch), _cfg())


@dataclass(frozen=True)
class ModelConfig:
    """The model a run trains (saved in ``config.json`` under ``"model"``); ``None`` takes the backbone's default.

    Attributes:
        backbone: Any timm model name, or ``fh_colornet``.
        pretrained: ``False``; ``True`` (the Hugging Face cache, else the hub); or a weights file path.
        img_size: Input side, px (None: the backbone's).
        color_spaces: Colour spaces stacked into the input channels, a tuple or ``"rgb,hsv"`` (None: the
            backbone's).
        color_hist: Concatenate colour-histogram features with the backbone's pooled features.
        drop_rate: Dropout before the heads (None: the backbone's).
    """

    backbone: str = DEFAULT_BACKBONE
    pretrained: bool | str = False
    img_size: int | None = None
    color_spaces: tuple[str, ...] | str | None = None
    color_hist: bool = False
    drop_rate: float | None = None

    def __post_init__(self) -> None:
        defaults = backbone_defaults(self.backbone)
        spaces = defaults.color_spaces if self.color_spaces is None else self.color_spaces
        if isinstance(spaces, str):
            spaces = [p.strip() for p in spaces.split(",") if p.strip()]
        object.__setattr__(self, "color_spaces", check_spaces(spaces))
        object.__setattr__(self, "img_size", int(defaults.img_size if self.img_size is None else self.img_size))
        object.__setattr__(self, "drop_rate", float(defaults.drop_rate if self.drop_rate is None else self.drop_rate))
        if isinstance(self.pretrained, Path):
            object.__setattr__(self, "pretrained", str(self.pretrained))

    @property
    def uses_pretrained(self) -> bool:
        """Whether the backbone starts from pretrained weights (``True`` or a file)."""
        return self.pretrained not in (False, "", None)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`fh_utils.models.create_model` (after the task)."""
        kwargs = self.to_dict()
        kwargs["color_spaces"] = list(self.color_spaces)
        return kwargs

    def data_settings(self) -> dict[str, Any]:
        """The settings the data pipeline must share with the model: ``img_size`` and ``color_spaces``."""
        return {"img_size": self.img_size, "color_spaces": tuple(self.color_spaces)}

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` (each must be a field)."""
        return config_from_dict(ModelConfig, {**self.to_dict(), **changes}, "ModelConfig.replace")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``config.json``."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output or a run's ``config.json`` ``"model"`` section.

        The facts a built model records beside its settings (:data:`MODEL_RECORD_KEYS`) are set aside; any
        other unknown key is an error. A section written before ``pretrained`` was recorded reads as
        ``pretrained=False``.
        """
        settings = {k: v for k, v in values.items() if k not in MODEL_RECORD_KEYS}
        return config_from_dict(cls, settings, "model config")
