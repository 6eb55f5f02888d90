# Exports small torch modules, each ending in a scalar loss, with torch.onnx at several opsets, beside torch
# autograd's gradients of the loss w.r.t. every input (test/autodiff-torch.test.ts compares ours with them).
# Usage: python3 test/autodiff_torch.py OUT_DIR  →  OUT_DIR/manifest.json, the models and raw float32 tensors.
import json
import os
import sys
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings('ignore')
torch.manual_seed(0)
out = sys.argv[1]


def ties(*shape):
    """Values on a coarse grid (as after a ReLU and rounding): windows and rows with tied maxima."""
    return torch.relu(torch.randn(*shape)).mul(2).round().div(2)


class Case(torch.nn.Module):
    def __init__(self, f, output_shape):
        super().__init__()
        self.f = f
        self.register_buffer('r', torch.randn(output_shape))

    def forward(self, *xs):
        return (self.f(*xs) * self.r).sum()


crossentropy_weight = torch.rand(5) + 0.5
CASES = [
    ('avg_pool ceil_mode', lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=True), [torch.randn(1, 2, 5, 5)], [13, 14, 17]),
    ('avg_pool ceil_mode, pads counted', lambda x: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=True), [torch.randn(1, 2, 6, 7)], [13, 17]),
    ('avg_pool ceil_mode, pads not counted', lambda x: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False), [torch.randn(1, 2, 6, 7)], [13, 17]),
    ('max_pool overlapping, ties', lambda x: F.max_pool2d(x, 3, 2, padding=1), [ties(1, 2, 8, 8)], [13, 14, 17]),
    ('max_pool ceil_mode', lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True), [torch.randn(1, 2, 8, 8)], [13, 17]),
    ('hardswish, hardsigmoid', lambda x: F.hardswish(x * 3) + F.hardsigmoid(x * 3), [torch.randn(2, 8)], [14, 17]),
    ('pixel_shuffle', lambda x: torch.sin(F.pixel_shuffle(x, 2)), [torch.randn(1, 8, 3, 3)], [13, 17]),
    ('cross_entropy with weights and ignore_index', lambda x: F.cross_entropy(x, torch.tensor([0, 1, 4, 2]), weight=crossentropy_weight, ignore_index=1), [torch.randn(4, 5)], [13, 17]),
    ('reflect and replicate pads', lambda x: F.pad(x, (1, 2, 2, 1), mode='reflect') + F.pad(x, (1, 2, 2, 1), mode='replicate'), [torch.randn(1, 2, 4, 5)], [13, 17]),
    ('cumsum, logsumexp, topk, repeat', lambda x: torch.cumsum(x, 1).sum(0) + torch.logsumexp(x, 0) + x.topk(3, dim=0).values.sum(0) + x.repeat(2, 1).sum(0), [torch.randn(4, 6)], [13, 17]),
    ('amax and maximum with ties', lambda x: torch.amax(x, 1) + torch.maximum(x, torch.full_like(x, 0.5)).sum(1), [ties(4, 6)], [13, 17]),
    ('grid_sample w.r.t. image and grid', lambda img, theta: F.grid_sample(img, torch.tanh(theta), mode='bilinear', padding_mode='zeros', align_corners=False)
        + F.grid_sample(img, torch.tanh(theta) * 1.2, mode='bilinear', padding_mode='border', align_corners=True), [torch.randn(1, 2, 5, 6), torch.randn(1, 3, 4, 2)], [16, 17]),
]

manifest = []
for index, (name, f, inputs, opsets) in enumerate(CASES):
    with torch.no_grad():
        shape = f(*inputs).shape
    module = Case(f, shape)
    names = [f'x{i}' for i in range(len(inputs))]
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    module(*leaves).backward()
    tensors = {}
    for n, x, leaf in zip(names, inputs, leaves):
        for kind, t in (('input', x), ('grad', leaf.grad)):
            path = os.path.join(out, f'case{index}_{n}_{kind}.bin')
            t.detach().contiguous().numpy().astype('float32').tofile(path)
            tensors.setdefault(n, {'shape': list(x.shape)})[kind] = path
    for opset in opsets:
        model = os.path.join(out, f'case{index}_opset{opset}.onnx')
        torch.onnx.export(module, tuple(inputs), model, input_names=names, output_names=['loss'], opset_version=opset)
        manifest.append({'name': name, 'opset': opset, 'model': model, 'inputs': tensors})
with open(os.path.join(out, 'manifest.json'), 'w') as file:
    json.dump(manifest, file)
