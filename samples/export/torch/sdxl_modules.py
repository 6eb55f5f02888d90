"""SDXL's architecture at small widths, written for this project from the structure of diffusers' UNet2DConditionModel
and AutoencoderKL decoder and transformers' CLIP text models (module names as theirs, so that torch.onnx names the
nodes and weights as in a real export and the LoRA matching applies). Written to be exported the way optimum 1.23
exports SDXL with torch < 2.1; dev and test tooling only, never a runtime dependency.

The forward passes reproduce what the export sees: timesteps.expand(batch), the text_time add-embedding, diffusers'
AttnProcessor (baddbmm on an empty tensor with beta=0, softmax, a float→float cast), GEGLU's chunk, output scale
factors of 1, nearest upsampling by F.interpolate, the CLIP causal mask built with triu and the pooled output
gathered at argmax(input_ids).
"""
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class UNetConfig:
    channels: tuple = (32, 64, 128)
    # SDXL's transformer_layers_per_block (1, 2, 10); its first block is a DownBlock2D, so the 1 is unused
    layers_per_block_attention: tuple = (1, 2, 10)
    attention_blocks: tuple = (False, True, True)
    head_dim: int = 16  # SDXL: 64 (5, 10, 20 heads at 320, 640, 1280 channels)
    groups: int = 32  # GroupNorm groups, as SDXL (its InstanceNormalization scale and bias Constants are 128 bytes)
    context_dim: int = 96  # SDXL: 2048 = 768 + 1280
    pooled_dim: int = 64  # SDXL: 1280 (text_encoder_2's projection)
    addition_time_embed_dim: int = 16  # SDXL: 256
    layers_per_block: int = 2


class Timesteps(nn.Module):
    """diffusers' get_timestep_embedding: sin then cos, swapped by flip_sin_to_cos; no parameters."""

    def __init__(self, dim, flip_sin_to_cos=True, downscale_freq_shift=0.0):
        super().__init__()
        self.dim, self.flip, self.shift = dim, flip_sin_to_cos, downscale_freq_shift

    def forward(self, timesteps):
        half = self.dim // 2
        exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32) / (half - self.shift)
        emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        return torch.cat([emb[:, half:], emb[:, :half]], dim=-1) if self.flip else emb


class TimestepEmbedding(nn.Module):
    def __init__(self, dim_in, dim):
        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(dim_in, dim), nn.SiLU(), nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """temb=None: the VAE's resnets (no time embedding)."""

    def __init__(self, c_in, c_out, temb, groups, eps=1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        if temb is not None:
            self.time_emb_proj = nn.Linear(temb, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.output_scale_factor = 1.0

    def forward(self, x, temb=None):
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        if temb is not None:
            h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return (shortcut + h) / self.output_scale_factor


class Attention(nn.Module):
    """diffusers' Attention with AttnProcessor as it runs under torch < 2.1. With `groups`: the VAE's mid-block
    attention (GroupNorm inside, [B,C,H,W] in and out, residual connection, softmax upcast)."""

    def __init__(self, dim, context_dim, heads, bias=False, groups=None, eps=1e-6):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.group_norm = nn.GroupNorm(groups, dim, eps=eps) if groups else None
        self.residual_connection = self.upcast_softmax = groups is not None
        self.rescale_output_factor = 1.0
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(context_dim, dim, bias=bias)
        self.to_v = nn.Linear(context_dim, dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def head_to_batch_dim(self, x):
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).permute(0, 2, 1, 3).reshape(b * self.heads, n, d // self.heads)

    def batch_to_head_dim(self, x):
        bh, n, d = x.shape
        return x.reshape(bh // self.heads, self.heads, n, d).permute(0, 2, 1, 3).reshape(bh // self.heads, n, d * self.heads)

    def attention_scores(self, q, k):
        dtype = q.dtype
        # diffusers passes torch.empty; zeros export the same ConstantOfShape, and torch's reference reads no
        # uninitialised memory
        empty = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device)
        scores = torch.baddbmm(empty, q, k.transpose(-1, -2), beta=0, alpha=self.scale)
        if self.upcast_softmax:
            scores = scores.float()
        return scores.softmax(dim=-1).to(dtype)

    def forward(self, x, context=None):
        residual = x
        spatial = x.ndim == 4
        if spatial:
            b, c, h, w = x.shape
            x = x.view(b, c, h * w).transpose(1, 2)
        if self.group_norm is not None:
            x = self.group_norm(x.transpose(1, 2)).transpose(1, 2)
        context = x if context is None else context
        q = self.head_to_batch_dim(self.to_q(x))
        k, v = self.head_to_batch_dim(self.to_k(context)), self.head_to_batch_dim(self.to_v(context))
        out = self.batch_to_head_dim(torch.bmm(self.attention_scores(q, k), v))
        out = self.to_out[1](self.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if self.residual_connection:
            out = out + residual
        return out / self.rescale_output_factor


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

    def __init__(self, c, context_dim, depth, heads, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.proj_in = nn.Linear(c, c)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(c, context_dim, heads) for _ in range(depth)])
        self.proj_out = nn.Linear(c, c)

    def forward(self, x, context):
        b, _, h, w = x.shape
        residual = x
        x = self.norm(x)
        c = x.shape[1]
        y = self.proj_in(x.permute(0, 2, 3, 1).reshape(b, h * w, c))
        for block in self.transformer_blocks:
            y = block(y, context)
        return self.proj_out(y).reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous() + residual


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

    def __init__(self, c_in, c_out, temb, cfg, depth, downsample):
        super().__init__()
        layers = cfg.layers_per_block
        self.resnets = nn.ModuleList([ResnetBlock2D(c_in if i == 0 else c_out, c_out, temb, cfg.groups) for i in range(layers)])
        if depth:
            self.attentions = nn.ModuleList([Transformer2DModel(c_out, cfg.context_dim, depth, c_out // cfg.head_dim, cfg.groups) for _ in range(layers)])
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

    def __init__(self, c_prev, c_out, c_skip_last, temb, cfg, depth, upsample):
        super().__init__()
        layers = cfg.layers_per_block + 1
        self.resnets = nn.ModuleList([
            ResnetBlock2D((c_prev if i == 0 else c_out) + (c_skip_last if i == layers - 1 else c_out), c_out, temb, cfg.groups)
            for i in range(layers)
        ])
        if depth:
            self.attentions = nn.ModuleList([Transformer2DModel(c_out, cfg.context_dim, depth, c_out // cfg.head_dim, cfg.groups) for _ in range(layers)])
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
    """UNetMidBlock2DCrossAttn: resnet, transformer, resnet."""

    def __init__(self, c, temb, cfg, depth):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb, cfg.groups), ResnetBlock2D(c, c, temb, cfg.groups)])
        self.attentions = nn.ModuleList([Transformer2DModel(c, cfg.context_dim, depth, c // cfg.head_dim, cfg.groups)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class UNet(nn.Module):
    """UNet2DConditionModel with SDXL's block layout; forward takes optimum's UNet inputs and returns {out_sample}."""

    def __init__(self, cfg=UNetConfig()):
        super().__init__()
        channels = cfg.channels
        depths = [d if attention else 0 for d, attention in zip(cfg.layers_per_block_attention, cfg.attention_blocks)]
        temb = 4 * channels[0]
        self.conv_in = nn.Conv2d(4, channels[0], 3, padding=1)
        self.time_proj = Timesteps(channels[0])
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.add_time_proj = Timesteps(cfg.addition_time_embed_dim)
        self.add_embedding = TimestepEmbedding(cfg.pooled_dim + 6 * cfg.addition_time_embed_dim, temb)
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList([
            DownBlock(channels[max(i - 1, 0)], c, temb, cfg, depths[i], downsample=i < last) for i, c in enumerate(channels)
        ])
        self.mid_block = MidBlock(channels[-1], temb, cfg, cfg.layers_per_block_attention[-1])
        up_channels, up_depths = channels[::-1], depths[::-1]
        self.up_blocks = nn.ModuleList([
            UpBlock(up_channels[max(i - 1, 0)], c, up_channels[min(i + 1, last)], temb, cfg, up_depths[i], upsample=i < last)
            for i, c in enumerate(up_channels)
        ])
        self.conv_norm_out, self.conv_act = nn.GroupNorm(cfg.groups, channels[0], eps=1e-5), nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        batch = sample.shape[0]
        t_emb = self.time_proj(timestep.expand(batch)).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)
        time_embeds = self.add_time_proj(time_ids.flatten()).reshape((text_embeds.shape[0], -1))
        add_embeds = torch.cat([text_embeds, time_embeds], dim=-1).to(emb.dtype)
        emb = emb + self.add_embedding(add_embeds)
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb, encoder_hidden_states)
            skips += block_skips
        x = self.mid_block(x, emb, encoder_hidden_states)
        for block in self.up_blocks:
            x = block(x, skips, emb, encoder_hidden_states)
        return {"out_sample": self.conv_out(self.conv_act(self.conv_norm_out(x)))}


# --- the VAE decoder (AutoencoderKL.decode, as optimum's vae_decoder wraps it) ---


@dataclass
class VaeConfig:
    channels: tuple = (32, 64, 64, 64)  # SDXL: (128, 256, 512, 512)
    groups: int = 32  # as SDXL
    layers_per_block: int = 2


class UpDecoderBlock2D(nn.Module):
    def __init__(self, c_in, c_out, cfg, upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c_in if i == 0 else c_out, c_out, None, cfg.groups, eps=1e-6) for i in range(cfg.layers_per_block + 1)])
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(c_out)])

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return self.upsamplers[0](x) if hasattr(self, "upsamplers") else x


class VaeMidBlock(nn.Module):
    """UNetMidBlock2D: resnet, one-head attention over all positions, resnet."""

    def __init__(self, c, cfg):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, None, cfg.groups, eps=1e-6) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(c, c, 1, bias=True, groups=cfg.groups)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        up = cfg.channels[::-1]
        self.conv_in = nn.Conv2d(4, up[0], 3, padding=1)
        self.mid_block = VaeMidBlock(up[0], cfg)
        self.up_blocks = nn.ModuleList([UpDecoderBlock2D(up[max(i - 1, 0)], c, cfg, upsample=i < len(up) - 1) for i, c in enumerate(up)])
        self.conv_norm_out, self.conv_act = nn.GroupNorm(cfg.groups, up[-1], eps=1e-6), nn.SiLU()
        self.conv_out = nn.Conv2d(up[-1], 3, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class VaeDecoder(nn.Module):
    """vae.decode(latent_sample): post_quant_conv, then the decoder; takes latents / 0.13025, returns about [-1,1]."""

    def __init__(self, cfg=VaeConfig()):
        super().__init__()
        self.post_quant_conv = nn.Conv2d(4, 4, 1)
        self.decoder = Decoder(cfg)

    def forward(self, latent_sample):
        return {"sample": self.decoder(self.post_quant_conv(latent_sample))}


# --- the text encoders (transformers' CLIPTextModel and CLIPTextModelWithProjection) ---


@dataclass
class TextConfig:
    hidden: int
    layers: int
    heads: int
    activation: str  # quick_gelu (CLIP ViT-L, text_encoder) or gelu (OpenCLIP bigG, text_encoder_2)
    vocab: int
    projection: int = 0  # text_encoder_2's text_projection; 0: none
    positions: int = 77


class CLIPAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim, self.scale = heads, dim // heads, (dim // heads) ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, causal_mask):
        b, n, d = x.shape
        shape = lambda t: t.view(b, -1, self.heads, self.head_dim).transpose(1, 2).contiguous().view(b * self.heads, -1, self.head_dim)
        q, k, v = shape(self.q_proj(x) * self.scale), shape(self.k_proj(x)), shape(self.v_proj(x))
        weights = torch.bmm(q, k.transpose(1, 2))
        weights = (weights.view(b, self.heads, n, n) + causal_mask).view(b * self.heads, n, n)
        out = torch.bmm(weights.softmax(dim=-1), v)
        return self.out_proj(out.view(b, self.heads, n, self.head_dim).transpose(1, 2).reshape(b, n, d))


class CLIPMLP(nn.Module):
    def __init__(self, dim, activation):
        super().__init__()
        self.activation = activation
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.activation == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = CLIPAttention(cfg.hidden, cfg.heads)
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(cfg.hidden), nn.LayerNorm(cfg.hidden)
        self.mlp = CLIPMLP(cfg.hidden, cfg.activation)

    def forward(self, x, causal_mask):
        x = x + self.self_attn(self.layer_norm1(x), causal_mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg) for _ in range(cfg.layers)])


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab, cfg.hidden)
        self.position_embedding = nn.Embedding(cfg.positions, cfg.hidden)
        self.register_buffer("position_ids", torch.arange(cfg.positions).expand((1, -1)))

    def forward(self, input_ids):
        positions = self.position_ids[:, : input_ids.shape[-1]]
        return self.token_embedding(input_ids) + self.position_embedding(positions)


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings, self.encoder, self.final_layer_norm = CLIPTextEmbeddings(cfg), CLIPEncoder(cfg), nn.LayerNorm(cfg.hidden)

    def forward(self, input_ids):
        b, n = input_ids.shape
        h = self.embeddings(input_ids)
        mask = torch.full((n, n), torch.finfo(h.dtype).min).triu(1)[None, None].expand(b, 1, n, n)
        hidden_states = [h]
        for layer in self.encoder.layers:
            h = layer(h, mask)
            hidden_states.append(h)
        last = self.final_layer_norm(h)
        # the end token has the largest id: pooled = last_hidden_state[b, argmax(input_ids[b])]
        pooled = last[torch.arange(b), input_ids.to(dtype=torch.int).argmax(dim=-1)]
        return last, pooled, hidden_states


class TextEncoder(nn.Module):
    """optimum's outputs: text_encoder last_hidden_state, pooler_output, hidden_states.0…L; text_encoder_2 (with a
    projection) text_embeds, last_hidden_state, hidden_states.0…L."""

    def __init__(self, cfg):
        super().__init__()
        self.text_model = CLIPTextTransformer(cfg)
        if cfg.projection:
            self.text_projection = nn.Linear(cfg.hidden, cfg.projection, bias=False)

    def output_names(self):
        layers = len(self.text_model.encoder.layers)
        first = ["text_embeds", "last_hidden_state"] if hasattr(self, "text_projection") else ["last_hidden_state", "pooler_output"]
        return first + [f"hidden_states.{i}" for i in range(layers + 1)]

    def forward(self, input_ids):
        last, pooled, hidden_states = self.text_model(input_ids)
        first = [self.text_projection(pooled), last] if hasattr(self, "text_projection") else [last, pooled]
        return dict(zip(self.output_names(), first + hidden_states))
