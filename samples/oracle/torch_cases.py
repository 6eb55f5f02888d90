"""The oracle set for our autodiff: torchvision's own architectures at small widths and inputs, and common
exporter patterns as small modules, each with random (seeded) weights, exported by torch.onnx and
differentiated by torch autograd. samples/oracle/run.ts differentiates the same exports with our autodiff
and compares.

  list                                    the case names, one a line
  export --dir DIR [--cases A,B] [--opsets 13,14,17] [--repeats N]
                                          for each case: DIR/CASE/opsetV.onnx (output `loss`, a scalar), the
                                          input x.bin and torch's d loss / d x in float64 (grad.bin, stored as
                                          float32), with float32 torch's error against it; torch's
                                          forward (no_grad) and forward+backward CPU times on 1 thread
                                          (median of at least N; none with N = 0); DIR/manifest.json
                                          describes them all

The loss is sum(net(x) · R) with R a fixed random tensor, so every output element matters. Models run in
eval mode (BatchNorm folded by the exporter, dropout off), with their BatchNorm statistics randomised so
the folded affine maps are not the identity, and zero-initialised heads made random.

Dev-only: Debian's python3-torch 1.13 and python3-torchvision 0.14.
"""
import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torchvision.models import efficientnet as tv_efficientnet
from torchvision.models import regnet as tv_regnet
from torchvision.models import swin_transformer as tv_swin
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

OPSETS = [13, 14, 17]


# ---- exporter patterns, one small module each ----

class PixelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.b(F.pixel_unshuffle(F.pixel_shuffle(self.a(x), 2), 2)[:, :4] + F.pixel_shuffle(self.a(x), 2)[:, :, ::2, ::2])


class TopK(nn.Module):
    def forward(self, x):
        return x.flatten(1).topk(20, dim=1).values * 2


class Sort(nn.Module):
    def forward(self, x):
        return torch.sort(x * x, dim=-1, descending=True).values


class AffineWarp(nn.Module):
    """A spatial transformer: the affine grid is computed from x itself (written out: torch 1.13 cannot
    export F.affine_grid)."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Linear(3, 6)

    def forward(self, x):
        n, _, h, w = x.shape
        theta = (self.theta(x.mean(dim=(2, 3))) * 0.1 + torch.tensor([1.0, 0, 0, 0, 1, 0]).to(x)).reshape(-1, 2, 3)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h).to(x), torch.linspace(-1, 1, w).to(x), indexing='ij')
        base = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, h * w, 3)
        grid = (base @ theta.transpose(1, 2)).reshape(n, h, w, 2)
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


class FlowWarp(nn.Module):
    """A flow warp: an offset field from a conv of x, added to the identity grid."""

    def __init__(self):
        super().__init__()
        self.flow = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        n, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h).to(x), torch.linspace(-1, 1, w).to(x), indexing='ij')
        grid = torch.stack([xs, ys], dim=-1).unsqueeze(0) + 0.1 * torch.tanh(self.flow(x)).permute(0, 2, 3, 1)
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=True)


class PadConv(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode, self.conv = mode, nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(F.pad(x, (1, 2, 2, 1), mode=self.mode))


class CumSum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=2) * torch.cumsum(x, dim=-1)


class LogSumExp(nn.Module):
    def forward(self, x):
        return torch.logsumexp(x * 3, dim=1)


class HardActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        h = self.conv(x * 3)
        return F.hardswish(h) + F.hardsigmoid(h) * h


class AvgPoolCeil(nn.Module):
    def __init__(self, count_include_pad):
        super().__init__()
        self.count_include_pad = count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, 2, stride=2, ceil_mode=True, count_include_pad=self.count_include_pad) + F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=self.count_include_pad)


class MaxPoolOverlap(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, 3, stride=2, padding=1) + F.max_pool2d(x, 3, stride=2, ceil_mode=True)


class Tiling(nn.Module):
    def forward(self, x):
        return x.repeat(2, 1, 3, 1) * x.mean(dim=1, keepdim=True).repeat(1, 4, 3, 1) + x[:, :1].expand(2, 4, 15, 15).repeat(1, 1, 3, 1)


class CrossEntropy(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3 * 15 * 15, 10)
        self.register_buffer('target', torch.randint(0, 10, (4,)))

    def forward(self, x):
        logits = self.head(x.flatten(1).repeat(4, 1) * torch.arange(1, 5.0).to(x).reshape(4, 1))
        return F.cross_entropy(logits, self.target)


class Resample(nn.Module):
    """Bilinear and nearest interpolation, and an antialias-free downscale."""

    def forward(self, x):
        up = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
        return F.interpolate(up, size=(11, 11), mode='bilinear', align_corners=True) + F.interpolate(x, size=(11, 11), mode='nearest')


class LpipsTaps(nn.Module):
    """LPIPS's use of a torchvision feature stack: taps after each ReLU that precedes a pool (and the last),
    unit-normalised over channels, squared differences from a fixed target's features, averaged."""

    def __init__(self, features, target):
        super().__init__()
        self.features = features
        relus = [i for i, m in enumerate(features) if isinstance(m, nn.ReLU)]
        pools = {i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)}
        self.taps = [i for i in relus if i + 1 in pools or i == relus[-1]]
        with torch.no_grad():
            self.targets = [t for t in self.tapped(target)]

    def tapped(self, x):
        out = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.taps:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x):
        return sum(((a - b) ** 2).mean() for a, b in zip(self.tapped(x), self.targets))


# ---- torchvision architectures, small ----

def regnet(depth, w_0, w_a, w_m, group_width, se_ratio=None):
    params = tv_regnet.BlockParams.from_init_params(depth=depth, w_0=w_0, w_a=w_a, w_m=w_m, group_width=group_width, se_ratio=se_ratio)
    return tv_regnet.RegNet(params, num_classes=10)


def efficientnet(width, depth):
    setting, last = tv_efficientnet._efficientnet_conf('efficientnet_b0', width_mult=width, depth_mult=depth)
    return tv_efficientnet.EfficientNet(setting, dropout=0.0, last_channel=last, num_classes=10)


def swin(v2):
    kinds = dict(block=tv_swin.SwinTransformerBlockV2, downsample_layer=tv_swin.PatchMergingV2) if v2 else {}
    return tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=10, **kinds)


def maxvit():
    return tvm.MaxVit(input_size=(64, 64), stem_channels=16, partition_size=4, block_channels=[16, 32], block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10)


# name: (module builder, input shape). Inputs are small; widths reduced where torchvision lets us. All of
# torchvision 0.14's classification families are here.
CASES = {
    'resnet18': (lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10), [1, 3, 64, 64]),
    'resnet50': (lambda: ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10), [1, 3, 32, 32]),
    'resnext': (lambda: ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10), [1, 3, 64, 64]),
    'wide_resnet': (lambda: ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=10), [1, 3, 32, 32]),
    'alexnet_lpips': (lambda: LpipsTaps(tvm.alexnet().features, torch.randn(1, 3, 64, 64)), [1, 3, 64, 64]),
    'vgg16_lpips': (lambda: LpipsTaps(tvm.vgg16().features, torch.randn(1, 3, 32, 32)), [1, 3, 32, 32]),
    'squeezenet': (lambda: tvm.squeezenet1_1(num_classes=10), [1, 3, 64, 64]),
    'mobilenet_v2': (lambda: tvm.mobilenet_v2(width_mult=0.5, num_classes=10), [1, 3, 64, 64]),
    'mobilenet_v3_small': (lambda: tvm.mobilenet_v3_small(width_mult=0.5, num_classes=10), [1, 3, 64, 64]),
    'mobilenet_v3_large': (lambda: tvm.mobilenet_v3_large(width_mult=0.5, num_classes=10), [1, 3, 64, 64]),
    'efficientnet': (lambda: efficientnet(0.5, 0.5), [1, 3, 64, 64]),
    'regnet_x': (lambda: regnet(6, 24, 24.0, 2.5, 8), [1, 3, 64, 64]),
    'regnet_y': (lambda: regnet(6, 24, 27.89, 2.09, 8, se_ratio=0.25), [1, 3, 64, 64]),
    'densenet': (lambda: tvm.DenseNet(growth_rate=12, block_config=(2, 2, 2, 2), num_init_features=24, num_classes=10), [1, 3, 64, 64]),
    'shufflenet': (lambda: tvm.ShuffleNetV2([2, 2, 2], [16, 32, 64, 128, 256], num_classes=10), [1, 3, 64, 64]),
    'mnasnet': (lambda: tvm.mnasnet0_5(num_classes=10), [1, 3, 64, 64]),
    'googlenet': (lambda: tvm.GoogLeNet(num_classes=10, aux_logits=False, init_weights=False), [1, 3, 64, 64]),
    'inception_v3': (lambda: tvm.Inception3(num_classes=10, aux_logits=False, init_weights=True), [1, 3, 80, 80]),
    'vit': (lambda: tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128, num_classes=10), [1, 3, 32, 32]),
    'swin': (lambda: swin(False), [1, 3, 32, 32]),
    'swin_v2': (lambda: swin(True), [1, 3, 32, 32]),
    'convnext': (lambda: ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], stochastic_depth_prob=0.0, num_classes=10), [1, 3, 32, 32]),
    'maxvit': (maxvit, [1, 3, 64, 64]),
}
ARCHITECTURES = set(CASES)
# exporter patterns
CASES |= {
    'pixel_shuffle': (PixelShuffle, [1, 3, 8, 8]),
    'topk': (TopK, [2, 3, 8, 8]),
    'sort': (Sort, [2, 3, 8, 8]),
    'grid_sample_affine': (AffineWarp, [1, 3, 12, 12]),
    'grid_sample_flow': (FlowWarp, [1, 3, 12, 12]),
    'pad_reflect': (lambda: PadConv('reflect'), [1, 3, 9, 9]),
    'pad_replicate': (lambda: PadConv('replicate'), [1, 3, 9, 9]),
    'cumsum': (CumSum, [1, 3, 6, 7]),
    'logsumexp': (LogSumExp, [2, 5, 6]),
    'hardswish': (HardActivations, [1, 3, 8, 8]),
    'avgpool_ceil': (lambda: AvgPoolCeil(True), [1, 3, 5, 5]),
    'avgpool_ceil_nopad': (lambda: AvgPoolCeil(False), [1, 3, 5, 5]),
    'maxpool_overlap': (MaxPoolOverlap, [1, 3, 10, 10]),
    'tiling': (Tiling, [1, 4, 15, 15]),
    'cross_entropy': (CrossEntropy, [1, 3, 15, 15]),
    'resample': (Resample, [1, 3, 6, 6]),
}


def randomise(module, generator):
    """BatchNorm statistics and affine maps away from the identity; zero-initialised layers (ViT's head) random."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and not m.weight.any():
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=generator) * 0.1)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)


class Loss(nn.Module):
    """sum(net(x) · R): a scalar that every output element reaches."""

    def __init__(self, net, weights):
        super().__init__()
        self.net = net
        self.register_buffer('weights', weights)

    def forward(self, x):
        return (self.net(x) * self.weights).sum()


def build(name):
    make, shape = CASES[name]
    torch.manual_seed(0)
    net = make().eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        randomise(net, generator)
        x = torch.randn(shape, generator=generator)
        out = net(x)
        weights = torch.randn(out.shape, generator=generator)
    for p in net.parameters():
        p.requires_grad_(False)
    return Loss(net, weights).eval(), x


def attention_weights(loss, requires_grad):
    """nn.MultiheadAttention takes a fused fast path (aten::_native_multi_head_attention), which torch.onnx
    cannot export, unless grad is enabled and one of its weights requires it: so they do while exporting."""
    for m in loss.modules():
        if isinstance(m, nn.MultiheadAttention):
            for p in m.parameters():
                p.requires_grad_(requires_grad)


def gradient(loss, x):
    xg = x.clone().requires_grad_(True)
    value = loss(xg)
    return value, torch.autograd.grad(value, xg)[0]


def median_cpu_ms(step, repeats):
    """Median CPU time of step() after two warm-ups: at least `repeats` runs and ~0.2 s, like run.ts's."""
    step()
    step()
    times = []
    while len(times) < repeats or (sum(times) < 200 and len(times) < 400):
        start = time.process_time()
        step()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def zero_symbolic(g, self):
    """torch 1.13 has no ONNX symbolic for aten::zero (Swin V2 zeroes the key part of its qkv bias in place)."""
    return g.op('Sub', self, self)


def export(args):
    for opset in range(9, 18):
        torch.onnx.register_custom_op_symbolic('aten::zero', zero_symbolic, opset)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    names = args.cases.split(',') if args.cases else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f'unknown case(s): {", ".join(unknown)} (run `list`)')
    opsets = [int(v) for v in args.opsets.split(',')]
    os.makedirs(args.dir, exist_ok=True)
    manifest = []
    for name in names:
        entry = {'name': name, 'kind': 'architecture' if name in ARCHITECTURES else 'pattern'}
        try:
            loss, x = build(name)
            value, grad = gradient(loss, x)
            # the reference is torch's gradient in float64; float32's own error against it is the floor any
            # float32 gradient is judged by (a pre-activation within rounding of a ReLU's kink flips)
            _, reference = gradient(copy.deepcopy(loss).double(), x.double())
        except Exception as error:  # a torchvision without this architecture or its options
            entry['error'] = f'torch cannot build or differentiate it: {type(error).__name__}: {str(error).splitlines()[0]}'
            manifest.append(entry)
            print(f'{name}: {entry["error"]}', flush=True)
            continue
        floor = float((grad.double() - reference).abs().max() / reference.abs().max())
        folder = os.path.join(args.dir, name)
        os.makedirs(folder, exist_ok=True)
        x.numpy().astype('float32').tofile(os.path.join(folder, 'x.bin'))
        reference.numpy().astype('float32').tofile(os.path.join(folder, 'grad.bin'))

        def forward():
            with torch.no_grad():
                loss(x)

        def forward_backward():
            xr = x.clone().requires_grad_(True)
            torch.autograd.grad(loss(xr), xr)

        entry.update(shape=list(x.shape), loss=float(value), float32_error=floor, opsets={})
        if args.repeats > 0:
            entry.update(forward_ms=median_cpu_ms(forward, args.repeats), gradient_ms=median_cpu_ms(forward_backward, args.repeats))
        for opset in opsets:
            path = os.path.join(folder, f'opset{opset}.onnx')
            try:
                attention_weights(loss, True)
                torch.onnx.export(loss, x, path, opset_version=opset, input_names=['x'], output_names=['loss'], do_constant_folding=True)
                entry['opsets'][str(opset)] = {'model': os.path.relpath(path, args.dir)}
            except Exception as error:
                entry['opsets'][str(opset)] = {'error': f'torch.onnx cannot export it: {str(error).splitlines()[0]}'}
            finally:
                attention_weights(loss, False)
        manifest.append(entry)
        print(f'{name}: exported' + (f', torch forward {entry["forward_ms"]:.2f} ms, forward+backward {entry["gradient_ms"]:.2f} ms' if args.repeats > 0 else ''), flush=True)
    with open(os.path.join(args.dir, 'manifest.json.tmp'), 'w') as f:
        json.dump({'torch': torch.__version__, 'threads': 1, 'cases': manifest}, f, indent=1)
    os.replace(os.path.join(args.dir, 'manifest.json.tmp'), os.path.join(args.dir, 'manifest.json'))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('list')
    ex = sub.add_parser('export')
    ex.add_argument('--dir', required=True)
    ex.add_argument('--cases', default='')
    ex.add_argument('--opsets', default=','.join(map(str, OPSETS)))
    ex.add_argument('--repeats', type=int, default=7)
    args = parser.parse_args()
    if args.command == 'list':
        print('\n'.join(CASES))
    else:
        export(args)


if __name__ == '__main__':
    main()
