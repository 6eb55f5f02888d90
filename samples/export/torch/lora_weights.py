"""Random LoRA weights for a torch UNet in the spellings LoRA files use, and the fused-weight reference (W + s·α/r·up·down
in each adapted weight). Dev and test tooling: no package beyond torch is needed (safetensors written by hand)."""
import copy
import json
import struct

import torch
from torch import nn

# diffusers' train_lcm_distill_lora_sdxl target modules (what latent-consistency/lcm-lora-sdxl adapts)
LCM_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
                    "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def lora_layers(unet, targets=LCM_LORA_TARGETS, rank=4, alpha=2.0, std=0.3):
    """A random LoRA (down, up, alpha) per adapted layer, rounded to float16 as lcm-lora-sdxl stores it."""
    layers = {}
    for name, module in unet.named_modules():
        if not name.endswith(targets) or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        w = module.weight
        down = torch.randn(rank, *w.shape[1:]) * std  # [r, in] or [r, in, k, k]
        up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else [])) * std
        layers[name] = (down.half().float(), up.half().float(), alpha)
    return layers


def fused(unet, layers, scale):
    """A copy of `unet` with W + scale·α/r·up·down in each adapted weight."""
    result = copy.deepcopy(unet)
    modules = dict(result.named_modules())
    with torch.no_grad():
        for name, (down, up, alpha) in layers.items():
            w = modules[name].weight
            delta = up.flatten(1) @ down.flatten(1)  # [out, in·k·k]
            w += scale * alpha / down.shape[0] * delta.reshape(w.shape)
    return result


def write_safetensors(path, tensors):
    """The safetensors format (8-byte header length, JSON header, raw data); tensors: name → (dtype, tensor)."""
    header, chunks, offset = {}, [], 0
    for name, (dtype, t) in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def kohya_tensors(layers):
    """kohya's spelling in float16 with alpha, as lcm-lora-sdxl ships it."""
    tensors = {}
    for name, (down, up, alpha) in layers.items():
        flat = "lora_unet_" + name.replace(".", "_")
        tensors[f"{flat}.lora_down.weight"] = ("F16", down.half())
        tensors[f"{flat}.lora_up.weight"] = ("F16", up.half())
        tensors[f"{flat}.alpha"] = ("F16", torch.tensor(alpha).half())
    return tensors
