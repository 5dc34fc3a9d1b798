"""The embedded diffusion model: a diffusers UNet2DConditionModel that denoises the shared
autoencoder's continuous latent, steered by a small text encoder through cross-attention.

The text encoder is CLIP's causal text model (`CLIPTextModel`, shipped). `text_encoder="siglip"`
gives SigLIP's text model instead, the same layers without the causal mask, so that in "a red
square on the left" "red" can see the "left" after it; fine-tuning an earlier model with it did
not help (assets/EXPERIMENTS.md). Both kinds load (`load_text_encoder`).

The scheduler is separate from the network (diffusers style): DDPM is used for training and
any of `SCHEDULERS` for sampling. `diffusion_progressive()` is the sampler, a generator that
yields one `DiffusionFrame` per denoising step; `sample()` drains it.

    python -m playground generate "a large red circle on the left" --out out/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedModel, SiglipTextConfig, SiglipTextModel

from playground.autoencoder.model import SharedAutoencoder
from playground.settings import SCHEDULER_NAMES
from playground.world.text import MAX_PROMPT_TOKENS, PromptEncoder


@dataclass
class DiffusionConfig:
    block_out_channels: tuple[int, ...] = (64, 128)  # 16x16 -> 8x8
    layers_per_block: int = 1
    num_attention_heads: int = 4  # 128 channels / 4 = 32 dimensions a head
    text_hidden_size: int = 128  # = the UNet's cross_attention_dim
    text_layers: int = 2
    text_heads: int = 4
    text_encoder: str = "clip"  # causal (shipped); "siglip" is bidirectional
    # Two planes of each cell's (x, y) in [-1, 1] read beside the latent (`unet_input`): the UNet
    # has no position embedding, and at 16x16 a cell's few 3x3 convolutions do not reach the
    # border, so "left" could not be told from "right" where the prompt is read (0: none). The
    # shipped weights read them (trained with `--diffusion-coordinates 1`: the UNet's config has
    # 6 input channels); `unet_input` tells from that config whether a UNet reads them.
    coordinate_channels: int = 0
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # v-prediction with a zero-SNR last step and "trailing" sampling steps: sampling starts from
    # pure noise, as training's last step does. (With epsilon prediction and a first sampling
    # step at t < T, the model learns to read the background from the noise, not the prompt.)
    prediction_type: str = "v_prediction"
    timestep_spacing: str = "trailing"


def build_unet(cfg: DiffusionConfig, latent_channels: int = 4, grid: int = 16) -> UNet2DConditionModel:
    n = len(cfg.block_out_channels)
    return UNet2DConditionModel(
        sample_size=grid,
        in_channels=latent_channels + cfg.coordinate_channels,
        out_channels=latent_channels,
        # Cross-attention at every resolution (where each object goes is decided at 16x16);
        # self-attention only below the first, where 256 positions would cost too much here.
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        only_cross_attention=(True,) + (False,) * (n - 1),
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.text_hidden_size,
        # diffusers' `attention_head_dim` is, for historical reasons, the number of heads here.
        attention_head_dim=cfg.num_attention_heads,
        norm_num_groups=16,
        # The pooled prompt is also added to the timestep embedding (as SDXL adds its pooled
        # text), so every residual block knows the prompt: global facts such as the background
        # colour are learned in a few hundred steps instead of thousands.
        class_embed_type="projection",
        projection_class_embeddings_input_dim=cfg.text_hidden_size,
    )


def coordinate_planes(batch: int, grid: int) -> torch.Tensor:
    """Each cell's position, (B, 2, g, g): x then y, from -1 (left, top) to 1 (right, bottom)."""
    ramp = torch.linspace(-1.0, 1.0, grid)  # (g,)
    y, x = torch.meshgrid(ramp, ramp, indexing="ij")  # (g, g) each
    return torch.stack([x, y])[None].expand(batch, 2, grid, grid)  # (B, 2, g, g)


def unet_input(unet: UNet2DConditionModel, latents: torch.Tensor) -> torch.Tensor:
    """What the UNet reads: the latent (B, C, g, g), and beside it the two coordinate planes
    where the UNet takes two channels more than the latent has (B, C + 2, g, g)."""
    extra = unet.config.in_channels - latents.shape[1]
    if extra == 0:
        return latents
    if extra != 2:
        raise ValueError(f"the UNet reads {unet.config.in_channels} channels; the latent has {latents.shape[1]}")
    coords = coordinate_planes(latents.shape[0], latents.shape[2]).to(latents.device, latents.dtype)
    return torch.cat([latents, coords], dim=1)  # (B, C + 2, g, g)


def with_coordinate_channels(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A trained UNet that reads the latent alone, widened to read the coordinate planes too:
    the new input weights start at zero, so it predicts exactly as before until fine-tuned (as
    Stable Diffusion's inpainting model was widened from its text-to-image one)."""
    if unet.config.in_channels != unet.config.out_channels:
        return unet  # already reads them
    wide = UNet2DConditionModel.from_config({**unet.config, "in_channels": unet.config.out_channels + 2})
    state = unet.state_dict()
    old = state["conv_in.weight"]  # (O, C, 3, 3)
    state["conv_in.weight"] = torch.cat([old, torch.zeros(old.shape[0], 2, *old.shape[2:])], dim=1)  # (O, C + 2, 3, 3)
    wide.load_state_dict(state)
    return wide


def build_text_encoder(cfg: DiffusionConfig, vocab_size: int, pad_id: int, bos_id: int) -> PreTrainedModel:
    """The prompt's encoder: CLIP's text model (causal), or SigLIP's (bidirectional) where
    `cfg.text_encoder` is "siglip"."""
    config = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.text_hidden_size,
        intermediate_size=cfg.text_hidden_size * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        hidden_act="quick_gelu",  # CLIP's, so a CLIP text encoder's weights carry over
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
    )
    if cfg.text_encoder == "siglip":
        return SiglipTextModel(SiglipTextConfig(**config, projection_size=cfg.text_hidden_size))
    return CLIPTextModel(CLIPTextConfig(**config, projection_dim=cfg.text_hidden_size))


TEXT_ENCODERS = {"siglip_text_model": SiglipTextModel, "clip_text_model": CLIPTextModel}
# What a CLIP and a SigLIP text model's configs share (their layers have the same names and shapes).
SHARED_TEXT_CONFIG = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                      "max_position_embeddings", "hidden_act", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id")


def load_text_encoder(folder) -> PreTrainedModel:
    """A saved text encoder, by the model type its config names: the bidirectional SigLIP text
    model or the causal CLIP one. Safetensors only."""
    model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    if model_type not in TEXT_ENCODERS:
        raise ValueError(f"text encoder type {model_type!r} is not one of {', '.join(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[model_type].from_pretrained(folder, use_safetensors=True)


def bidirectional_from(text_encoder: PreTrainedModel) -> SiglipTextModel:
    """A SigLIP (bidirectional) text encoder holding a CLIP text encoder's weights: the two share
    every layer's name and shape; SigLIP's unused projection head starts fresh. Lets a diffusion
    model trained with a causal encoder be fine-tuned rather than trained again."""
    c = text_encoder.config
    new = SiglipTextModel(SiglipTextConfig(**{k: getattr(c, k) for k in SHARED_TEXT_CONFIG}, projection_size=c.hidden_size))
    missing, unexpected = new.load_state_dict(text_encoder.state_dict(), strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ValueError(f"text encoder weights do not carry over: missing {missing}, unexpected {unexpected}")
    return new


def build_train_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        timestep_spacing=cfg.timestep_spacing,
        rescale_betas_zero_snr=True,
        clip_sample=False,
    )


SCHEDULERS = dict(zip(SCHEDULER_NAMES, (DDIMScheduler, EulerDiscreteScheduler, DDPMScheduler, DPMSolverMultistepScheduler)))


def make_scheduler(name: str, config) -> object:
    """A sampling scheduler by name, from the training scheduler's config."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(config)


@dataclass
class DiffusionModel:
    """Everything the diffusion sampler needs, loaded."""

    unet: UNet2DConditionModel
    text_encoder: PreTrainedModel  # CLIPTextModel (shipped) or SiglipTextModel
    prompt_encoder: PromptEncoder
    autoencoder: SharedAutoencoder
    scheduler_config: dict

    @torch.no_grad()
    def encode_prompts(self, input_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return encode_text(self.text_encoder, self.unet, torch.tensor(input_ids, dtype=torch.long))


def encode_text(text_encoder, unet, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The UNet's two text inputs for prompt ids (B, T), left-padded: every token's state for
    cross-attention (B, T, D), and the pooled prompt for the timestep embedding (B, D) or None
    when the UNet has no class embedding. The pooled state is the last token's: with left
    padding it is always a word of the prompt, and it has read the whole prompt (bidirectional
    or causal). A bidirectional encoder is told where the padding is; a causal one never looks
    ahead, so the padding on the left is as it was in training."""
    mask = None
    if text_encoder.config.model_type != "clip_text_model":
        mask = (input_ids != text_encoder.config.pad_token_id).long()  # (B, T)
    hidden = text_encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (B, T, D)
    pooled = hidden[:, -1] if unet.config.class_embed_type is not None else None  # (B, D)
    return hidden, pooled
