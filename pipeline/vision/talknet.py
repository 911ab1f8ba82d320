"""TalkNet-ASD (Tao et al., ACM MM 2021, "Is Someone Speaking? Exploring Long-term Temporal
Features for Audio-visual Active Speaker Detection"; github.com/TaoRuijie/TalkNet-ASD, MIT),
re-implemented so that the released ``pretrain_TalkSet.model`` / ``pretrain_AVA.model`` load
with ``strict=True``.

The module names below (``model.visualFrontend``, ``model.visualTCN``, ``model.visualConv1D``,
``model.audioEncoder``, ``model.crossA2V``, ``model.crossV2A``, ``model.selfAV``,
``lossAV.FC``) and every layer shape are the contract with those files. The released files
also hold ``lossA.FC`` and ``lossV.FC``, the audio-only and visual-only heads used only as
auxiliary training losses; :func:`load_talknet` drops them.

Architecture (per chunk of T video frames at 25 fps and 4T MFCC frames at 100 fps):

- visual front end: a 5x7x7 3-D convolution over (time, y, x) on the 112x112 grayscale crops,
  then an 18-layer 2-D ResNet per frame -> 512 per frame;
- visual temporal encoder: 5 depthwise-separable temporal conv blocks (V-TCN), then a conv
  down to 128 per frame;
- audio encoder: a ResNet-34-like 2-D CNN with squeeze-excitation over (MFCC bin, time) with
  three stride-2 stages, pooled over the MFCC axis -> 128 per video frame;
- cross-attention both ways (each stream attended with the other as the query), then one
  self-attention layer over the concatenated 256-d features;
- the AV head ``lossAV.FC`` (256 -> 2); its class-1 logit is the score, > 0 = speaking.

The inputs and the interface are Light-ASD's (:class:`mikupal.vision.asd.LightASD`): both
are called ``net(mfcc (B, 4T, 13), faces (B, T, 112, 112) in 0..255) -> logits (B, T)`` and
scored by :func:`mikupal.vision.asd.multi_length_scores`.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Published model size: 15.01 M, the backbone without heads counted as the original code
# prints it (numel / 1024 / 1024; 15,743,451 parameters).
PAPER_PARAMS_M = 15.01
# Heads in the released files that are only training losses; the loader drops them.
TRAINING_ONLY_HEADS = ("lossA.", "lossV.")
_PIXEL_MEAN, _PIXEL_STD = 0.4161, 0.1688  # the crop normalisation TalkNet was trained with


# ---------------------------------------------------------------------------------------
# Visual front end: 3-D conv stem + ResNet-18 (from deep_avsr, as TalkNet uses it)
# ---------------------------------------------------------------------------------------
def _vbn2(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.01, eps=0.001)


class _ResNetLayer(nn.Module):
    """Two basic blocks, each with BN + ReLU after its residual sum. ``downsample``
    (a 1x1 conv) exists in every layer because the released weights have it, but is used only
    when the layer strides."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1a = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1a = _vbn2(cout)
        self.conv2a = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.downsample = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.outbna = _vbn2(cout)
        self.conv1b = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1b = _vbn2(cout)
        self.conv2b = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.outbnb = _vbn2(cout)

    def forward(self, x):
        skip = x if self.stride == 1 else self.downsample(x)
        mid = self.conv2a(F.relu(self.bn1a(self.conv1a(x)))) + skip
        y = self.conv2b(F.relu(self.bn1b(self.conv1b(F.relu(self.outbna(mid)))))) + mid
        return F.relu(self.outbnb(y))


class _ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = _ResNetLayer(64, 64, 1)
        self.layer2 = _ResNetLayer(64, 128, 2)
        self.layer3 = _ResNetLayer(128, 256, 2)
        self.layer4 = _ResNetLayer(256, 512, 2)

    def forward(self, x):  # (N, 64, 28, 28) -> (N, 512): the last map is 4x4, averaged
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.avg_pool2d(x, 4).flatten(1)


class _VisualFrontend(nn.Module):
    def __init__(self):
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, 64, (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(64, momentum=0.01, eps=0.001),
            nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.resnet = _ResNet()

    def _stem_conv(self, x):
        """The 3-D conv with one input channel equals a 2-D conv whose 5 input channels are the
        frames t-2..t+2 (zero frames past either end, as Conv3d pads): same arithmetic, much
        faster than Conv3d on CPU. (B, T, H, W) -> (B*T, 64, H/2, W/2)."""
        conv = self.frontend3D[0]
        b, t, h, w = x.shape
        k = conv.kernel_size[0]
        padded = F.pad(x, (0, 0, 0, 0, k // 2, k // 2))
        windows = padded.unfold(1, k, 1)  # (B, T, H, W, k)
        windows = windows.permute(0, 1, 4, 2, 3).reshape(b * t, k, h, w)
        return F.conv2d(windows, conv.weight[:, 0], stride=conv.stride[1:], padding=conv.padding[1:])

    def forward(self, x):  # normalised crops (B, T, 112, 112) -> (B, T, 512)
        # Each batch item is its own sequence: the original folds B*T into one long time axis
        # (it is only ever run with B = 1), so per-item padding keeps batched chunks identical
        # to scoring them one at a time.
        b, t = x.shape[:2]
        y = self._stem_conv(x)
        y = F.max_pool2d(F.relu(self.frontend3D[1](y.unsqueeze(2)).squeeze(2)), 3, stride=2, padding=1)
        return self.resnet(y).reshape(b, t, -1)


# ---------------------------------------------------------------------------------------
# Visual temporal encoder
# ---------------------------------------------------------------------------------------
class _GlobalLayerNorm(nn.Module):
    """gLN: normalise over channels and time together (per item), then a per-channel affine.
    Parameter names ``gamma``/``beta`` with shape (1, C, 1) as in the released weights."""

    def __init__(self, ch: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, ch, 1))
        self.beta = nn.Parameter(torch.zeros(1, ch, 1))

    def forward(self, y):  # (B, C, T)
        mean = y.mean(dim=(1, 2), keepdim=True)
        var = (y - mean).pow(2).mean(dim=(1, 2), keepdim=True)
        return self.gamma * (y - mean) / torch.sqrt(var + 1e-8) + self.beta


class _DSConv1d(nn.Module):
    """One V-TCN block: ReLU, BN, depthwise 3-tap temporal conv, PReLU, gLN, pointwise conv,
    plus the input (residual)."""

    def __init__(self, ch: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm1d(ch),
            nn.Conv1d(ch, ch, 3, padding=1, groups=ch, bias=False),
            nn.PReLU(),
            _GlobalLayerNorm(ch),
            nn.Conv1d(ch, ch, 1, bias=False),
        )

    def forward(self, x):
        return self.net(x) + x


class _VisualTCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(*[_DSConv1d(512) for _ in range(5)])

    def forward(self, x):
        return self.net(x)


class _VisualConv1D(nn.Module):
    """512 -> 128 per frame, with a 5-frame temporal context."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(512, 256, 5, padding=2),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Conv1d(256, 128, 1),
        )

    def forward(self, x):
        return self.net(x)


# ---------------------------------------------------------------------------------------
# Audio encoder: SE-ResNet on the MFCC "image" (13 bins x 4T frames)
# ---------------------------------------------------------------------------------------
class _SELayer(nn.Module):
    """Squeeze-excitation: channel gates from the item's global average (reduction 8)."""

    def __init__(self, ch: int, reduction: int = 8):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(ch, ch // reduction), nn.ReLU(), nn.Linear(ch // reduction, ch), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class _SEBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = _SELayer(cout)
        # A projection only where the shape changes (every stage's first block but the first
        # stage's), as in the released weights.
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        # ReLU before BN in the first conv is how TalkNet was trained; kept for the weights.
        y = self.bn1(F.relu(self.conv1(x)))
        y = self.se(self.bn2(self.conv2(y)))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class _AudioEncoder(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), filters=(16, 32, 64, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters[0], 7, stride=(2, 1), padding=3, bias=False)  # halves the MFCC axis only
        self.bn1 = nn.BatchNorm2d(filters[0])
        # Stages 2 and 3 halve both axes: 4 MFCC frames per video frame -> 1.
        strides = (1, (2, 2), (2, 2), (1, 1))
        cin = filters[0]
        for i, (n, cout, st) in enumerate(zip(layers, filters, strides), start=1):
            blocks = [_SEBasicBlock(cin, cout, st)] + [_SEBasicBlock(cout, cout) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = cout

    def forward(self, x):  # (B, 1, 13, 4T) -> (B, T, 128)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=2).transpose(1, 2)


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------
class _AttentionLayer(nn.Module):
    """A post-norm transformer layer in which ``tar`` queries ``src``: the output is ``src``
    plus what it contributes to ``tar``'s frames, then a 4x feed-forward. With ``tar is src``
    it is plain self-attention. Dropout (training only) is left out: inference is eval."""

    def __init__(self, d_model: int, nhead: int = 8):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, 4 * d_model)
        self.linear2 = nn.Linear(4 * d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, tar):  # (B, T, C) both
        s, t = src.transpose(0, 1), tar.transpose(0, 1)  # MultiheadAttention is (T, B, C) here
        x = self.norm1(s + self.self_attn(t, s, s, need_weights=False)[0])
        x = self.norm2(x + self.linear2(F.relu(self.linear1(x))))
        return x.transpose(0, 1)


# ---------------------------------------------------------------------------------------
# The whole network
# ---------------------------------------------------------------------------------------
class _TalkNetModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.visualFrontend = _VisualFrontend()
        self.visualTCN = _VisualTCN()
        self.visualConv1D = _VisualConv1D()
        self.audioEncoder = _AudioEncoder()
        self.crossA2V = _AttentionLayer(128)
        self.crossV2A = _AttentionLayer(128)
        self.selfAV = _AttentionLayer(256)

    def visual(self, faces):  # (B, T, 112, 112) in 0..255 -> (B, T, 128)
        x = (faces.float() / 255.0 - _PIXEL_MEAN) / _PIXEL_STD
        x = self.visualFrontend(x).transpose(1, 2)  # (B, 512, T) for the temporal convs
        return self.visualConv1D(self.visualTCN(x)).transpose(1, 2)

    def audio(self, mfcc_feats):  # (B, 4T, 13) -> (B, T, 128)
        return self.audioEncoder(mfcc_feats.float().unsqueeze(1).transpose(2, 3))


class _Head(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.FC = nn.Linear(cin, 2)


class TalkNet(nn.Module):
    """TalkNet with the released files' layout: ``model`` (encoders + attention) and the AV
    head ``lossAV`` (the training-only ``lossA``/``lossV`` heads are not built)."""

    def __init__(self):
        super().__init__()
        self.model = _TalkNetModel()
        self.lossAV = _Head(256)

    def forward(self, mfcc_feats: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """``mfcc_feats`` (B, 4T, 13) float, ``faces`` (B, T, 112, 112) uint8/float in 0..255
        -> speaking logits (B, T)."""
        m = self.model
        a, v = m.audio(mfcc_feats), m.visual(faces)
        # Each stream is updated from the other one: audio attended by the video frames and
        # video attended by the audio frames, then one self-attention over both.
        a2, v2 = m.crossA2V(src=a, tar=v), m.crossV2A(src=v, tar=a)
        av = torch.cat((a2, v2), dim=2)
        return self.lossAV.FC(m.selfAV(src=av, tar=av))[..., 1]


def backbone_params(net: TalkNet) -> int:
    """Parameters of ``net.model`` (what the paper's 15.01 M counts: no classifier heads)."""
    return sum(p.numel() for p in net.model.parameters())


# ---------------------------------------------------------------------------------------
# Loading the released files
# ---------------------------------------------------------------------------------------
def inference_state(state: dict) -> dict:
    """The released state dict as :class:`TalkNet` names it: a ``module.`` prefix (saved from
    DataParallel) stripped and the training-only heads dropped."""
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if not k.startswith(TRAINING_ONLY_HEADS):
            out[k] = v
    return out


def _describe(keys: list[str]) -> str:
    keys = sorted(keys)
    return keys[0] + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")


def load(path: str | Path, device: str = "cpu") -> TalkNet:
    """Build TalkNet and load a released file strictly: every parameter and BN statistic must
    be there with its shape, nothing else may be (bar the training-only heads). Anything else
    raises ``StageError`` with one line naming the file and what to use instead."""
    from ..stage import StageError

    path = Path(path)
    fix = ("use pretrain_TalkSet.model or pretrain_AVA.model from github.com/TaoRuijie/TalkNet-ASD, "
           "or set [asd] model = \"light-asd\"")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, pickled objects
        raise StageError(f"{path}: cannot be read as a TalkNet checkpoint ({type(e).__name__}); {fix}") from None
    if not isinstance(state, dict):
        raise StageError(f"{path}: not a TalkNet state dict (a {type(state).__name__}); {fix}")
    state = inference_state(state)
    net = TalkNet()
    want = net.state_dict()
    # BatchNorm's num_batches_tracked counters play no part at inference; files saved without
    # them (older torch) are fine, so those alone are filled from the fresh network.
    for k, v in want.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing or unexpected:
        parts = ([f"missing {_describe(missing)}"] if missing else []) + ([f"unexpected {_describe(unexpected)}"] if unexpected else [])
        raise StageError(f"{path}: not a TalkNet-ASD checkpoint ({'; '.join(parts)}); {fix}")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(want[k].shape)]
    if bad:
        k = sorted(bad)[0]
        raise StageError(f"{path}: not a TalkNet-ASD checkpoint ({k} has shape {tuple(state[k].shape)}, "
                         f"expected {tuple(want[k].shape)}; {len(bad)} mismatched); {fix}")
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()
