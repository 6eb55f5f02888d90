"""Export SDXL base to ONNX with optimum: the models folder `lookahead` reads.

    pip install "optimum[onnxruntime]" diffusers transformers torch
    python sdxl_optimum.py OUT

Same as `optimum-cli export onnx --model stabilityai/stable-diffusion-xl-base-1.0 OUT`. Writes OUT/unet
(model.onnx + model.onnx_data, ~10 GB fp32), text_encoder, text_encoder_2, vae_encoder, vae_decoder,
tokenizer, tokenizer_2, scheduler and model_index.json. Keep the export in fp32 (no --fp16): SDXL's VAE
overflows in fp16. Older optimum (<= 1.23) writes an int64 [B] timestep and opset 14, newer a float32 scalar
and opset 18; lookahead reads either. Not run by this project's tests (no weights here).
"""
import sys

from optimum.exporters.onnx import main_export

if len(sys.argv) != 2:
    sys.exit(__doc__)
main_export("stabilityai/stable-diffusion-xl-base-1.0", output=sys.argv[1], task="auto")
