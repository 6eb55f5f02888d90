"""Export the SDXL UNet with latent-consistency/lcm-lora-sdxl fused into its weights (OUT/lcm_unet).

    pip install "optimum[onnxruntime]" diffusers transformers torch peft
    python lcm_unet.py MODELS        # writes MODELS/lcm_unet/model.onnx (+ model.onnx_data, ~10 GB)

Not needed if you put the LoRA file itself in MODELS/lcm_lora/pytorch_lora_weights.safetensors: lookahead
then adds it to MODELS/unet as low-rank branches at load time (no second 10 GB export). This is the fused
alternative, as LCM-Lookahead builds its LCM UNet: load_lora_weights, fuse_lora (scale 1), then drop the
adapters so only the fused weights are exported. Same I/O as the base UNet. Not run by this project's tests.
"""
import os
import shutil
import sys
import tempfile

import torch
from diffusers import StableDiffusionXLPipeline
from optimum.exporters.onnx import main_export

if len(sys.argv) != 2:
    sys.exit(__doc__)
models = sys.argv[1]
pipe = StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0", torch_dtype=torch.float32)
pipe.load_lora_weights("latent-consistency/lcm-lora-sdxl")
pipe.fuse_lora(lora_scale=1.0)
pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
with tempfile.TemporaryDirectory() as work:
    pipe.save_pretrained(os.path.join(work, "fused"))
    main_export(os.path.join(work, "fused"), output=os.path.join(work, "onnx"), task="auto")
    shutil.copytree(os.path.join(work, "onnx", "unet"), os.path.join(models, "lcm_unet"))
