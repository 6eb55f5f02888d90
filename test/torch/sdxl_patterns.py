# A small UNet and VAE decoder written the way diffusers writes SDXL's, exported the way optimum 1.23 exports them,
# for tests of what torch's exporter emits: `timesteps.expand(sample.shape[0])` (Expand of a Where), the shape
# arithmetic around every reshape, attention as AttnProcessor computes it under torch < 2.1 (baddbmm on an empty
# tensor with beta=0, then a float→float Cast), GEGLU's chunk, nearest upsampling, and weights held by Constant
# nodes in external data (onnx.save with convert_attribute). Usage: python3 sdxl_patterns.py OUT OPSET THRESHOLD
import math, os, sys
import onnx, torch, torch.nn as nn, torch.nn.functional as F

C, CONTEXT, HEADS = 32, 16, 2
torch.manual_seed(0)


def timestep_embedding(t, dim):
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)  # flip_sin_to_cos


class Attention(nn.Module):
    def __init__(self, context):
        super().__init__()
        self.to_q, self.to_k, self.to_v = nn.Linear(C, C, bias=False), nn.Linear(context, C, bias=False), nn.Linear(context, C, bias=False)
        self.to_out = nn.Linear(C, C)

    def heads(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, HEADS, c // HEADS).permute(0, 2, 1, 3).reshape(b * HEADS, n, c // HEADS)

    def forward(self, x, context):
        b, n, c = x.shape
        q, k, v = self.heads(self.to_q(x)), self.heads(self.to_k(context)), self.heads(self.to_v(context))
        empty = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device)
        scores = torch.baddbmm(empty, q, k.transpose(-1, -2), beta=0, alpha=(c // HEADS) ** -0.5)
        probs = scores.softmax(dim=-1).to(q.dtype)
        out = torch.bmm(probs, v).reshape(b, HEADS, n, c // HEADS).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.to_out(out)


class Block(nn.Module):
    """A resnet with the time embedding added, then a transformer block with linear proj_in/out."""
    def __init__(self):
        super().__init__()
        self.norm, self.conv, self.time_emb_proj = nn.GroupNorm(8, C), nn.Conv2d(C, C, 3, padding=1), nn.Linear(4 * C, C)
        self.proj_in, self.norm1 = nn.Linear(C, C), nn.LayerNorm(C)
        self.attn1, self.attn2 = Attention(C), Attention(CONTEXT)
        self.ff_in, self.ff_out, self.proj_out = nn.Linear(C, 4 * C), nn.Linear(2 * C, C), nn.Linear(C, C)

    def forward(self, h, temb, context):
        h = h + self.conv(F.silu(self.norm(h))) + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        b, c, height, width = h.shape
        x = self.proj_in(h.permute(0, 2, 3, 1).reshape(b, height * width, c))
        x = self.attn1(self.norm1(x), self.norm1(x)) + x
        x = self.attn2(x, context) + x
        a, gate = self.ff_in(x).chunk(2, dim=-1)
        x = self.ff_out(a * F.gelu(gate)) + x
        return self.proj_out(x).reshape(b, height, width, c).permute(0, 3, 1, 2) + h


class Unet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in, self.linear_1, self.linear_2 = nn.Conv2d(4, C, 3, padding=1), nn.Linear(C, 4 * C), nn.Linear(4 * C, 4 * C)
        self.add_embedding = nn.Linear(12 + 6 * 8, 4 * C)
        self.down, self.downsample, self.mid = Block(), nn.Conv2d(C, C, 3, stride=2, padding=1), Block()
        self.upsample, self.conv_out = nn.Conv2d(C, C, 3, padding=1), nn.Conv2d(C, 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        timesteps = timestep.expand(sample.shape[0])
        temb = self.linear_2(F.silu(self.linear_1(timestep_embedding(timesteps, C))))
        time_embeds = timestep_embedding(time_ids.flatten(), 8).reshape(text_embeds.shape[0], -1)
        temb = temb + self.add_embedding(torch.cat([text_embeds, time_embeds], dim=-1))
        skip = self.down(self.conv_in(sample), temb, encoder_hidden_states)
        h = self.mid(self.downsample(skip), temb, encoder_hidden_states)
        h = self.upsample(F.interpolate(h, scale_factor=2.0, mode='nearest')) + skip
        return self.conv_out(F.silu(h))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in, self.norm, self.conv_out = nn.Conv2d(4, C, 3, padding=1), nn.GroupNorm(8, C), nn.Conv2d(C, 3, 3, padding=1)

    def forward(self, latent_sample):
        h = self.conv_in(latent_sample)
        for _ in range(3):
            h = F.interpolate(h, scale_factor=2.0, mode='nearest')
        return self.conv_out(F.silu(self.norm(h)))


out, opset, threshold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batch = {0: 'batch_size'}
image = {0: 'batch_size', 2: 'height', 3: 'width'}
models = [
    ('unet', Unet(), (torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 7, CONTEXT), torch.randn(1, 12), torch.randn(1, 6)),
     ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids'], ['out_sample'],
     {'sample': image, 'timestep': {0: 'steps'}, 'encoder_hidden_states': {0: 'batch_size', 1: 'sequence_length'}, 'text_embeds': batch, 'time_ids': batch, 'out_sample': image}),
    ('vae_decoder', Decoder(), (torch.randn(1, 4, 8, 8),), ['latent_sample'], ['sample'], {'latent_sample': image, 'sample': image}),
]
for name, net, args, inputs, outputs, axes in models:
    os.makedirs(os.path.join(out, name), exist_ok=True)
    path = os.path.join(out, name, 'model.onnx')
    torch.onnx.export(net.eval(), args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    model = onnx.load(path)
    # some weights as Constant nodes, as exports hold them: the UNet's time MLP, every other tensor of the decoder
    moved = [t for i, t in enumerate(model.graph.initializer) if (name == 'unet' and t.name.startswith('linear_')) or (name == 'vae_decoder' and i % 2 == 0)]
    for t in moved:
        model.graph.initializer.remove(t)
        model.graph.node.insert(0, onnx.helper.make_node('Constant', [], [t.name], value=t))
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location='model.onnx_data', size_threshold=threshold, convert_attribute=True)
