"""Real-size denoiser steps, VAE calls and text encodings on one CUDA GPU, to size a GPU deployment.

The CPU benchmarks run tiny models; this times the real FLUX.1 transformer, SDXL UNet, both VAEs
(decoder and encoder) and the text encoders (CLIP-L, OpenCLIP bigG, T5-XXL) at full size with random
weights (a call's time depends on shapes, not values, so no checkpoint is downloaded), in bf16 with
torch's kernels and scaled-dot-product attention, two ways: eager (what a plain PyTorch server gets,
Python launching every kernel) and replayed as one CUDA graph (the GPU's own time, which a server
without per-kernel launch cost, such as a TensorRT plan in Triton, starts from; TensorRT's fused
kernels then go below it).

    python benchmarks/gpu_reference.py --out gpu_reference.json

Needs torch with CUDA, diffusers and transformers only (it imports nothing else of this project), so
it can be copied onto any GPU host.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

DTYPE = torch.bfloat16
VAE_FACTOR = 8  # pixels per latent cell in both families' VAEs
FLUX_T5_TOKENS = 256  # FLUX.1-schnell's max_sequence_length (dev: 512)
SDXL_TEXT_TOKENS = 77
SDXL_TIME_IDS = 6  # original size, crop top-left, target size
# diffusers' FluxTransformer2DModel defaults are FLUX.1's sizes; FLUX.1-schnell has no guidance input.
FLUX_TRANSFORMER: dict[str, Any] = {"guidance_embeds": False}
# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,  # both CLIP encoders' hidden states side by side
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
VAE_DECODER: dict[str, Any] = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
}
# openai/clip-vit-large-patch14's text model: FLUX's and SDXL's text_encoder.
CLIP_L = CLIPTextConfig(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# stabilityai/stable-diffusion-xl-base-1.0, text_encoder_2/config.json (OpenCLIP ViT-bigG-14).
CLIP_BIGG = CLIPTextConfig(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)
# black-forest-labs/FLUX.1-schnell, text_encoder_2/config.json (google/t5-v1_1-xxl's encoder).
T5_XXL = T5Config(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
)
FLUX_DEV_T5_TOKENS = 512
FLUX_VAE: dict[str, Any] = {**VAE_DECODER, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}
SDXL_VAE: dict[str, Any] = {**VAE_DECODER, "latent_channels": 4}


@dataclass(frozen=True)
class Timing:
    model: str
    batch: int
    side: int
    eager_p50_ms: float
    eager_min_ms: float
    graph_p50_ms: float | None
    """None where the call could not be captured as a CUDA graph."""
    graph_per_sample_ms: float | None
    peak_gib: float
    """Most GPU memory allocated during the calls, weights included."""


@contextmanager
def on_gpu_in_bf16() -> Iterator[None]:
    """Weights and inputs created where and as they are used: FLUX's 12B parameters in fp32 (48 GB)
    would not fit an 80 GB card beside their bf16 copy, and initialising them on a CPU takes minutes."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)
    try:
        with torch.device("cuda"):
            yield
    finally:
        torch.set_default_dtype(previous)


def flux_step(model: FluxTransformer2DModel, batch: int, side: int) -> Callable[[], Any]:
    """One transformer call as FluxPipeline makes it: 2x2-packed latents, T5 and CLIP embeddings."""
    cells = (side // VAE_FACTOR // 2) ** 2
    config = model.config
    inputs = {
        "hidden_states": torch.randn(batch, cells, config.in_channels),
        "encoder_hidden_states": torch.randn(batch, FLUX_T5_TOKENS, config.joint_attention_dim),
        "pooled_projections": torch.randn(batch, config.pooled_projection_dim),
        "timestep": torch.full((batch,), 0.5),
        "img_ids": torch.zeros(cells, 3),
        "txt_ids": torch.zeros(FLUX_T5_TOKENS, 3),
        "return_dict": False,
    }
    return lambda: model(**inputs)


def sdxl_step(model: UNet2DConditionModel, batch: int, side: int) -> Callable[[], Any]:
    """One UNet call; an SDXL image with classifier-free guidance is a batch of two per step."""
    latent_side = side // VAE_FACTOR
    config = model.config
    pooled_width = config.projection_class_embeddings_input_dim - SDXL_TIME_IDS * config.addition_time_embed_dim
    inputs = {
        "sample": torch.randn(batch, config.in_channels, latent_side, latent_side),
        "timestep": torch.full((batch,), 500.0),
        "encoder_hidden_states": torch.randn(batch, SDXL_TEXT_TOKENS, config.cross_attention_dim),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(batch, pooled_width),
            "time_ids": torch.full((batch, SDXL_TIME_IDS), float(side)),
        },
        "return_dict": False,
    }
    return lambda: model(**inputs)


def vae_decode(model: AutoencoderKL, batch: int, side: int) -> Callable[[], Any]:
    latent_side = side // VAE_FACTOR
    latents = torch.randn(batch, model.config.latent_channels, latent_side, latent_side)
    return lambda: model.decode(latents, return_dict=False)


def vae_encode(model: AutoencoderKL, batch: int, side: int) -> Callable[[], Any]:
    """img2img's and Kontext's input image to latents."""
    pixels = torch.randn(batch, 3, side, side)
    return lambda: model.encode(pixels, return_dict=False)


def encode_text(tokens: int, vocabulary: int) -> Callable[[torch.nn.Module, int, int], Callable[[], Any]]:
    """A text encoder's call on `tokens` random token ids a prompt (the image side plays no part)."""

    def call_for(model: torch.nn.Module, batch: int, side: int) -> Callable[[], Any]:
        ids = torch.randint(0, vocabulary, (batch, tokens))
        return lambda: model(input_ids=ids, output_hidden_states=True)

    return call_for


def cuda_timer() -> torch.cuda.Event:
    """An event that records a time (torch leaves `Event.__new__` unannotated)."""
    return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]


def time_calls(call: Callable[[], Any], repeats: int) -> list[float]:
    """Milliseconds of each call by CUDA events."""
    times = []
    for _ in range(repeats):
        start, end = cuda_timer(), cuda_timer()
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def as_graph(call: Callable[[], Any]) -> Callable[[], Any] | None:
    """The call captured once and replayed: one launch instead of thousands of Python ones."""
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            call()
    except RuntimeError as error:
        print(f"  (no CUDA graph: {str(error).splitlines()[0]})")
        return None
    return graph.replay


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[Any, int, int], Callable[[], Any]]]] = {
    "flux.1-schnell transformer": (lambda: FluxTransformer2DModel(**FLUX_TRANSFORMER), flux_step),
    "sdxl unet": (lambda: UNet2DConditionModel(**SDXL_UNET), sdxl_step),
    "flux vae decoder": (lambda: AutoencoderKL(**FLUX_VAE), vae_decode),
    "sdxl vae decoder": (lambda: AutoencoderKL(**SDXL_VAE), vae_decode),
    "flux vae encoder": (lambda: AutoencoderKL(**FLUX_VAE), vae_encode),
    "sdxl vae encoder": (lambda: AutoencoderKL(**SDXL_VAE), vae_encode),
    "clip-l text encoder": (lambda: CLIPTextModel(CLIP_L), encode_text(SDXL_TEXT_TOKENS, CLIP_L.vocab_size)),
    "openclip-bigg text encoder": (
        lambda: CLIPTextModelWithProjection(CLIP_BIGG),
        encode_text(SDXL_TEXT_TOKENS, CLIP_L.vocab_size),
    ),
    "t5-xxl encoder (schnell, 256 tokens)": (
        lambda: T5EncoderModel(T5_XXL),
        encode_text(FLUX_T5_TOKENS, T5_XXL.vocab_size),
    ),
    "t5-xxl encoder (dev, 512 tokens)": (
        lambda: T5EncoderModel(T5_XXL),
        encode_text(FLUX_DEV_T5_TOKENS, T5_XXL.vocab_size),
    ),
}


def measure(batches: list[int], side: int, warmup: int, repeats: int) -> Iterator[Timing]:
    for name, (build, call_for) in MODELS.items():
        with on_gpu_in_bf16(), torch.inference_mode():
            model = build().eval()
            for batch in batches:
                torch.cuda.reset_peak_memory_stats()
                call = call_for(model, batch, side)
                for _ in range(warmup):  # cuDNN's algorithm search, allocator growth
                    call()
                eager = time_calls(call, repeats)
                replay = as_graph(call)
                graph = statistics.median(time_calls(replay, repeats)) if replay else None
                yield Timing(
                    model=name,
                    batch=batch,
                    side=side,
                    eager_p50_ms=round(statistics.median(eager), 1),
                    eager_min_ms=round(min(eager), 1),
                    graph_p50_ms=None if graph is None else round(graph, 1),
                    graph_per_sample_ms=None if graph is None else round(graph / batch, 1),
                    peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1),
                )
                del call, replay
        del model
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8", help="comma-separated batch sizes")
    parser.add_argument("--side", type=int, default=1024, help="image width and height in pixels")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this reference is for GPU hosts")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}, diffusers {diffusers.__version__}, bf16, {args.side}x{args.side}")
    columns = ("batch", "eager p50", "eager min", "graph p50", "graph/sample", "peak GiB")
    print(f"{'model':<28}" + "".join(f"{column:>13}" for column in columns))
    timings = []
    for timing in measure([int(b) for b in args.batches.split(",")], args.side, args.warmup, args.repeats):
        timings.append(timing)
        graph = "-" if timing.graph_p50_ms is None else f"{timing.graph_p50_ms:.1f}"
        per_sample = "-" if timing.graph_per_sample_ms is None else f"{timing.graph_per_sample_ms:.1f}"
        print(
            f"{timing.model:<28}{timing.batch:>13}{timing.eager_p50_ms:>13.1f}{timing.eager_min_ms:>13.1f}"
            f"{graph:>13}{per_sample:>13}{timing.peak_gib:>13.1f}",
            flush=True,
        )
    if args.out:
        environment = {"device": device, "torch": torch.__version__, "diffusers": diffusers.__version__}
        args.out.write_text(json.dumps({**environment, "timings": [asdict(t) for t in timings]}, indent=2))


if __name__ == "__main__":
    main()
