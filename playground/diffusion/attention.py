"""Where a diffusion UNet looks for each prompt token: its cross-attention, recorded at one step.

A frame carries the noisy latent after its step; the UNet is run once more on it, at the noise
level that latent has (the next step's timestep), with the conditional prompt alone, and every
cross-attention layer's probabilities are kept: each latent cell's attention over the prompt's
tokens, averaged over heads. Layers at 16x16 or coarser (8x8 in the embedded model; in Stable
Diffusion the 16x16 and 8x8 blocks, where layout is decided) are enlarged to the finest of them
and averaged: one (T, g, g) stack of maps, one per prompt token.

Recording works through diffusers' attention processors (`unet.set_attn_processor`): each is
wrapped once (`install`) by one that passes every call through unchanged and, only while this
thread is recording, also computes the probabilities. A sampler using the same UNet on another
thread computes exactly what it did before.

    python -m playground generate "a large red star on the left" --attention-word star --out out/
"""

from __future__ import annotations

import json
import math
import threading
from functools import lru_cache

import numpy as np
import torch

from playground.attention_overlay import chosen_word_positions, mean_over
from playground.diffusion.model import DiffusionModel, encode_text, make_scheduler, unet_input
from playground.world.text import prompt_order

MAX_SIDE = 16  # layers whose latent side is at most this are averaged (16x16 / 8x8)
_recording = threading.local()
_install_lock = threading.Lock()


class RecordingProcessor:
    """An attention processor that calls the one it wraps, and, while the calling thread is
    recording, first keeps the cross-attention probabilities (B, N, T) averaged over heads."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        maps = getattr(_recording, "maps", None)
        if maps is not None and encoder_hidden_states is not None:
            maps.append(cross_attention_probs(attn, hidden_states, encoder_hidden_states))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def cross_attention_probs(attn, hidden_states: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """An attention module's probabilities of each query over the context tokens, as its own
    processor computes them, averaged over heads: (B, N, T) float32."""
    if hidden_states.ndim == 4:  # (B, C, h, w) -> (B, h*w, C)
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*H, N, hd)
    k = attn.head_to_batch_dim(attn.to_k(context))  # (B*H, T, hd)
    probs = attn.get_attention_scores(q, k, None)  # (B*H, N, T)
    return probs.view(-1, attn.heads, *probs.shape[1:]).float().mean(1)  # (B, N, T)


def install(unet) -> None:
    """Wrap every attention processor of `unet` in a RecordingProcessor (once)."""
    with _install_lock:
        processors = unet.attn_processors
        if all(isinstance(p, RecordingProcessor) for p in processors.values()):
            return
        unet.set_attn_processor({name: p if isinstance(p, RecordingProcessor) else RecordingProcessor(p)
                                 for name, p in processors.items()})


def combine(records: list[torch.Tensor], max_side: int = MAX_SIDE) -> np.ndarray:
    """The recorded layers' probabilities [(B, N, T)] -> the first row's maps (T, s, s): layers
    with a side of at most max_side, each enlarged to the finest of them, averaged."""
    sides = [math.isqrt(r.shape[1]) for r in records]
    kept = [(r, s) for r, s in zip(records, sides) if s * s == r.shape[1] and s <= max_side]
    if not kept:
        raise ValueError("the UNet has no cross-attention at 16x16 or coarser")
    size = max(s for _, s in kept)
    total = 0
    for r, s in kept:
        m = r[0].T.reshape(-1, s, s)  # (T, s, s)
        total = total + m.repeat_interleave(size // s, 1).repeat_interleave(size // s, 2)  # (T, size, size)
    return (total / len(kept)).cpu().numpy()


@torch.no_grad()
def token_maps(unet, latents: torch.Tensor, timestep, context: torch.Tensor, **unet_kwargs) -> np.ndarray:
    """One UNet call on latents (1, C, g, g) at `timestep` with the text states (1, T, D),
    recording: every prompt token's map (T, s, s), s the finest side at most MAX_SIDE."""
    install(unet)
    _recording.maps = []
    try:
        unet(unet_input(unet, latents), timestep, encoder_hidden_states=context, **unet_kwargs)
        records = _recording.maps
    finally:
        _recording.maps = None
    return combine(records)


class DiffusionAttention:
    """One prompt's cross-attention maps on the embedded diffusion model: the prompt encoded once,
    then `maps(frame)` for any frame of a run with that prompt (`scheduler`: the run's)."""

    def __init__(self, model: DiffusionModel, prompt: str, scheduler: str = "ddim"):
        self.model, self.scheduler = model, scheduler
        self.encoded = model.prompt_encoder(prompt, order=prompt_order(model.text_encoder.config))
        ids = torch.tensor([self.encoded.input_ids], dtype=torch.long)  # (1, T)
        self.context, self.pooled = encode_text(model.text_encoder, model.unet, ids)  # (1, T, D), (1, D)
        words = self.encoded.words
        pad = len(self.encoded.input_ids) - len(words)  # [PAD.. BOS] before the words
        self.tokens = [""] * pad + words  # each position's word ("" for padding and BOS)

    def positions(self, word: str) -> list[int]:
        """The token positions of `word` (a synonym counts: "big" is "large"); WordNotInPrompt."""
        return chosen_word_positions(self.tokens, word)

    @torch.no_grad()
    def maps(self, frame) -> np.ndarray:
        """Every prompt token's map at a frame (T, g, g)."""
        config = json.dumps(dict(self.model.scheduler_config), sort_keys=True, default=str)
        t = next_timestep(self.scheduler, frame.total + frame.skipped, frame.skipped + frame.step, config)
        latents = frame.latents * vp_scale(self.model.scheduler_config, self.scheduler, t)  # (1, C, g, g)
        return token_maps(self.model.unet, latents, torch.tensor([t]), self.context, class_labels=self.pooled)

    def word_map(self, frame, word: str) -> np.ndarray:
        """The map of one word at a frame, (g, g), non-negative; WordNotInPrompt."""
        return mean_over(self.maps(frame), self.positions(word))


@lru_cache(maxsize=64)
def next_timestep(scheduler: str, steps: int, taken: int, config: str) -> int:
    """The timestep of the noise level a latent has after `taken` of `steps` sampling steps
    (0 once every step is taken: the latent is clean)."""
    sched = make_scheduler(scheduler, json.loads(config))  # config: the scheduler's, as JSON (hashable)
    sched.set_timesteps(steps)
    return int(sched.timesteps[taken]) if taken < len(sched.timesteps) else 0


def vp_scale(scheduler_config: dict, scheduler: str, t: int) -> float:
    """What a scheduler's latent is multiplied by to be the UNet's input at t: 1, but Euler keeps
    its latents scaled up by 1/sqrt(alpha_bar) (its `scale_model_input` divides that out)."""
    if scheduler != "euler":
        return 1.0
    a = _alphas(json.dumps(dict(scheduler_config), sort_keys=True, default=str))[t].clamp(min=2.0**-24)
    return float(a.sqrt())


@lru_cache(maxsize=4)
def _alphas(config: str) -> torch.Tensor:
    return make_scheduler("ddpm", json.loads(config)).alphas_cumprod  # (num_train_timesteps,)

