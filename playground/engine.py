"""Loading the embedded models: `assets/` holds ordinary Hugging Face checkpoints.

    assets/
      tokenizer/tokenizer.json      word-level tokenizer (tokenizers)
      vqvae/                        the shared autoencoder (diffusers VQModel)
      unet/  text_encoder/  scheduler/   the diffusion model (diffusers + a transformers text encoder)
      transformer/                  the autoregressive model (transformers GPT-2), raster order
      masked/                       the any-order model (transformers BERT): random or confidence-first order

`load_engine(folder)` loads them all with `from_pretrained` (safetensors only) and returns an
`Engine`; any folder laid out the same way (such as the tiny random ones the tests build) works.
Real models (playground/hub.py) join them by name: `load_engine(folder, diffusion_model=ID,
autoregressive_model=ID)`; the first real model of each kind is that panel's default, and one
that cannot be loaded leaves the embedded model in its place, with the reason in `problems`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from playground.autoencoder.model import SharedAutoencoder
from playground.autoregressive.masked_model import MASKED_FOLDER, MaskedModel
from playground.autoregressive.masked_sample import masked_progressive
from playground.autoregressive.model import AutoregressiveModel
from playground.autoregressive.sample import autoregressive_progressive
from playground.diffusion.model import SCHEDULERS, DiffusionModel, load_text_encoder
from playground.diffusion.sample import diffusion_progressive
from playground.errors import ModelLoadError, ModelNotFoundError, SettingsError
from playground.hub.common import configured_models
from playground.hub.load import load_hub_model
from playground.settings import EMBEDDED
from playground.world.text import EncodedPrompt, PromptEncoder

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
REQUIRED = ("tokenizer/tokenizer.json", "vqvae", "unet", "text_encoder", "scheduler", "transformer")


@dataclass
class Engine:
    diffusion: DiffusionModel
    autoregressive: AutoregressiveModel
    folder: Path
    hub: dict[str, dict[str, object]] = field(default_factory=lambda: {"diffusion": {}, "autoregressive": {}})
    problems: list[str] = field(default_factory=list)  # why a model asked for is not here
    masked: MaskedModel | None = None  # the any-order model (assets/masked/), where there is one

    # (`regional` prompts read the shapes world's grammar: the embedded models' only.)
    def diffusion_progressive(self, prompt: str, model: str = "", regional: float = 0.0, **kwargs):
        if self.model_name("diffusion", model) == EMBEDDED:
            return diffusion_progressive(self.diffusion, prompt, regional=regional, **kwargs)
        return self.hub["diffusion"][self.model_name("diffusion", model)].progressive(prompt, **kwargs)

    def autoregressive_progressive(self, prompt: str, model: str = "", regional: float = 0.0, order: str = "raster",
                                   num_inference_steps: int = 0, **kwargs):
        """The autoregressive panel's sampler. `order` other than raster: the any-order model
        writes the codes (embedded only), in `num_inference_steps` steps (0: its default)."""
        if order != "raster":
            if (name := self.model_name("autoregressive", model)) != EMBEDDED:
                raise SettingsError(f"the {order} order is the embedded any-order model's; {name} writes in raster order")
            if self.masked is None:
                raise ModelNotFoundError(f"there is no any-order model in {self.folder / MASKED_FOLDER}; "
                                         "train it with `python -m playground.training.train --stage masked`")
            return masked_progressive(self.masked, prompt, order=order, num_inference_steps=num_inference_steps or None, **kwargs)
        if self.model_name("autoregressive", model) == EMBEDDED:
            return autoregressive_progressive(self.autoregressive, prompt, regional=regional, **kwargs)
        return self.hub["autoregressive"][self.model_name("autoregressive", model)].progressive(prompt, **kwargs)

    def models(self, kind: str) -> list[str]:
        """The models of a kind one can choose, the default first."""
        return [*self.hub[kind], EMBEDDED]

    def model_name(self, kind: str, model: str = "") -> str:
        """The model a run of `kind` uses ("": the default); SettingsError for one not loaded."""
        if not model:
            return self.models(kind)[0]
        if model not in self.models(kind):
            raise SettingsError(f"{kind} model must be one of {', '.join(self.models(kind))}, not {model!r}")
        return model

    def encode_prompt(self, prompt: str, diffusion_model: str = "", autoregressive_model: str = "") -> EncodedPrompt:
        """The prompt as the chosen models read it: the embedded models' words when one of them
        is used (unknown words are reported), else the prompt as it is (real models read any text)."""
        chosen = {self.model_name("diffusion", diffusion_model), self.model_name("autoregressive", autoregressive_model)}
        if EMBEDDED in chosen:
            return self.prompt_encoder(prompt)
        return EncodedPrompt(prompt, [], prompt.split())

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.diffusion.prompt_encoder

    @property
    def grid(self) -> int:
        """Cells a side of the shared latent / token grid (16)."""
        return self.autoregressive.autoencoder.grid

    @property
    def schedulers(self) -> list[str]:
        return list(SCHEDULERS)


def _glibc():
    """The C library where it is glibc on Linux (its malloc's settings apply), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep the memory a process frees for its next allocations.

    Why: a sampler step allocates tensors above malloc's mmap threshold (the UNet at the batch
    of a class, tens of MB); each is mapped and unmapped at every step, and the page faults
    cost about a tenth of the step (`denoise_together`, 30 requests, 12 steps, one thread: 0.97 s
    of system time in 8.6 s; 0.06 s with this). The process then stays at its largest step's
    memory, which is reused, not grown. Elsewhere than Linux with glibc: nothing changes.

    For processes that compute on one thread: the sampler workers and the command line. Not the
    page process (dozens of threads): under a class's load it spent more CPU with this (15
    against 17.5 s, `python -m playground.evaluation.load`, measured with glibc's default arenas)."""
    libc = _glibc()
    if libc is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


def give_back_freed_memory(above_mb: float = 64) -> bool:
    """Hand the memory this process has freed back to the system (glibc's malloc_trim) when
    more than `above_mb` lies free; True if it did.

    For a batch worker at rest: while it computes it keeps what it frees (keep_freed_memory),
    but a class's batches change size as requests join and finish, and the freed pieces of one
    size do not all fit the next. Measured over 300 requests (30 at once, 10 times), the
    diffusion batch worker grew from 773 to 959 MB, about 20 MB a round and still growing; given
    back after each class, 591 to 603 MB. A visitor alone frees a few MB: kept, or the next
    picture would map them again (a picture alone 1.4 -> 1.5 s when every rest gave back)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return False
    libc.mallinfo2.restype = _MallInfo2
    if libc.mallinfo2().fordblks < above_mb * 2**20:
        return False
    libc.malloc_trim(0)
    return True


def few_malloc_arenas(arenas: int = 2) -> bool:
    """Let at most `arenas` malloc arenas serve all of this process's threads; True if set.

    Why: glibc gives threads that allocate at once arenas of their own, up to 8 per core, and
    memory freed in one is rarely given back or reused by another. The page's process decodes
    and encodes every visitor's pictures on gradio's worker threads, so with the default its
    memory grew by about 25 MB for every 30 requests and kept growing (30 sessions pressing
    Generate 6 times: 945, 1002, 1021, 1045, 1075, 1085 MB); with 2 arenas it levels off
    (794, 886, 929, 943, 947, 939 MB), at the same speed. Call it before the threads start."""
    libc = _glibc()
    m_arena_max = -8  # glibc's malloc.h
    return bool(libc is not None and libc.mallopt(m_arena_max, arenas))


def load_engine(folder: str | Path | None = None, diffusion_model=None, autoregressive_model=None,
                preview_vae: str | None = None) -> Engine:
    """Load both embedded models from `folder` (default: the shipped assets/), and the real
    models asked for (ids or folders; None: PLAYGROUND_DIFFUSION_MODEL / _AUTOREGRESSIVE_MODEL)."""
    from diffusers import UNet2DConditionModel, VQModel
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    folder = Path(folder or os.environ.get("PLAYGROUND_ASSETS") or ASSETS_DIR)
    torch.set_flush_denormal(True)  # tiny floats otherwise slow these CPUs down several times
    missing = [p for p in REQUIRED if not (folder / p).exists()]
    if missing:
        raise ModelNotFoundError(
            f"the embedded models in {folder} are incomplete (missing: {', '.join(missing)}); "
            "restore assets/ from git or rebuild them with `python -m playground.training.train`"
        )
    prompt_encoder = PromptEncoder.from_pretrained(folder / "tokenizer")
    autoencoder = SharedAutoencoder(VQModel.from_pretrained(folder / "vqvae", use_safetensors=True))
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True).eval()
    text_encoder = load_text_encoder(folder / "text_encoder").eval()
    transformer = AutoModelForCausalLM.from_pretrained(folder / "transformer", use_safetensors=True).eval()
    written = transformer.config.codebook_size  # the samplers read it too
    if written != autoencoder.codebook_size:  # its codes would index another codebook: wrong pictures or an index error
        raise ModelNotFoundError(
            f"the autoregressive model in {folder / 'transformer'} writes {written} codes, but the autoencoder in "
            f"{folder / 'vqvae'} has {autoencoder.codebook_size}: they come from different trainings; restore "
            "assets/ from git or train the autoregressive model again on this autoencoder (`--stage autoregressive`)"
        )
    from diffusers import DDPMScheduler

    scheduler_config = DDPMScheduler.load_config(folder / "scheduler")
    engine = Engine(
        diffusion=DiffusionModel(unet, text_encoder, prompt_encoder, autoencoder, scheduler_config),
        autoregressive=AutoregressiveModel(transformer, prompt_encoder, autoencoder),
        folder=folder,
    )
    if (folder / MASKED_FOLDER).exists():  # optional: the raster model alone is a complete playground
        masked = AutoModelForMaskedLM.from_pretrained(folder / MASKED_FOLDER, use_safetensors=True).eval()
        if masked.config.codebook_size == autoencoder.codebook_size:
            engine.masked = MaskedModel(masked, prompt_encoder, autoencoder)
        else:
            engine.problems.append(
                f"the any-order model in {folder / MASKED_FOLDER} writes {masked.config.codebook_size} codes, but the autoencoder "
                f"has {autoencoder.codebook_size}: left out (random and confidence-first orders are off) until it is "
                "trained again on this autoencoder (`--stage masked`)")
            log.warning("%s", engine.problems[-1])
    preview_vae = preview_vae or os.environ.get("PLAYGROUND_PREVIEW_VAE") or None
    for kind, given in (("diffusion", diffusion_model), ("autoregressive", autoregressive_model)):
        for model_id in configured_models(kind, given):
            try:
                engine.hub[kind][model_id] = load_hub_model(kind, model_id, preview_vae=preview_vae)
            except ModelLoadError as exc:
                engine.problems.append(f"{kind} model {exc}; using the embedded {kind} model instead")
                log.warning("%s", engine.problems[-1])
    return engine


def build_random_assets(folder: str | Path, seed: int = 0, codebook_size: int = 32) -> Path:
    """Tiny, seeded, untrained models saved in the assets layout: for fast tests and demos of
    the machinery. Loaded with `load_engine(folder)` like the real ones."""
    from playground.autoencoder.model import AutoencoderConfig, build_autoencoder
    from playground.autoregressive.masked_model import build_masked_transformer
    from playground.autoregressive.model import AutoregressiveConfig, build_transformer
    from playground.diffusion.model import DiffusionConfig, build_text_encoder, build_train_scheduler, build_unet
    from playground.world.text import save_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    save_tokenizer(folder / "tokenizer")
    pe = PromptEncoder.from_pretrained(folder / "tokenizer")
    vq = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 8, 8), num_vq_embeddings=codebook_size, norm_num_groups=4))
    vq.save_pretrained(folder / "vqvae")
    dcfg = DiffusionConfig(block_out_channels=(16, 32), num_attention_heads=2, text_hidden_size=32, text_layers=1, text_heads=2)
    unet = build_unet(dcfg, latent_channels=4, grid=16)
    unet.save_pretrained(folder / "unet")
    build_text_encoder(dcfg, pe.vocab_size, pe.pad_id, pe.bos_id).save_pretrained(folder / "text_encoder")
    build_train_scheduler(dcfg).save_pretrained(folder / "scheduler")
    acfg = AutoregressiveConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    build_transformer(acfg, pe.vocab_size, codebook_size, 16, pe.pad_id, pe.bos_id).save_pretrained(folder / "transformer")
    build_masked_transformer(acfg, pe.vocab_size, codebook_size, 16, pe.pad_id).save_pretrained(folder / MASKED_FOLDER)
    return folder
