"""Token grounding for the diffusion model: teach each object's words to be read where the object is.

Trained without it, a diffusion model's cross-attention spreads evenly over the picture: every
cell gives each word about the same share, most of it to "and", "a", "the", "background" (words
that, read causally, sum up the whole prompt). The prompt then reaches the picture as one global
code, and the convolutions must work out from it which object goes where; with two objects they
often swap the places or draw one object twice.

The renderer knows where every object is, and the caption which words name it, so training can
say where those words should be read (TokenCompose, Wang et al. 2024): for each object's colour
and shape word, the share of that word's attention that falls outside the object's cells is a
loss (`grounding_loss`), added to the denoising loss with a weight (`train --diffusion-grounding`);
`reading_loss` (`--diffusion-reading`) asks the object's cells to read those words.
The same masks give each cell's shape and colour (`cell_attributes`), which `AttributeProbes`
learn to read from a generator's hidden states.

The shipped weights are trained from scratch with grounding 0.1, coordinate planes and
place-first prompts (training/recipe.py): grounding works from the start of training, where
fine-tuning a model trained without it did not move which object goes where
(assets/EXPERIMENTS.md has the runs).

    recorder = AttentionRecorder.attach(unet)              # records every cross-attention map
    pred = unet(...)                                       # as usual
    loss = denoising + w * grounding_loss(recorder.maps, positions, masks)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from playground.autoencoder.model import object_cells
from playground.world.shapes import Scene, render
from playground.world.vocabulary import COLORS, SHAPES


def object_token_positions(words: list[str]) -> list[list[int]]:
    """For a prompt's token words (as the model reads them, padding included), the positions of
    each object's colour and shape word, objects in order: [[colour, shape], ...]. Objects are
    split at "and"; an object's colour is the first colour word of its part (the background's
    colour comes after it)."""
    objects: list[list[int]] = [[]]
    for i, word in enumerate(words):
        if word == "and":
            objects.append([])
        elif word in COLORS and not any(words[j] in COLORS for j in objects[-1]):
            objects[-1].append(i)
        elif word in SHAPES:
            objects[-1].append(i)
    return [o for o in objects if o]


def object_masks(scene: Scene, grid: int) -> torch.Tensor:
    """Each object's cells on the latent grid, (n_objects, g, g) float: the object rendered
    alone on its background (`autoencoder.object_cells`)."""
    alone = np.stack([render(Scene(scene.background, (obj,))) for obj in scene.objects])  # (n, H, W, 3)
    return object_cells(alone, grid)[:, 0]  # (n, g, g)


class AttributeProbes(torch.nn.Module):
    """Linear read-outs of a hidden state: the shape (none + SHAPES) and the colour (none +
    COLORS) of the object in one cell (`cell_attributes`; for the autoregressive model, the cell
    that a position writes next, for the diffusion model the cell a UNet feature sits on).
    Trained beside a generator so that its state carries shape and colour apart (`train
    --ar-attributes`, `--diffusion-attributes`); never part of the saved model."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.shape = torch.nn.Linear(hidden_size, 1 + len(SHAPES))
        self.colour = torch.nn.Linear(hidden_size, 1 + len(COLORS))

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shape(hidden), self.colour(hidden)  # (..., 6), (..., 9)

    def loss(self, hidden: torch.Tensor, shape: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of naming each cell's shape and colour from its state: hidden (B, N, C),
        shape and colour (B, N) class indices (`SceneCells.attributes`)."""
        shape_logits, colour_logits = self(hidden)  # (B, N, 6), (B, N, 9)
        return F.cross_entropy(shape_logits.transpose(1, 2), shape) + F.cross_entropy(colour_logits.transpose(1, 2), colour)


def cell_attributes(scene: Scene, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each latent cell's object shape and colour as class indices (0: no object), from the
    scene's object masks (n_objects, g, g) -> (g*g,), (g*g,)."""
    shape = torch.zeros(masks[0].numel(), dtype=torch.long)
    colour = torch.zeros_like(shape)
    for obj, mask in zip(scene.objects, masks):
        here = mask.flatten() > 0.5  # (g*g,)
        shape[here] = 1 + SHAPES.index(obj.shape)
        colour[here] = 1 + COLORS.index(obj.color)
    return shape, colour


class SceneCells:
    """Where each training scene's objects are, rendered on first use and kept (about 7 ms an
    object): their masks (`object_masks`) for the grounding losses, their cells' shape and colour
    (`cell_attributes`) for the attribute probes. What both generators' training reads."""

    def __init__(self, scenes: list[Scene], grid: int):
        self.scenes, self.grid = scenes, grid
        self._cells: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # index -> masks, shape, colour

    def _of(self, i) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = int(i)
        if i not in self._cells:
            masks = object_masks(self.scenes[i], self.grid)  # (n_objects, g, g)
            self._cells[i] = (masks, *cell_attributes(self.scenes[i], masks))
        return self._cells[i]

    def masks(self, idx, device) -> list[torch.Tensor]:
        """The scenes' object masks, one (n_objects, g, g) tensor each."""
        return [self._of(i)[0].to(device) for i in idx]

    def attributes(self, idx, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The scenes' cells' shape and colour class indices, (B, g*g) each."""
        cells = [self._of(i) for i in idx]
        return torch.stack([c[1] for c in cells]).to(device), torch.stack([c[2] for c in cells]).to(device)


def conditional_rows(ids: torch.Tensor, bos_id: int) -> list[int]:
    """The rows of a batch of prompt token ids (B, P) whose caption is not empty: prompts are
    padded on the left, so an empty one ends in BOS."""
    return [b for b, row in enumerate(ids) if int(row[-1]) != bos_id]


class AttentionRecorder:
    """A cross-attention processor that computes attention as diffusers' `AttnProcessor` does
    and keeps each layer's probabilities, (B, heads, H*W, T), in `maps` (cleared by `clear`)."""

    def __init__(self):
        self.maps: list[torch.Tensor] = []

    @classmethod
    def attach(cls, unet) -> "AttentionRecorder":
        """One recorder on every cross-attention layer of the UNet ("attn2"); self-attention
        keeps its processor."""
        recorder = cls()
        unet.set_attn_processor({name: recorder if name.endswith("attn2.processor") else proc
                                 for name, proc in unet.attn_processors.items()})
        return recorder

    def clear(self) -> None:
        self.maps.clear()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if hidden_states.ndim != 3 or attention_mask is not None:
            raise ValueError("AttentionRecorder expects (B, H*W, C) states and no attention mask, as the UNet's transformer blocks give")
        batch, tokens, _ = hidden_states.shape  # (B, H*W, C)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*heads, H*W, d)
        context = encoder_hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))  # (B*heads, T, d)
        value = attn.head_to_batch_dim(attn.to_v(context))  # (B*heads, T, d)
        probs = attn.get_attention_scores(query, key, None)  # (B*heads, H*W, T)
        self.maps.append(probs.view(batch, -1, tokens, probs.shape[-1]))  # (B, heads, H*W, T)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))  # (B, H*W, C)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def object_attention(maps: list[torch.Tensor], positions: list[list[list[int]]], masks: list[torch.Tensor]):
    """Each (layer, prompt, object): the layer's attention for that prompt averaged over heads,
    (H*W, T), the object's cells at the layer's grid, (H*W,), and its word positions.

    maps: cross-attention probabilities per layer, (B, heads, H*W, T), any square H*W;
    positions[b]: each object's token positions in prompt b (`object_token_positions`; [] for
    an empty prompt); masks[b]: its objects' cells (n_objects, g, g), max-pooled to each
    layer's grid."""
    for probs in maps:
        side = int(round(probs.shape[2] ** 0.5))
        for b, objects in enumerate(positions):
            if not objects:
                continue
            where = F.adaptive_max_pool2d(masks[b][:, None], side).flatten(1)  # (n, side*side)
            attention = probs[b].mean(0)  # (H*W, T)
            for k, tokens in enumerate(objects):
                yield attention, where[k], tokens


def _mean(losses: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(losses).mean() if losses else torch.zeros(())


def grounding_loss(maps: list[torch.Tensor], positions: list[list[list[int]]], masks: list[torch.Tensor]) -> torch.Tensor:
    """The mean share of an object word's attention that falls outside its object: a word's
    map is its column of the attention, normalised over the picture (arguments as
    `object_attention`)."""
    losses = []
    for attention, where, tokens in object_attention(maps, positions, masks):
        a = attention[:, tokens]  # (H*W, w) this object's words
        losses.append(1 - (a * where[:, None]).sum(0) / a.sum(0).clamp_min(1e-8))  # (w,)
    return _mean(losses)


def reading_loss(maps: list[torch.Tensor], positions: list[list[list[int]]], masks: list[torch.Tensor]) -> torch.Tensor:
    """The mean share of an object's cells' attention that goes to words other than the
    object's own (arguments as `object_attention`). `grounding_loss` alone is met by words that
    are read little but in the right place (measured on one prompt after 800 steps with it: the
    object words got at most 3 % of the mean attention of the top or bottom half of the
    picture, in every cross-attention layer); this one asks the object's cells to read them."""
    losses = []
    for attention, where, tokens in object_attention(maps, positions, masks):
        read = attention[:, tokens].sum(1)  # (H*W,) each cell's share of attention on this object's words
        losses.append(1 - (read * where).sum(0, keepdim=True) / where.sum().clamp_min(1.0))  # (1,)
    return _mean(losses)
