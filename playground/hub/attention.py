"""Attention maps for whichever models a run uses: `attention_reader` gives the embedded models'
readers (diffusion/attention.py, autoregressive/attention.py), and for a real Stable Diffusion
1.x / 2.x pipeline its UNet's cross-attention read the same way (`HubDiffusionAttention`). Other
real models (SDXL's two text encoders, Janus) raise a one-line ValueError.

    python -m playground generate "a red fox in the snow" --diffusion-model stabilityai/sd-turbo --attention-word fox --out out/
"""

from __future__ import annotations

import json

import numpy as np
import torch

from playground.autoregressive.attention import AutoregressiveAttention
from playground.diffusion.attention import DiffusionAttention, next_timestep, token_maps, vp_scale
from playground.settings import EMBEDDED

UNAVAILABLE = "attention maps: not available for this model"


class HubDiffusionAttention:
    """A Stable Diffusion 1.x / 2.x pipeline's cross-attention maps for one prompt: the prompt
    encoded once by the pipeline's own tokenizer and text encoder, then `maps(frame)`."""

    def __init__(self, model, prompt: str, scheduler: str = "ddim"):
        pipe = model.pipeline
        if getattr(pipe, "tokenizer_2", None) is not None or pipe.unet.config.addition_embed_type is not None:
            raise ValueError(f"{UNAVAILABLE} (its UNet reads more than one text encoder's states)")
        self.pipe, self.device, self.scheduler = pipe, model.device, scheduler
        tok = pipe.tokenizer
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids  # (1, T)
        with torch.no_grad():
            self.context = pipe.text_encoder(ids.to(self.device))[0]  # (1, T, D)
        self.ids = ids[0].tolist()
        self.config = dict(pipe.scheduler.config)

    def positions(self, word: str) -> list[int]:
        """Every token position of the word's pieces, wherever they occur in the prompt."""
        pieces = self.pipe.tokenizer((word or "").strip().lower(), add_special_tokens=False).input_ids if word else []
        n = len(pieces)
        found = [i + k for i in range(len(self.ids) - n + 1) if n and self.ids[i : i + n] == pieces for k in range(n)]
        if not found:
            raise ValueError(f"“{word}” is not a word of this prompt" if word else "no word chosen")
        return found

    def maps(self, frame) -> np.ndarray:
        """Every prompt token's map at a frame (T, s, s)."""
        t = next_timestep(self.scheduler, frame.total, frame.step, json.dumps(self.config, sort_keys=True, default=str))
        unet = self.pipe.unet
        latents = frame.latents.to(self.device, unet.dtype) * vp_scale(self.config, self.scheduler, t)  # (1, C, h, w)
        return token_maps(unet, latents, torch.tensor([t], device=self.device), self.context)

    def word_map(self, frame, word: str) -> np.ndarray:
        return self.maps(frame)[self.positions(word)].mean(axis=0)


def attention_reader(engine, kind: str, model: str, prompt: str, scheduler: str = "ddim", order: str = "raster"):
    """The reader of the maps of a run of `kind` on `model` ("": the default) of an Engine,
    written in `order`: an object with positions(word), maps(frame) and word_map(frame, word).
    ValueError, one line, where the model gives none."""
    name = engine.model_name(kind, model)
    if kind == "autoregressive" and order != "raster":
        raise ValueError(f"{UNAVAILABLE} for the {order} order (the raster model's attention is read: choose raster)")
    if kind == "diffusion":
        if name == EMBEDDED:
            return DiffusionAttention(engine.diffusion, prompt, scheduler)
        return HubDiffusionAttention(engine.hub["diffusion"][name], prompt, scheduler)
    if name == EMBEDDED:
        return AutoregressiveAttention(engine.autoregressive, prompt)
    raise ValueError(f"{UNAVAILABLE} (only the embedded autoregressive model's attention is read)")
