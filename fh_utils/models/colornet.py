"""``fh_colornet``: a small from-scratch network for garment colour (ST2), registered with timm.

Colour is a per-pixel property; what a network must learn is *which* pixels belong to the garment. ColorNet
separates the two: a per-pixel branch (1x1 convolutions only) embeds each pixel's colour, and a small context
CNN looks at the whole crop and predicts a few spatial attention maps; the colour embeddings are averaged
under each map. Trained from scratch on a few thousand photos this beats a generic backbone of 30x its size
(see ``benchmarks/RESULTS.md``), and at ~0.2 M parameters it is under 1 MB and fast on the scoring CPU.

Registered with timm on import, so ``create_model("st2", "fh_colornet")``, ``load_model`` and
``timm.create_model("fh_colornet", num_classes=0)`` all work like any other backbone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

__all__ = ["ColorNet", "fh_colornet"]


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ColorNet(nn.Module):
    """Per-pixel colour embeddings pooled under learned attention maps, plus a pooled context vector.

    Args:
        in_chans: Input channels (3 per colour space).
        num_classes: Classes of the built-in linear head; 0 returns the pooled features (timm convention).
        width: Channels of the per-pixel colour embedding.
        attention_maps: Number of attention maps (each pools its own colour vector).
        context_width: Channels of the context CNN (stride 8 in total).
        drop_rate: Dropout before the built-in head.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 0,
        width: int = 64,
        attention_maps: int = 4,
        context_width: int = 64,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.pixel = nn.Sequential(
            _conv_bn_relu(in_chans, width, 1), _conv_bn_relu(width, width, 1), nn.Conv2d(width, width, 1)
        )
        c = context_width
        self.context = nn.Sequential(
            _conv_bn_relu(in_chans, 32, 3, 2),
            _conv_bn_relu(32, 32),
            _conv_bn_relu(32, c, 3, 2),
            _conv_bn_relu(c, c),
            _conv_bn_relu(c, c),
            _conv_bn_relu(c, c, 3, 2),
            _conv_bn_relu(c, c),
        )
        self.attention = nn.Conv2d(c, attention_maps, 1)
        self.num_features = attention_maps * width + c
        self.head_hidden_size = self.num_features
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context = self.context(x)
        logits = F.interpolate(self.attention(context), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.flatten(2).softmax(-1), context

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, maps, H, W)`` over a normalised batch's pixels (each map sums to 1)."""
        weights, _ = self._attend(x)
        return weights.view(x.shape[0], -1, *x.shape[-2:])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` of a normalised ``(B, C, H, W)`` batch."""
        weights, context = self._attend(x)
        pooled = torch.einsum("bmn,bwn->bmw", weights, self.pixel(x).flatten(2)).flatten(1)
        return torch.cat([pooled, context.mean((2, 3))], dim=1)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the built-in head (timm API)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, or pooled features when ``num_classes == 0``."""
        return self.head(self.drop(self.forward_features(x)))


@register_model
def fh_colornet(pretrained: bool = False, **kwargs: Any) -> ColorNet:
    """Entry point for timm of :class:`ColorNet` (no pretrained weights exist: ST2 trains from scratch)."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "img_size", "cache_dir"):
        kwargs.pop(key, None)  # timm passes these to every entry point; ColorNet takes any input size
    if pretrained:
        raise ValueError("fh_colornet has no pretrained weights: train it from scratch (pretrained=False)")
    return ColorNet(**kwargs)
