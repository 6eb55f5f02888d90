"""Dev check of src/diffusion/lora.ts against a real torch.onnx export (no weights, no diffusers needed).

    python3 samples/export/check_lora_naming.py OUT [--opset 14|17]  # torch >= 1.13: OUT/unet, OUT/lora-*.safetensors, OUT/expected.json
    npx tsx samples/export/check_lora_naming.ts OUT                   # applies each LoRA with lora.ts, runs onnxruntime, compares

A tiny UNet whose attribute names follow diffusers' UNet2DConditionModel for SDXL (DownBlock2D, 2 CrossAttn down
blocks, UNetMidBlock2DCrossAttn, 2 CrossAttn up blocks, UpBlock2D; ResnetBlock2D, Transformer2DModel with linear
proj_in/proj_out, BasicTransformerBlock with attn1/attn2/GEGLU, Downsample2D, Upsample2D, TimestepEmbedding,
text_time add_embedding) is exported the way optimum's export_pytorch calls torch.onnx.export (named inputs,
dynamic axes, do_constant_folding=True, parameters exported). Then a LoRA on every layer kind that
latent-consistency/lcm-lora-sdxl adapts (diffusers' train_lcm_distill_lora_sdxl target modules: to_q, to_k, to_v,
to_out.0, proj_in, proj_out, ff.net.0.proj, ff.net.2, conv1, conv2, conv_shortcut, downsamplers.0.conv,
upsamplers.0.conv, time_emb_proj) plus conv_in, conv_out, time_embedding.linear_1/2 and add_embedding.linear_1/2
(which other SDXL LoRAs adapt) is written in three spellings: kohya in float16 with alpha (as lcm-lora-sdxl
ships), diffusers (unet.….lora.down.weight) and peft (unet.….lora_A.weight), the last two in float32 without alpha
(so α/r = 1, and α/r is folded into their up weights). The expected output is torch's, with W + scale·α/r·up·down fused into each weight. Dev-only: torch is never
a runtime dependency; the unit test guarding what this found builds its graph from code (test/lora.test.ts).
"""
import argparse
import json
import math
import os
import struct

import torch
from torch import nn
from torch.nn import functional as F

GROUPS = 4  # GroupNorm groups (32 in SDXL; the channels here are small)
SCALES = [1.0, 0.6]  # lora_scale values compared


class Timesteps(nn.Module):
    """diffusers' sinusoidal projection (flip_sin_to_cos=True, downscale_freq_shift=0); no parameters."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim_in, dim):
        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(dim_in, dim), nn.SiLU(), nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, c_in, c_out, temb):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, c_out)
        self.norm2 = nn.GroupNorm(GROUPS, c_out, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x, temb):
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Attention(nn.Module):
    """diffusers' Attention with AttnProcessor (the torch < 2 path: baddbmm, softmax, bmm)."""

    def __init__(self, dim, context_dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def split(self, x):
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).permute(0, 2, 1, 3).reshape(b * self.heads, n, d // self.heads)

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self.split(self.to_q(x)), self.split(self.to_k(context)), self.split(self.to_v(context))
        scores = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype), q, k.transpose(-1, -2), beta=0, alpha=self.scale)
        h = torch.bmm(scores.softmax(dim=-1), v)
        bh, n, d = h.shape
        h = h.reshape(bh // self.heads, self.heads, n, d).permute(0, 2, 1, 3).reshape(bh // self.heads, n, d * self.heads)
        return self.to_out[1](self.to_out[0](h))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        for module in self.net:
            x = module(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, context_dim, heads):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, context_dim, heads)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    """use_linear_projection=True, as in SDXL: proj_in and proj_out are Linear layers on [B, HW, C]."""

    def __init__(self, c, context_dim, depth, heads=2):
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, c, eps=1e-6)
        self.proj_in = nn.Linear(c, c)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(c, context_dim, heads) for _ in range(depth)])
        self.proj_out = nn.Linear(c, c)

    def forward(self, x, context):
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))
        for block in self.transformer_blocks:
            y = block(y, context)
        return self.proj_out(y).reshape(b, h, w, c).permute(0, 3, 1, 2) + x


class Downsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """DownBlock2D (depth 0) or CrossAttnDownBlock2D."""

    def __init__(self, c_in, c_out, temb, context_dim, depth, downsample, layers=2):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c_in if i == 0 else c_out, c_out, temb) for i in range(layers)])
        if depth:
            self.attentions = nn.ModuleList([Transformer2DModel(c_out, context_dim, depth) for _ in range(layers)])
        if downsample:
            self.downsamplers = nn.ModuleList([Downsample2D(c_out)])

    def forward(self, x, temb, context):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """UpBlock2D (depth 0) or CrossAttnUpBlock2D: each resnet takes the skip of its down-block twin."""

    def __init__(self, c_prev, c_out, c_skip_last, temb, context_dim, depth, upsample, layers=3):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D((c_prev if i == 0 else c_out) + (c_skip_last if i == layers - 1 else c_out), c_out, temb)
            for i in range(layers)
        ])
        if depth:
            self.attentions = nn.ModuleList([Transformer2DModel(c_out, context_dim, depth) for _ in range(layers)])
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(c_out)])

    def forward(self, x, skips, temb, context):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    def __init__(self, c, temb, context_dim, depth):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb), ResnetBlock2D(c, c, temb)])
        self.attentions = nn.ModuleList([Transformer2DModel(c, context_dim, depth)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class UNet(nn.Module):
    """SDXL's UNet2DConditionModel layout at small widths: channels (8, 16, 32), transformer depths (0, 1, 2)."""

    def __init__(self, channels=(8, 16, 32), depths=(0, 1, 2), context_dim=12, text_embeds=8, time_embed=4):
        super().__init__()
        temb = 4 * channels[0]
        self.conv_in = nn.Conv2d(4, channels[0], 3, padding=1)
        self.time_proj = Timesteps(channels[0])
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.add_time_proj = Timesteps(time_embed)
        self.add_embedding = TimestepEmbedding(text_embeds + 6 * time_embed, temb)
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList([
            DownBlock(channels[max(i - 1, 0)], c, temb, context_dim, depths[i], downsample=i < last) for i, c in enumerate(channels)
        ])
        self.mid_block = MidBlock(channels[-1], temb, context_dim, depths[-1])
        up_channels, up_depths = channels[::-1], depths[::-1]
        self.up_blocks = nn.ModuleList([
            UpBlock(up_channels[max(i - 1, 0)], c, up_channels[min(i + 1, last)], temb, context_dim, up_depths[i], upsample=i < last)
            for i, c in enumerate(up_channels)
        ])
        self.conv_norm_out, self.conv_act = nn.GroupNorm(GROUPS, channels[0], eps=1e-5), nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        batch = sample.shape[0]
        emb = self.time_embedding(self.time_proj(timestep.expand(batch)))
        time_embeds = self.add_time_proj(time_ids.flatten()).reshape(batch, -1)
        emb = emb + self.add_embedding(torch.cat([text_embeds, time_embeds], dim=-1))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb, encoder_hidden_states)
            skips += block_skips
        x = self.mid_block(x, emb, encoder_hidden_states)
        for block in self.up_blocks:
            x = block(x, skips, emb, encoder_hidden_states)
        return {"out_sample": self.conv_out(self.conv_act(self.conv_norm_out(x)))}


ADAPTED = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
           "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
           "conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2", "add_embedding.linear_1", "add_embedding.linear_2")


# torch.onnx (>= 1.13, eval mode) keeps one initializer per set of equal tensors and reads the others through Identity
# nodes (_jit_pass_onnx_deduplicate_initializers). Trained weights are never equal; these pairs are, so that the
# check sees that pattern once per layer kind (MatMul, Gemm, Conv).
TIED = [
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"),
    ("down_blocks.0.resnets.0.time_emb_proj", "down_blocks.0.resnets.1.time_emb_proj"),
    ("up_blocks.2.resnets.1.conv2", "up_blocks.2.resnets.2.conv2"),
]


def lora_layers(unet, rank=4, alpha=2.0):
    """A random LoRA (down, up, alpha) per adapted layer, rounded to float16 as lcm-lora-sdxl stores it."""
    layers = {}
    for name, module in unet.named_modules():
        if not name.endswith(ADAPTED) or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        w = module.weight
        down = torch.randn(rank, *w.shape[1:]) * 0.3  # [r, in] or [r, in, k, k]
        up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else [])) * 0.3
        layers[name] = (down.half().float(), up.half().float(), alpha)
    return layers


def fused(unet, layers, scale):
    """A copy of `unet` with W + scale·α/r·up·down in each adapted weight."""
    copy = UNet()
    copy.load_state_dict(unet.state_dict())
    modules = dict(copy.named_modules())
    with torch.no_grad():
        for name, (down, up, alpha) in layers.items():
            w = modules[name].weight
            delta = up.flatten(1) @ down.flatten(1)  # [out, in·k·k]
            w += scale * alpha / down.shape[0] * delta.reshape(w.shape)
    return copy


def write_safetensors(path, tensors):
    """The safetensors format (8-byte header length, JSON header, raw data), so that no package is needed."""
    header, chunks, offset = {}, [], 0
    for name, (dtype, t) in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def write_loras(out, layers):
    kohya, diffusers, peft = {}, {}, {}
    for name, (down, up, alpha) in layers.items():
        flat = "lora_unet_" + name.replace(".", "_")
        kohya[f"{flat}.lora_down.weight"] = ("F16", down.half())
        kohya[f"{flat}.lora_up.weight"] = ("F16", up.half())
        kohya[f"{flat}.alpha"] = ("F16", torch.tensor(alpha).half())
        # no alpha in these spellings: the branch is scaled by α/r = 1, so scale the up weight to the same product
        diffusers[f"unet.{name}.lora.down.weight"] = ("F32", down)
        diffusers[f"unet.{name}.lora.up.weight"] = ("F32", up * alpha / down.shape[0])
        peft[f"unet.{name}.lora_A.weight"] = ("F32", down)
        peft[f"unet.{name}.lora_B.weight"] = ("F32", up * alpha / down.shape[0])
    for spelling, tensors in [("kohya", kohya), ("diffusers", diffusers), ("peft", peft)]:
        write_safetensors(os.path.join(out, f"lora-{spelling}.safetensors"), tensors)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--opset", type=int, default=14, help="14 (optimum <= 1.23) or 17 (torch 1.13's newest)")
    args = parser.parse_args()
    torch.manual_seed(0)
    unet = UNet().eval()
    modules = dict(unet.named_modules())
    with torch.no_grad():
        for source, tied in TIED:
            modules[tied].weight.copy_(modules[source].weight)
    batch, size, seq = 2, 16, 7
    inputs = {
        "sample": torch.randn(batch, 4, size, size),
        "timestep": torch.tensor([481] * batch, dtype=torch.int64),  # optimum <= 1.23: int64 [steps]
        "encoder_hidden_states": torch.randn(batch, seq, 12),
        "text_embeds": torch.randn(batch, 8),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * batch),
    }
    os.makedirs(os.path.join(args.out, "unet"), exist_ok=True)
    with torch.no_grad():
        # as optimum's export_pytorch: the inputs as a dict (keyword arguments), UNetOnnxConfig's dynamic axes
        torch.onnx.export(
            unet, (inputs,), os.path.join(args.out, "unet", "model.onnx"),
            input_names=list(inputs), output_names=["out_sample"],
            dynamic_axes={
                "sample": {0: "batch_size", 2: "height", 3: "width"}, "timestep": {0: "steps"},
                "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
                "text_embeds": {0: "batch_size"}, "time_ids": {0: "batch_size"},
                "out_sample": {0: "batch_size", 2: "height", 3: "width"},
            },
            do_constant_folding=True, export_params=True, opset_version=args.opset,
        )
        layers = lora_layers(unet)
        write_loras(args.out, layers)
        expected = {
            "inputs": {name: {"type": "int64" if t.dtype == torch.int64 else "float32", "dims": list(t.shape), "data": t.flatten().tolist()} for name, t in inputs.items()},
            "base": unet(**inputs)["out_sample"].flatten().tolist(),
            "fused": {str(s): fused(unet, layers, s)(**inputs)["out_sample"].flatten().tolist() for s in SCALES},
            "layers": sorted(layers),
            "torch": torch.__version__,
            "opset": args.opset,
        }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"torch {torch.__version__}, opset {args.opset}: {len(layers)} LoRA layers, export in {args.out}/unet")


if __name__ == "__main__":
    main()
