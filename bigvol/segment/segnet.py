"""SegNet: the encoder-decoder CNN of the method, in PyTorch.

This module imports :mod:`torch`; only :mod:`bigvol.segment._train` and
:mod:`bigvol.segment.infer` import it, inside their functions, so that ``import bigvol``
stays light.

The network follows Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation", IEEE TPAMI 39(12), 2017:

- the encoder is ``L`` levels of ``convs[l]`` blocks *conv 3x3 - batch norm - ReLU* with
  ``widths[l]`` channels, each level ending in a 2x2 max-pool that **keeps the indices of
  the maxima**;
- the decoder mirrors it: each level **unpools with the indices of its encoder level**
  (values go back to where the maxima were, zeros elsewhere), then applies ``convs[l]``
  conv-BN-ReLU blocks, the last of which maps ``widths[l]`` to ``widths[l-1]`` channels;
- a final 3x3 convolution gives ``n_classes`` scores per pixel (softmax outside).

With ``skips=True`` each decoder level also receives its encoder level's features before
pooling, concatenated to the unpooled ones (U-SegNet: Kumar et al., "U-SegNet: fully
convolutional neural network based automated brain tissue segmentation tool", ICIP 2018;
the skip of Ronneberger et al.'s U-Net with SegNet's index unpooling). The unpooled map is
zero at three pixels of every four; the skip gives the decoder the full-resolution detail
that thin structures (membranes, binder films, pore throats) need.

The paper-size network is VGG16's encoder: ``widths=(64, 128, 256, 512, 512)``,
``convs=(2, 2, 3, 3, 3)`` (29.4 M parameters). The default for CPUs is slim:
``widths=(16, 32, 64, 128)``, ``convs=(2, 2, 3, 3)`` (0.96 M parameters).

Inputs of any height and width are accepted: the image is padded at the bottom and right
to a multiple of ``2**L`` (reflection) and the output cropped back. ``in_channels = k``
feeds ``k`` adjacent slices (2.5D); ``k = 1`` is the paper's setting.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Architecture presets: name -> (widths, convs per level).
PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "paper": ((64, 128, 256, 512, 512), (2, 2, 3, 3, 3)),
    "slim": ((16, 32, 64, 128), (2, 2, 3, 3)),
    "tiny": ((8, 16), (1, 1)),
}


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SegNet(nn.Module):
    """SegNet with configurable widths and depth (Badrinarayanan et al. 2017).

    Parameters
    ----------
    in_channels : int
        Input channels: the number ``k`` of adjacent slices fed together (1 = 2D).
    n_classes : int
        Output classes (3: pore, solid electrolyte, active material).
    widths : sequence of int
        Channels of each encoder level, shallow to deep.
    convs : sequence of int, optional
        Conv-BN-ReLU blocks per level (default 2 per level).
    skips : bool
        Concatenate each encoder level's pre-pooling features to the unpooled decoder
        input of the same level (U-SegNet); the first decoder block of the level then takes
        twice the channels.

    Examples
    --------
    >>> net = SegNet(1, 3, widths=(8, 16))
    >>> net(torch.zeros(2, 1, 37, 50)).shape
    torch.Size([2, 3, 37, 50])
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 3,
        widths: Sequence[int] = PRESETS["slim"][0],
        convs: Sequence[int] | None = None,
        skips: bool = False,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        convs = tuple(int(c) for c in (convs if convs is not None else (2,) * len(widths)))
        if not widths or len(convs) != len(widths) or min(widths) < 1 or min(convs) < 1:
            raise ValueError(f"SegNet: bad widths {widths} / convs {convs}")
        self.widths, self.convs, self.skips = widths, convs, bool(skips)
        self.in_channels, self.n_classes = int(in_channels), int(n_classes)
        self.multiple = 2 ** len(widths)

        encoders, decoders = [], []
        cin = self.in_channels
        for w, n in zip(widths, convs):
            layers = []
            for _ in range(n):
                layers += _block(cin, w)
                cin = w
            encoders.append(nn.Sequential(*layers))
        for level in reversed(range(len(widths))):
            w, n = widths[level], convs[level]
            wout = widths[level - 1] if level > 0 else widths[0]
            layers = []
            for i in range(n):
                cin = 2 * w if (i == 0 and self.skips) else w
                layers += _block(cin, wout if i == n - 1 else w)
            decoders.append(nn.Sequential(*layers))
        self.encoders = nn.ModuleList(encoders)
        self.decoders = nn.ModuleList(decoders)
        # Modules (not functionals) so that tests and users can hook them.
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.classifier = nn.Conv2d(widths[0], self.n_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits), shape ``(n, n_classes, h, w)`` for input ``(n, k, h, w)``."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            # Reflection needs the pad to be smaller than the side; replicate otherwise.
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        indices, sizes, features = [], [], []
        for enc in self.encoders:
            x = enc(x)
            sizes.append(x.shape[-2:])
            if self.skips:
                features.append(x)
            x, idx = self.pool(x)
            indices.append(idx)
        for level, (dec, idx, size) in enumerate(
            zip(self.decoders, reversed(indices), reversed(sizes))
        ):
            x = self.unpool(x, idx, output_size=size)
            if self.skips:
                x = torch.cat([x, features[-1 - level]], dim=1)
            x = dec(x)
        x = self.classifier(x)
        return x[..., :h, :w]


def fuse_batchnorm(net: SegNet) -> SegNet:
    """Fold every eval-mode BatchNorm into the convolution before it, in place.

    ``BN(conv(x)) = (W * x - mu) gamma / sqrt(var + eps) + beta`` is itself a convolution
    with weights ``W gamma / sqrt(var + eps)`` and a bias, so inference skips one pass over
    every feature map (1.1 s of 8.8 s of a CPU predict). The outputs equal the unfused
    network's to float rounding. Uses :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if net.training:
        raise ValueError("fuse_batchnorm needs a network in eval mode")
    for seq in (*net.encoders, *net.decoders):
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    return net


def build(config: dict) -> SegNet:
    """A :class:`SegNet` from the architecture part of a model config."""
    return SegNet(
        in_channels=config["in_channels"],
        n_classes=config["n_classes"],
        widths=config["widths"],
        convs=config["convs"],
        skips=bool(config.get("skips", False)),
    )
