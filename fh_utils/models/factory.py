"""Model factory: a timm backbone without its classifier, plus one linear head per label of the task.

The model carries its own preprocessing (``model.input_config``: input size, colour spaces, mean, std) and
normalises uint8 input itself, and its constructor arguments (``model.model_config``) are stored in every
checkpoint so :func:`load_model` rebuilds it without any other file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from fh_utils.data.colorspaces import check_spaces, color_space_stats
from fh_utils.models import colornet  # noqa: F401  (registers fh_colornet with timm)
from fh_utils.models.config import DEFAULT_BACKBONE, backbone_defaults
from fh_utils.models.pretrained import PretrainedUnavailableError, resolve_pretrained  # noqa: F401  (re-exported)
from fh_utils.runs import BEST_CKPT, model_file
from fh_utils.tasks import Task, get_task


class RulesError(ValueError):
    """The model breaks a competition rule of its task (size budget, pretrained weights)."""


class FashionHowNet(nn.Module):
    """Backbone + one linear head per task label; ``forward`` returns ``{label column: logits}``.

    Args:
        backbone: timm model built with ``num_classes=0`` (pooled features out).
        task: Task description (heads and class counts).
        mean: Per-input-channel mean on the 0..1 scale.
        std: Per-input-channel std on the 0..1 scale.
        extra_features: Optional module mapping the normalised input to extra features concatenated with the
            backbone's (e.g. colour histograms).
        drop_rate: Dropout before the heads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        task: Task,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        extra_features: nn.Module | None = None,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.backbone = backbone
        self.extra_features = extra_features
        # timm's pooled output width: head_hidden_size when a pre-logits layer exists (MobileNetV4), else
        # num_features.
        n_backbone = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        n_feat = n_backbone + (extra_features.num_features if extra_features is not None else 0)
        self.dropout = nn.Dropout(drop_rate)
        self.heads = nn.ModuleDict({h.column: nn.Linear(n_feat, h.num_classes) for h in task.heads})
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.model_config: dict[str, Any] = {}
        self.input_config: dict[str, Any] = {}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) CHW batch -> normalised float batch."""
        x = x.float() if x.dtype == torch.uint8 else x
        return (x / 255.0 - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{label column: logits}`` for a uint8 ``(B, C, H, W)`` batch."""
        raw = x
        x = self.normalize(x)
        feats = self.backbone(x)
        if self.extra_features is not None:
            feats = torch.cat([feats, self.extra_features(raw).to(feats.dtype)], dim=1)
        feats = self.dropout(feats)
        return {name: head(feats) for name, head in self.heads.items()}


def state_dict_size_mb(model: nn.Module) -> float:
    """Size in MB (10**6 bytes) of ``torch.save(model.state_dict())``, i.e. of the submitted file."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6


def _create_backbone(backbone: str, pretrained: bool | str | Path, img_size: int, in_chans: int) -> nn.Module:
    # The weights file is resolved first (cache, hub, or a clear error within seconds: models/pretrained.py),
    # so timm itself only ever reads a local file.
    kwargs: dict[str, Any] = dict(num_classes=0, in_chans=in_chans, **resolve_pretrained(backbone, pretrained))
    try:
        return timm.create_model(backbone, img_size=img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(backbone, **kwargs)  # CNNs take any size and have no img_size argument


def create_model(
    task: str | Task,
    backbone: str = DEFAULT_BACKBONE,
    pretrained: bool | str | Path = False,
    img_size: int | None = None,
    in_chans: int | None = None,
    color_spaces: tuple[str, ...] | list[str] | None = None,
    color_hist: bool = False,
    drop_rate: float | None = None,
    size_budget: bool = True,
    enforce_rules: bool = True,
    data_root: str | Path | None = None,
    check_size: bool = True,
) -> FashionHowNet:
    """Build a model for ``task``.

    Args:
        task: Task description or name (``"st1"``, ``"st2"``).
        backbone: Any timm model name.
        pretrained: ``False``; a path to a ``.pth``/``.safetensors`` file; or ``True``: the Hugging Face cache
            (works offline), else the hub when it answers within seconds, else a :class:`PretrainedUnavailableError`
            saying how to get the file (:mod:`fh_utils.models.pretrained`).
        img_size: Input side, px (None: the backbone's default, :func:`fh_utils.models.config.backbone_defaults`).
        in_chans: Input channels (default ``3 * len(color_spaces)``).
        color_spaces: Colour spaces the data pipeline stacks, e.g. VCL's ``("rgb","hsv","lab","hls","yuv")`` (None:
            the backbone's).
        color_hist: Concatenate colour-histogram features of the input with the backbone's pooled features.
        drop_rate: Dropout before the heads (None: the backbone's).
        size_budget: Refuse a model whose saved state dict exceeds the task's size budget.
        enforce_rules: Refuse what the task's rules forbid (ST2: pretrained weights).
        data_root: Data root whose ``classes.json`` overrides class names and counts.
        check_size: Run one forward pass at ``img_size`` so a backbone that cannot take that size fails here,
            with a size that works, instead of inside timm in the first training step.

    Returns:
        A :class:`FashionHowNet` with ``model_config`` and ``input_config`` set.

    Raises:
        RulesError: Pretrained weights for a task that forbids them, or a model over the size budget.
        ValueError: The backbone cannot run at ``img_size``.
        PretrainedUnavailableError: ``pretrained=True`` with nothing cached and the hub off or unreachable.
    """
    task = get_task(task, data_root)
    defaults = backbone_defaults(backbone)
    img_size = defaults.img_size if img_size is None else img_size
    color_spaces = check_spaces(defaults.color_spaces if color_spaces is None else color_spaces)
    drop_rate = defaults.drop_rate if drop_rate is None else drop_rate
    in_chans = in_chans or 3 * len(color_spaces)
    if in_chans != 3 * len(color_spaces):
        raise ValueError(f"in_chans={in_chans} does not match {len(color_spaces)} colour space(s) x 3 channels")
    uses_pretrained = pretrained is True or (isinstance(pretrained, (str, Path)) and str(pretrained) != "")
    if uses_pretrained and enforce_rules and not task.rules.pretrained_allowed:
        raise RulesError(
            f"{task.name}: the competition forbids outside pretrained weights; train from scratch "
            "(pretrained=False) or pass enforce_rules=False to experiment outside the rules"
        )
    net = _create_backbone(backbone, pretrained if uses_pretrained else False, img_size, in_chans)
    mean, std = color_space_stats(color_spaces)
    extra = None
    if color_hist:
        from fh_utils.models.color_features import ColorHistogram

        extra = ColorHistogram(rgb_channels=tuple(range(3)) if color_spaces[0] == "rgb" else None)
    model = FashionHowNet(net, task, mean, std, extra_features=extra, drop_rate=drop_rate)
    model.model_config = dict(
        task=task.name, backbone=backbone, img_size=img_size, in_chans=in_chans,
        color_spaces=list(color_spaces), color_hist=color_hist, drop_rate=drop_rate,
        class_names={h.column: list(h.class_names) for h in task.heads},
    )  # fmt: skip
    model.input_config = dict(img_size=img_size, color_spaces=list(color_spaces), mean=list(mean), std=list(std))
    if check_size:
        _check_runs_at(model, backbone, img_size, in_chans)
    if size_budget:
        size = state_dict_size_mb(model)
        if size > task.rules.size_budget_mb:
            raise RulesError(
                f"{backbone}: {size:.1f} MB saved state dict exceeds the {task.rules.size_budget_mb:g} MB "
                f"budget of {task.name}; choose a smaller backbone or pass size_budget=False"
            )
    return model


def _forward_ok(model: nn.Module, size: int, in_chans: int) -> Exception | None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, size, size, dtype=torch.uint8))
        return None
    except Exception as err:  # timm raises assertion, runtime and shape errors alike
        return err
    finally:
        model.train(was_training)


def _check_runs_at(model: nn.Module, backbone: str, img_size: int, in_chans: int) -> None:
    err = _forward_ok(model, img_size, in_chans)
    if err is None:
        return
    native = getattr(model.backbone, "pretrained_cfg", {}).get("input_size", (in_chans, 224, 224))[-1]
    candidates = [native] + [s for s in (224, 256, 192, 160, 128, 112, 96, 64) if s != native]
    works = next((s for s in candidates if s != img_size and _forward_ok(_rebuild_at(model, s), s, in_chans) is None),
                 None)  # fmt: skip
    hint = f"img_size={works} works" if works else "no common size from 64 to 256 px works either"
    raise ValueError(
        f"backbone {backbone!r} cannot run at img_size={img_size} px ({type(err).__name__}: {err}); {hint}"
    ) from err


def _rebuild_at(model: nn.Module, size: int) -> nn.Module:
    cfg = {**model.model_config, "img_size": size}
    return model_from_config(cfg, check_size=False)


def task_of_model(model: nn.Module) -> Task:
    """The task a model was built for, with the class names stored in its ``model_config``."""
    from dataclasses import replace

    cfg = model.model_config
    task = get_task(cfg["task"])
    names = cfg.get("class_names") or {}
    heads = tuple(replace(h, class_names=tuple(names.get(h.column, h.class_names))) for h in task.heads)
    return replace(task, heads=heads)


def model_from_config(config: dict[str, Any], check_size: bool = False) -> FashionHowNet:
    """Rebuild an (untrained) model from a checkpoint's ``model_config``; class names come from it too."""
    from dataclasses import replace

    cfg = dict(config)
    task = get_task(cfg.pop("task"))
    names = cfg.pop("class_names", None)
    if names:
        task = replace(task, heads=tuple(replace(h, class_names=tuple(names[h.column])) for h in task.heads))
    return create_model(task, pretrained=False, size_budget=False, enforce_rules=False, check_size=check_size, **cfg)


def load_model(checkpoint: str | Path, map_location: str | torch.device = "cpu", use_ema: bool = True) -> FashionHowNet:
    """Load a model from a run checkpoint (``best.pt``, ``final.pt``, ``last.pt``, ...) or a run folder.

    A run folder loads the checkpoint of the rule it was trained with (:func:`fh_utils.runs.model_file`).

    Uses ``torch.load(weights_only=True)``: checkpoints hold tensors and plain containers only.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = model_file(path) or path / BEST_CKPT  # the missing file is then named by torch.load's error
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model = model_from_config(ckpt["model_config"])
    state = ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return model.eval()
