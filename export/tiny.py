"""Tiny, randomly initialised checkpoints with the real diffusers folder layout.

They let the export and serving paths be exercised end to end (tests, CI, CPU-only
machines) without downloading gigabytes of weights: every component has the real
class and wiring, only the sizes are shrunk. Everything is built offline and is
reproducible from a seed.
"""

import functools
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from export.spiece import save_spiece_model

logger = logging.getLogger(__name__)

# Fixed corpus the tokenizer vocabularies are derived from: prompt-like words so that
# typical test prompts split into a few whole-word tokens instead of single bytes.
CORPUS = (
    "a photo of a red fox sitting in the snow at sunset, a cat and a dog on the grass, "
    "an astronaut riding a horse on the moon, portrait of an old man with a beard, "
    "a bowl of fruit on a wooden table, a city street at night in the rain, "
    "a castle on a hill under a blue sky with white clouds, oil painting of a sailing ship, "
    "high quality, detailed, realistic, digital art, watercolor, black and white"
)
CLIP_NUM_MERGES = 256
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_BANG = "!"  # SDXL's tokenizer_2 pads with it (id 0 in OpenCLIP's vocabulary, as in ours)
CLIP_MAX_LENGTH = 77
# GPT-2's byte-to-unicode table, which CLIP's vocabulary starts with (unannotated in transformers).
CLIP_BYTE_SYMBOLS: dict[int, str] = bytes_to_unicode()  # type: ignore[no-untyped-call]
T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
T5_MAX_LENGTH = 512
T5_SPACE = "\u2581"
T5_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/"
# Unigram log-probabilities: whole words must beat spelling them out char by char.
T5_CHAR_SCORE, T5_WORD_SCORE = -10.0, -5.0
T5_FILLER_SCORE = -8.0
T5_PIECES = 32000  # google/t5-v1_1-xxl's spiece.model
T5_EXTRA_IDS = 100  # the sentinels after them: 32,100 tokens (the model's 32,128 rows round it up)

TEXT_HIDDEN = 32
TEXT_LAYERS = 2
TEXT_HEADS = 2
TEXT_INTERMEDIATE = 37
T5_D_KV = 16
FLUX_HEAD_DIM = 16
FLUX_HEADS = 2
FLUX_ROPE_AXES = (4, 4, 8)  # must sum to FLUX_HEAD_DIM
FLUX_PACKED_CHANNELS = 64  # 16 latent channels packed 2x2
# The `bench` preset's transformer: twice the tiny one's width, so its steps, not the server around
# them, dominate a 1024x1024 request. Not deeper: attention over the 4,352 tokens of 1024x1024 is most
# of a step on a CPU (the tiny transformer already takes ~130 ms there), and each block adds its cost.
BENCH_FLUX_HEAD_DIM = 32
BENCH_FLUX_ROPE_AXES = (8, 12, 12)  # must sum to BENCH_FLUX_HEAD_DIM
VAE_BLOCK_CHANNELS = (8, 8, 16, 16)  # four blocks keep the real 8x downsampling
VAE_NORM_GROUPS = 4
# The real VAE latent statistics, so latent normalisation code paths see real values.
FLUX_VAE_LATENT_CHANNELS = 16
FLUX_VAE_SCALING_FACTOR = 0.3611
FLUX_VAE_SHIFT_FACTOR = 0.1159
SDXL_VAE_LATENT_CHANNELS = 4
SDXL_VAE_SCALING_FACTOR = 0.13025
SDXL_UNET_CHANNELS = (32, 64)  # a plain down block, then one with cross attention, as SDXL's first two
SDXL_UNET_HEADS = 1  # one head of 64 channels: SDXL's head width
SDXL_UNET_NORM_GROUPS = 8
SDXL_TIME_EMBED_DIM = 8  # addition_time_embed_dim (256 in SDXL)
SDXL_TIME_IDS = 6  # original size, crop top-left, target size: (h, w) each


def corpus_words() -> list[str]:
    """Words as CLIP's pre-tokenizer sees them: lowercase runs of letters."""
    return "".join(c if c.isalpha() else " " for c in CORPUS.lower()).split()


def learn_bpe_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Classic BPE; ties broken lexicographically so the merges never depend on hashing."""
    symbols: Counter[tuple[str, ...]] = Counter()
    for word in words:
        chars = [CLIP_BYTE_SYMBOLS[b] for b in word.encode("utf-8")]
        symbols[tuple(chars[:-1]) + (chars[-1] + "</w>",)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbol_seq, count in symbols.items():
            for pair in itertools.pairwise(symbol_seq):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        symbols = Counter({merge_pair(seq, best): count for seq, count in symbols.items()})
    return merges


def merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every occurrence of `pair` in `word`, left to right, by its concatenation."""
    merged: list[str] = []
    i = 0
    while i < len(word):
        if word[i : i + 2] == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def build_clip_tokenizer(pad_token: str = CLIP_EOS, merges: list[tuple[str, str]] | None = None) -> CLIPTokenizer:
    """Vocabulary laid out like OpenAI CLIP's: bytes, bytes + `</w>`, merges, then specials; `merges`:
    CLIP's real ones (export/clip_merges.py), else a few learnt from CORPUS."""
    byte_symbols = list(CLIP_BYTE_SYMBOLS.values())
    merges = merges if merges is not None else learn_bpe_merges(corpus_words(), CLIP_NUM_MERGES)
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + [a + b for a, b in merges]
    tokens = list(dict.fromkeys(tokens)) + [CLIP_BOS, CLIP_EOS]  # two merges can spell one token
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(tokens)},
        merges=merges,  # type: ignore[arg-type]  # tuples: tokenizers' BPE refuses the "a b" strings typed here
        model_max_length=CLIP_MAX_LENGTH,
        pad_token=pad_token,
    )


def build_t5_tokenizer(real_size: bool = False) -> PreTrainedTokenizerFast:
    """SentencePiece-style Unigram with T5's special ids (`<pad>`=0, `</s>`=1, `<unk>`=2). `real_size`:
    T5's published layout, 32,000 pieces then `<extra_id_99>` ... `<extra_id_0>` (ids 32,000-32,099),
    the pieces past the corpus' words being synthetic letter pairs and triples (no SentencePiece model
    of T5's can be downloaded here): the vocabulary's size and ids, not its merges, are T5's."""
    words = sorted(set(corpus_words()))
    pieces = [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0), (T5_SPACE, T5_CHAR_SCORE)]
    pieces += [(c, T5_CHAR_SCORE) for c in T5_CHARS]
    pieces += [(T5_SPACE + w, T5_WORD_SCORE) for w in words]
    if real_size:
        known = {piece for piece, _ in pieces}
        letters = "abcdefghijklmnopqrstuvwxyz"
        fillers = ("".join(combo) for n in (2, 3) for combo in itertools.product(letters, repeat=n))
        fresh = (piece for text in fillers for piece in (T5_SPACE + text, text) if piece not in known)
        pieces += [(piece, T5_FILLER_SCORE) for piece in itertools.islice(fresh, T5_PIECES - len(pieces))]
        extra_ids = [f"<extra_id_{n}>" for n in reversed(range(T5_EXTRA_IDS))]
        pieces += [(token, 0.0) for token in extra_ids]
        # transformers' T5Tokenizer lays out the same pipeline as below, and is the published folders'
        # class: it loads from a spiece.model alone (export/spiece.py writes one beside it).
        return T5Tokenizer(
            vocab=pieces, extra_ids=T5_EXTRA_IDS, additional_special_tokens=extra_ids, model_max_length=T5_MAX_LENGTH
        )
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=T5_SPACE, prepend_scheme="always", split=True),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=T5_SPACE, prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", T5_EOS], pair=["$A", T5_EOS, "$B", T5_EOS], special_tokens=[(T5_EOS, 1)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # its __init__ is unannotated
        tokenizer_object=tokenizer,
        pad_token=T5_PAD,
        eos_token=T5_EOS,
        unk_token=T5_UNK,
        model_max_length=T5_MAX_LENGTH,
    )


def clip_text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """The pooled output is read at `eos_token_id`, so the ids must come from the tokenizer."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=TEXT_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_clip_text_encoder(tokenizer: CLIPTokenizer, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(clip_text_config(tokenizer))


def build_t5_encoder(tokenizer: PreTrainedTokenizerFast, seed: int) -> T5EncoderModel:
    """T5 v1.1 flavour (gated GELU), as used by FLUX's T5-XXL."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_HIDDEN,
        d_kv=T5_D_KV,
        d_ff=TEXT_INTERMEDIATE,
        num_layers=TEXT_LAYERS,
        num_heads=TEXT_HEADS,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config)


def build_flux_transformer(seed: int, guidance_embeds: bool, bench: bool = False) -> FluxTransformer2DModel:
    """Text widths match the tiny encoders: T5 hidden states and CLIP's pooled output."""
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=FLUX_PACKED_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=BENCH_FLUX_HEAD_DIM if bench else FLUX_HEAD_DIM,
        num_attention_heads=FLUX_HEADS,
        joint_attention_dim=TEXT_HIDDEN,
        pooled_projection_dim=TEXT_HIDDEN,
        axes_dims_rope=BENCH_FLUX_ROPE_AXES if bench else FLUX_ROPE_AXES,
        guidance_embeds=guidance_embeds,
    )


def build_vae(
    seed: int, latent_channels: int, quant_convs: bool, scaling_factor: float, shift_factor: float | None = None
) -> AutoencoderKL:
    """Four blocks of few channels, so the real 8x downsampling.

    The mid-block self-attention is left out: at 1024x1024 it attends over 16,384 latent pixels,
    which ONNX Runtime on a CPU computes as a full 16k x 16k matrix (4 s of a 5 s request here),
    while every other part of the architecture stays as real checkpoints have it.
    """
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_BLOCK_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_BLOCK_CHANNELS),
        block_out_channels=VAE_BLOCK_CHANNELS,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=VAE_NORM_GROUPS,
        use_quant_conv=quant_convs,
        use_post_quant_conv=quant_convs,
        mid_block_add_attention=False,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
    )


def flux_scheduler(dev: bool) -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1's scheduler configs: dev shifts its schedule with the image size, schnell does not."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0 if dev else 1.0,
        use_dynamic_shifting=dev,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def sdxl_scheduler() -> EulerDiscreteScheduler:
    """SDXL base's scheduler config."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_flux(seed: int, dev: bool, bench: bool = False) -> FluxPipeline:
    """FLUX.1-schnell is timestep-distilled: no guidance embedding and no timestep shift. FLUX.1-dev
    embeds the guidance scale and shifts its schedule with the image size (its scheduler config).
    `bench`: the benchmark preset's larger transformer; every other component is the tiny one."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_t5_tokenizer()
    return FluxPipeline(
        scheduler=flux_scheduler(dev),
        text_encoder=build_clip_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        text_encoder_2=build_t5_encoder(tokenizer_2, seed),
        tokenizer_2=tokenizer_2,
        transformer=build_flux_transformer(seed, guidance_embeds=dev, bench=bench),
        # FLUX.1's autoencoder: 16 channels, shifted latents, no quant convs.
        vae=build_vae(
            seed,
            FLUX_VAE_LATENT_CHANNELS,
            quant_convs=False,
            scaling_factor=FLUX_VAE_SCALING_FACTOR,
            shift_factor=FLUX_VAE_SHIFT_FACTOR,
        ),
    )


def build_flux_kontext(seed: int) -> FluxKontextPipeline:
    """FLUX.1 Kontext [dev]: FLUX.1-dev's architecture and scheduler (guidance embedded, size-shifted
    schedule); the input image's tokens join the image tokens in the transformer (export/kontext.py)."""
    return FluxKontextPipeline(**build_flux(seed, dev=True).components)


def build_sdxl_unet(seed: int) -> UNet2DConditionModel:
    """SDXL's UNet wiring: "text_time" added conditioning (text_encoder_2's projected pooled output and the
    six size/crop ids), cross attention over both encoders' hidden states side by side, linear projections.

    Two levels instead of SDXL's three keep 1024x1024 cheap on a CPU, where self-attention over the
    4,096 latent pixels of the second level dominates; image sides are then multiples of 16, not 32.
    """
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=128,  # 1024 / 8, as SDXL's
        in_channels=SDXL_VAE_LATENT_CHANNELS,
        out_channels=SDXL_VAE_LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=SDXL_UNET_CHANNELS,
        layers_per_block=1,
        transformer_layers_per_block=1,
        attention_head_dim=SDXL_UNET_HEADS,  # diffusers reads this legacy name as the number of heads
        norm_num_groups=SDXL_UNET_NORM_GROUPS,
        cross_attention_dim=2 * TEXT_HIDDEN,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TEXT_HIDDEN + SDXL_TIME_IDS * SDXL_TIME_EMBED_DIM,
    )


def build_sdxl(seed: int) -> StableDiffusionXLPipeline:
    """SDXL base: the real scheduler config and pipeline options, tiny models.

    text_encoder_2 is seeded apart: both encoders share a config here, and equal weights would hide
    a pipeline that swaps them.
    """
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer(pad_token=CLIP_BANG)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2))
    return StableDiffusionXLPipeline(
        vae=build_vae(seed, SDXL_VAE_LATENT_CHANNELS, quant_convs=True, scaling_factor=SDXL_VAE_SCALING_FACTOR),
        text_encoder=build_clip_text_encoder(tokenizer, seed),
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=build_sdxl_unet(seed),
        scheduler=sdxl_scheduler(),
        force_zeros_for_empty_prompt=True,
    )


def save_vocabulary_files(pipeline: DiffusionPipeline, out: Path) -> None:
    """transformers 5 saves only tokenizer.json; real CLIP folders also carry vocab.json and
    merges.txt, which older transformers and non-Python tokenizers read, and real T5 folders spiece.model."""
    for name, component in pipeline.components.items():
        if isinstance(component, CLIPTokenizer):
            component.backend_tokenizer.model.save(str(out / name))
        elif isinstance(component, T5Tokenizer):
            save_spiece_model(component, out / name)


BUILDERS: dict[str, Callable[[int], DiffusionPipeline]] = {
    "flux-schnell": functools.partial(build_flux, dev=False),
    "flux-dev": functools.partial(build_flux, dev=True),
    "sdxl": build_sdxl,
    "flux-kontext": build_flux_kontext,
}
FAMILIES: tuple[str, ...] = tuple(BUILDERS)


def presets() -> dict[str, dict[str, Callable[[int], DiffusionPipeline]]]:
    """Preset name -> family -> builder. real_width.py builds on this module, hence imported here."""
    from export.real_width import REAL_WIDTH

    return {
        "tiny": BUILDERS,
        # For `make bench`: a denoiser whose steps dominate a request, as on a GPU (benchmarks/).
        "bench": {"flux-schnell": functools.partial(build_flux, dev=False, bench=True)},
        # The published widths, depth cut (real_width.py): the real path's shapes and file sizes.
        "real-width": REAL_WIDTH,
    }


def build_tiny_checkpoint(family: str, out: Path, seed: int = 0, preset: str = "tiny") -> Path:
    """Write a `family` checkpoint of the `preset` size to `out` in diffusers format; same seed, same
    weight bytes."""
    builders = presets().get(preset)
    if builders is None:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(presets())}")
    if family not in builders:
        raise ValueError(
            f"unknown model family {family!r} for preset {preset!r}; expected one of {', '.join(builders)}"
        )
    with torch.random.fork_rng(devices=[]):  # seeding must not disturb the caller's RNG
        pipeline = builders[family](seed)
    pipeline.save_pretrained(out, safe_serialization=True)
    save_vocabulary_files(pipeline, out)
    logger.info("wrote %s %s checkpoint (seed %d) to %s", preset, family, seed, out)
    return out
