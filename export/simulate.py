"""`imagegen export --simulate COSTS.json`: a family at its published sizes, served by a simulated GPU.

The repository is what `imagegen export` writes for the real checkpoint, but for the weights: the same
model names, the same configs (tensor names, dtypes and shapes, dynamic batching, the pipeline's
metadata), derived the same way (`describe_checkpoint` over the published configs, on torch's meta
device), and the real tokenizer model with full-size vocabularies. Every other component is served by
backends/simulated (a native Triton backend, compiled here from its C source into each model's folder:
it needs a C compiler), which sleeps what the cost file says a GPU takes for the batch it was handed
and returns cheap outputs of the contract's shapes. The unchanged frontend serves it, so `make
bench-gpu-sim` measures what the server adds at a GPU's step times and real tensor sizes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
from diffusers import SchedulerMixin
from transformers import PretrainedConfig, PreTrainedTokenizerBase
from tritonclient.grpc import model_config_pb2 as pb

from benchmarks.gpu_reference import CLIP_BIGG, CLIP_L, FLUX_TRANSFORMER, FLUX_VAE, SDXL_UNET, SDXL_VAE, T5_XXL
from export.checkpoint import describe_checkpoint, export_tokenizers, write_shared_config
from export.cost_model import Timing, load_costs
from export.lora import DEFAULT_RANK
from export.real_width import VAE_SAMPLE_SIZE, real_clip_tokenizer
from export.repository import onnx_model_config, pipeline_parameters
from export.tiny import (
    CLIP_BANG,
    FLUX_VAE_SCALING_FACTOR,
    FLUX_VAE_SHIFT_FACTOR,
    SDXL_VAE_SCALING_FACTOR,
    build_t5_tokenizer,
    flux_scheduler,
    sdxl_scheduler,
)
from families import flux, sdxl
from families.family import VAE_DECODER, VAE_ENCODER, Family

log = logging.getLogger(__name__)

SIMULATED_BACKEND = "simulated"
BACKEND_SOURCE = Path(__file__).resolve().parent.parent / "backends" / SIMULATED_BACKEND / "simulated.c"
BACKEND_LIBRARY = f"libtriton_{SIMULATED_BACKEND}.so"
"""In each simulated model's folder, where Triton looks first for the library of the model's backend."""
SIMULATION_FILE = "simulation.txt"
"""In each simulated model's version folder, where weights would be (`Simulation`)."""


@dataclass(frozen=True)
class Simulation:
    """What backends/simulated reads of a model: a `key value...` line each, which C reads without a
    parser (and `make bench-gpu-sim` prices Triton's executions with `ms_by_batch`)."""

    role: str
    """The component's role (families/family.py): what its outputs are made of."""
    cost: str
    """Its entry in the cost file."""
    timing: Timing
    vae_scale_factor: int
    input: str
    """The input whose shape its outputs follow (its config's first)."""
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    """(name, Triton datatype, per-sample dims with -1 where the input sets them)."""
    ms_by_batch: tuple[float, ...]
    """[b - 1]: what a call of b samples takes."""

    def text(self) -> str:
        lines = [
            f"role {self.role}",
            f"cost {self.cost}",
            f"timing {self.timing}",
            f"vae_scale_factor {self.vae_scale_factor}",
            f"input {self.input}",
            *(f"output {name} {datatype} {' '.join(map(str, dims))}" for name, datatype, dims in self.outputs),
            f"ms_by_batch {' '.join(map(str, self.ms_by_batch))}",
        ]
        return "\n".join(lines) + "\n"

    @classmethod
    def read(cls, path: Path) -> Simulation:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        values = {key: rest for key, *rest in lines}
        outputs = [rest for key, *rest in lines if key == "output"]
        return cls(
            role=values["role"][0],
            cost=values["cost"][0],
            timing="eager" if values["timing"][0] == "eager" else "graph",
            vae_scale_factor=int(values["vae_scale_factor"][0]),
            input=values["input"][0],
            outputs=tuple((name, datatype, tuple(map(int, dims))) for name, datatype, *dims in outputs),
            ms_by_batch=tuple(map(float, values["ms_by_batch"])),
        )


def build_backend(target: Path) -> None:
    """backends/simulated compiled to `target` ($CC or cc)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise RuntimeError(
            f"the simulated GPU is a native Triton backend: compiling {BACKEND_SOURCE} needs a C compiler (cc or $CC)"
        )
    command = [compiler, "-O2", "-std=c11", "-Wall", "-shared", "-fPIC", "-o", str(target), str(BACKEND_SOURCE), "-lm"]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{built.stderr}")


@dataclass(frozen=True)
class Published:
    """A checkpoint's configs as published, without weights: what `describe_checkpoint` reads."""

    family: Family
    configs: dict[str, PretrainedConfig | dict[str, Any]]
    """Subfolder -> its model's config (a text encoder's transformers config, a diffusers model's values)."""
    tokenizers: dict[str, PreTrainedTokenizerBase]
    scheduler: SchedulerMixin
    options: dict[str, Any]
    """The pipeline's own config in model_index.json."""
    costs: dict[str, str]
    """Component -> its entry in the cost file."""

    def write(self, folder: Path) -> None:
        index: dict[str, Any] = {
            "_class_name": self.family.checkpoint_class,
            "_diffusers_version": diffusers.__version__,
        }
        classes = {source.subfolder: source.model_class for source in self.family.exporter_module().SOURCES.values()}
        for subfolder, config in self.configs.items():
            model_class = classes[subfolder]
            if isinstance(config, PretrainedConfig):
                config.save_pretrained(folder / subfolder)
                index[subfolder] = ["transformers", model_class.__name__]
            else:
                (folder / subfolder).mkdir(parents=True)
                (folder / subfolder / "config.json").write_text(
                    json.dumps({"_class_name": model_class.__name__, **config})
                )
                index[subfolder] = ["diffusers", model_class.__name__]
        for subfolder, tokenizer in self.tokenizers.items():
            tokenizer.save_pretrained(folder / subfolder)
            index[subfolder] = ["transformers", type(tokenizer).__name__]
        self.scheduler.save_config(folder / "scheduler")
        index["scheduler"] = ["diffusers", type(self.scheduler).__name__]
        (folder / "model_index.json").write_text(json.dumps(index | self.options, indent=2))


def published_flux(dev: bool) -> Published:
    """black-forest-labs/FLUX.1-schnell or -dev (benchmarks/gpu_reference.py cites each config)."""
    prompt = "{text_encoder_2}"  # the cost of T5 and of a step follow T5's prompt length (256 or 512)
    vae = {**FLUX_VAE, "sample_size": VAE_SAMPLE_SIZE}
    return Published(
        family=flux.FLUX,
        configs={
            "text_encoder": CLIP_L,
            "text_encoder_2": T5_XXL,
            "transformer": {**FLUX_TRANSFORMER, "guidance_embeds": dev},
            "vae": vae | {"scaling_factor": FLUX_VAE_SCALING_FACTOR, "shift_factor": FLUX_VAE_SHIFT_FACTOR},
        },
        tokenizers={"tokenizer": real_clip_tokenizer(), "tokenizer_2": build_t5_tokenizer(real_size=True)},
        scheduler=flux_scheduler(dev),
        options={},
        costs={
            flux.CLIP.name: "clip-l",
            flux.T5.name: f"t5-xxl-{prompt}",
            flux.TRANSFORMER.name: f"flux-transformer-{prompt}",
            VAE_ENCODER.name: "flux-vae-encoder",
            VAE_DECODER.name: "flux-vae-decoder",
        },
    )


def published_sdxl() -> Published:
    """stabilityai/stable-diffusion-xl-base-1.0 (benchmarks/gpu_reference.py cites each config)."""
    vae = {**SDXL_VAE, "sample_size": VAE_SAMPLE_SIZE, "scaling_factor": SDXL_VAE_SCALING_FACTOR}
    return Published(
        family=sdxl.SDXL,
        configs={"text_encoder": CLIP_L, "text_encoder_2": CLIP_BIGG, "unet": SDXL_UNET, "vae": vae},
        tokenizers={"tokenizer": real_clip_tokenizer(), "tokenizer_2": real_clip_tokenizer(CLIP_BANG)},
        scheduler=sdxl_scheduler(),
        options={"force_zeros_for_empty_prompt": True},
        costs={
            sdxl.CLIP.name: "clip-l",
            sdxl.CLIP_2.name: "openclip-bigg",
            sdxl.UNET.name: "sdxl-unet",
            VAE_ENCODER.name: "sdxl-vae-encoder",
            VAE_DECODER.name: "sdxl-vae-decoder",
        },
    )


PUBLISHED = {
    "flux-schnell": lambda: published_flux(dev=False),
    "flux-dev": lambda: published_flux(dev=True),
    "sdxl": published_sdxl,
}
"""`--family` -> its published checkpoint's configs."""


def export_simulated(
    costs_file: Path,
    preset: str,
    name: str,
    repository: Path,
    version: int = 1,
    timing: Timing = "graph",
    lora_rank: int = DEFAULT_RANK,
) -> None:
    """Write the pipeline `name` of `preset`'s published configs into `repository`, its components
    costing what `costs_file`'s `timing` figures say."""
    if preset not in PUBLISHED:
        raise ValueError(f"unknown family {preset!r} to simulate; expected one of {', '.join(PUBLISHED)}")
    published = PUBLISHED[preset]()
    costs = load_costs(costs_file, timing)
    with tempfile.TemporaryDirectory() as temporary:
        checkpoint, library = Path(temporary) / "checkpoint", Path(temporary) / BACKEND_LIBRARY
        build_backend(library)
        published.write(checkpoint)
        described = describe_checkpoint(checkpoint, lora_rank)
        roles = {component.name: component.role for component in described.family.components}
        prompt_lengths: dict[str, int] = described.metadata["text_encoders"]
        for component in described.components:
            cost_name = published.costs[component.name].format(**prompt_lengths)
            if cost_name not in costs:
                raise ValueError(f"{costs_file} prices no {cost_name!r} (for {component.name})")
            is_denoiser = component.name == described.family.denoiser.name
            parameters = pipeline_parameters(described.metadata) if is_denoiser else None
            config = onnx_model_config(name, component, parameters, backend=SIMULATED_BACKEND)
            folder = write_shared_config(repository, config, version)
            simulation = Simulation(
                role=roles[component.name],
                cost=cost_name,
                timing=timing,
                vae_scale_factor=int(described.metadata["vae_scale_factor"]),
                input=config.input[0].name,
                outputs=tuple(
                    (output.name, pb.DataType.Name(output.data_type).removeprefix("TYPE_"), tuple(output.dims))
                    for output in config.output
                ),
                ms_by_batch=tuple(costs[cost_name].ms_by_batch(component.max_batch_size)),
            )
            (folder / str(version)).mkdir(exist_ok=True)
            (folder / str(version) / SIMULATION_FILE).write_text(simulation.text())
            shutil.copy2(library, folder / BACKEND_LIBRARY)
        export_tokenizers(described, checkpoint, name, repository, version)
    log.info("wrote the simulated %s (%s figures of %s) to %s as %s", preset, timing, costs_file, repository, name)
