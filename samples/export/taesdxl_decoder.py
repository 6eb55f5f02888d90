"""Export the TAESDXL decoder (madebyollin/taesdxl, diffusers AutoencoderTiny) to ONNX.

    pip install diffusers torch onnx
    python taesdxl_decoder.py MODELS/taesdxl_decoder/model.onnx

Input `latent_sample` [B,4,h,w]: the UNet-space latents as they are (TAESD's scale factor is 1; do not divide
by 0.13025). Output `sample` [B,3,8h,8w] in [-1,1]: diffusers' DecoderTiny ends with x·2 − 1 (madebyollin's
raw taesd.py Decoder would give [0,1]; lookahead detects which and normalises). Ops: Conv, Relu, Tanh, Mul,
Div, Sub, Resize (nearest): all differentiable by lookahead's autodiff. Not run by this project's tests.
"""
import os
import sys

import torch
from diffusers import AutoencoderTiny

if len(sys.argv) != 2:
    sys.exit(__doc__)
out = sys.argv[1]
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
decoder = AutoencoderTiny.from_pretrained("madebyollin/taesdxl", torch_dtype=torch.float32).decoder.eval()
latents = torch.randn(1, 4, 128, 128)
torch.onnx.export(
    decoder,
    (latents,),
    out,
    input_names=["latent_sample"],
    output_names=["sample"],
    dynamic_axes={"latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"}, "sample": {0: "batch_size", 2: "height", 3: "width"}},
    opset_version=17,
)
