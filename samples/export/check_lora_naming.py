"""Dev check of src/diffusion/lora.ts against a real torch.onnx export (no weights, no diffusers needed).

    python3 samples/export/check_lora_naming.py OUT [--opset 14|17]  # torch >= 1.13: OUT/unet, OUT/lora-*.safetensors, OUT/expected.json
    npx tsx samples/export/check_lora_naming.ts OUT                   # applies each LoRA with lora.ts, runs onnxruntime, compares

A tiny UNet (torch/sdxl_modules.py) whose attribute names follow diffusers' UNet2DConditionModel for SDXL (DownBlock2D, 2 CrossAttn down
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
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch"))
from lora_weights import LCM_LORA_TARGETS, fused, kohya_tensors, lora_layers, write_safetensors  # noqa: E402
from sdxl_modules import UNet, UNetConfig  # noqa: E402

SCALES = [1.0, 0.6]  # lora_scale values compared
# SDXL's UNet2DConditionModel layout at small widths: channels (8, 16, 32), transformer depths (0, 1, 2)
CONFIG = UNetConfig(channels=(8, 16, 32), layers_per_block_attention=(1, 1, 2), head_dim=8, groups=4, context_dim=12,
                    pooled_dim=8, addition_time_embed_dim=4)
# LCM-LoRA's target modules, plus those other SDXL LoRAs adapt
ADAPTED = LCM_LORA_TARGETS + ("conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2", "add_embedding.linear_1", "add_embedding.linear_2")


# torch.onnx (>= 1.13, eval mode) keeps one initializer per set of equal tensors and reads the others through Identity
# nodes (_jit_pass_onnx_deduplicate_initializers). Trained weights are never equal; these pairs are, so that the
# check sees that pattern once per layer kind (MatMul, Gemm, Conv).
TIED = [
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"),
    ("down_blocks.0.resnets.0.time_emb_proj", "down_blocks.0.resnets.1.time_emb_proj"),
    ("up_blocks.2.resnets.1.conv2", "up_blocks.2.resnets.2.conv2"),
]


def write_loras(out, layers):
    kohya, diffusers, peft = kohya_tensors(layers), {}, {}
    for name, (down, up, alpha) in layers.items():
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
    unet = UNet(CONFIG).eval()
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
        layers = lora_layers(unet, ADAPTED)
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
