"""A small UNet-shaped network in PyTorch (diffusers-style blocks), for `npm run bench`.

  export  --channels C --size S --dir DIR   seeded weights; writes DIR/model.onnx (torch.onnx, opset 17,
                                            output `loss` = mean(out_sample²)), the inputs (sample.bin,
                                            context.bin) and torch's d loss / d sample (grad.bin), float32
  measure --channels C --size S --mode forward|backward --runs N --threads T
                                            times torch's forward (no_grad) or forward+backward w.r.t. the
                                            sample (weights frozen), prints JSON with the best time, the
                                            RSS before the runs and this process's peak RSS (VmHWM)

Dev-only: Debian's python3-torch (1.13). The TypeScript side runs the exported model in onnxruntime.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONTEXT_TOKENS, CONTEXT_DIM = 8, 32


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups=8):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Attention(nn.Module):
    """diffusers' legacy attention processor: matmul, scale, softmax, matmul."""

    def __init__(self, dim, heads, context_dim=None):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(context_dim or dim, dim, bias=False)
        self.v = nn.Linear(context_dim or dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def split(self, x):
        b, t, c = x.shape
        return x.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self.split(self.q(x)), self.split(self.k(context)), self.split(self.v(context))
        weights = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        h = (weights @ v).transpose(1, 2)
        return self.out(h.reshape(h.shape[0], h.shape[1], -1))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, CONTEXT_DIM)
        self.norm3, self.ff = nn.LayerNorm(dim), nn.Sequential(GEGLU(dim, 4 * dim), nn.Linear(4 * dim, dim))

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, channels, heads, groups=8):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in, self.block, self.proj_out = nn.Linear(channels, channels), TransformerBlock(channels, heads), nn.Linear(channels, channels)

    def forward(self, x, context):
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        tokens = self.proj_out(self.block(self.proj_in(tokens), context))
        return tokens.reshape(b, h, w, c).permute(0, 3, 1, 2) + x


class UNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        heads = max(1, c // 32)
        self.conv_in = nn.Conv2d(4, c, 3, padding=1)
        self.down_res, self.down_attn = ResnetBlock(c, c), SpatialTransformer(c, heads)
        self.downsample = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.mid_res1, self.mid_attn, self.mid_res2 = ResnetBlock(c, 2 * c), SpatialTransformer(2 * c, 2 * heads), ResnetBlock(2 * c, 2 * c)
        self.up_res, self.up_attn = ResnetBlock(3 * c, c), SpatialTransformer(c, heads)
        self.norm_out, self.conv_out = nn.GroupNorm(8, c), nn.Conv2d(c, 4, 3, padding=1)

    def forward(self, sample, context):
        h = self.down_attn(self.down_res(self.conv_in(sample)), context)
        skip = h
        h = self.mid_res2(self.mid_attn(self.mid_res1(self.downsample(h)), context))
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.up_attn(self.up_res(torch.cat([h, skip], dim=1)), context)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return (out * out).mean()


def build(channels, size, seed=0):
    torch.manual_seed(seed)
    net = UNet(channels).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    sample = torch.randn(1, 4, size, size)
    context = torch.randn(1, CONTEXT_TOKENS, CONTEXT_DIM)
    return net, sample, context


def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["export", "measure"])
    parser.add_argument("--channels", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--dir")
    parser.add_argument("--mode", choices=["forward", "backward"], default="forward")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, sample, context = build(args.channels, args.size)

    if args.command == "export":
        torch.onnx.export(net, (sample, context), f"{args.dir}/model.onnx", input_names=["sample", "encoder_hidden_states"],
                          output_names=["loss"], opset_version=17)
        x = sample.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x, context), x)
        for name, t in [("sample", sample), ("context", context), ("grad", grad)]:
            t.contiguous().numpy().astype("float32").tofile(f"{args.dir}/{name}.bin")
        return

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, so the peak is the runs' and not the set-up's
    baseline = status_kb("VmRSS")
    times = []
    for _ in range(args.runs + 1):  # the first run warms up
        start = time.perf_counter()
        if args.mode == "forward":
            with torch.no_grad():
                net(sample, context)
        else:
            x = sample.clone().requires_grad_(True)
            torch.autograd.grad(net(x, context), x)
        times.append((time.perf_counter() - start) * 1000)
    # the best run: on a shared machine the least disturbed one
    print(json.dumps({"best_ms": min(times[1:]), "baseline_kb": baseline, "peak_kb": status_kb("VmHWM")}))


if __name__ == "__main__":
    main()
