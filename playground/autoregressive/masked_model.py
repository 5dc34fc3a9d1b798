"""The embedded model that writes the shared autoencoder's codes in any order: a transformers
BERT (BertForMaskedLM) that reads the prompt and the grid as it stands, every cell seeing
every other, and predicts the codes of the cells still masked (MaskGIT):

    [PAD.. BOS w1 .. wn] [c_0 MASK MASK c_3 ... MASK]        (24 + 256 tokens)

One vocabulary, laid out as the raster model's (`model.py`): the prompt words (ids 0..V-1),
MASK (id V, where the raster model has BEGIN-IMAGE) and the codes (ids V+1 .. V+K). Trained to
fill a random share of masked cells (a cosine-distributed mask ratio, as MaskGIT), one model
can be sampled in any order (`masked_sample.py`): a random one, a few cells a step, or
confidence first, the cells it is surest of in each of about a dozen steps. The order
functions here are pure and tested without a model.

    python -m playground generate "a small blue star at the top" --order confidence --out out/
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM

from playground.autoencoder.model import SharedAutoencoder
from playground.autoregressive.model import AutoregressiveConfig  # the same sizes as the raster model's
from playground.world.text import MAX_PROMPT_TOKENS, PromptEncoder

ORDERS = ("raster", "random", "confidence")  # how the codes are written; raster is model.py's
MASKED_ORDERS = ORDERS[1:]
MASKED_FOLDER = "masked"  # the model's folder in assets/
DEFAULT_STEPS = {"random": 32, "confidence": 12}  # network evaluations (without guidance's twin)


def build_masked_transformer(cfg: AutoregressiveConfig, text_vocab_size: int, codebook_size: int, grid: int, pad_id: int) -> BertForMaskedLM:
    config = BertConfig(
        vocab_size=text_vocab_size + 1 + codebook_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=MAX_PROMPT_TOKENS + grid * grid,
        type_vocab_size=1,
        pad_token_id=pad_id,
    )
    # Where the image lives in the vocabulary, saved with the config.
    config.mask_token_id = text_vocab_size
    config.image_token_offset = text_vocab_size + 1
    config.codebook_size = codebook_size
    config.image_grid = grid
    config.prompt_order = "as_written"  # every word sees every other: no reordering needed
    return BertForMaskedLM(config)


# ----------------------------------------------------------------------------- pure order functions


def mask_ratio(progress: np.ndarray | float) -> np.ndarray | float:
    """MaskGIT's cosine schedule: the share of cells still masked after a fraction `progress`
    (0 to 1) of the steps. 1 at the start, 0 at the end, few cells early and many late."""
    return np.cos(np.pi / 2 * np.asarray(progress, dtype=np.float64))


def cells_per_step(order: str, cells: int, steps: int) -> list[int]:
    """How many cells each of `steps` steps writes (they sum to `cells`; each is at least 1).
    confidence: MaskGIT's cosine schedule (few first, many last); random: as even as possible."""
    if order not in MASKED_ORDERS:
        raise ValueError(f"order must be one of {', '.join(MASKED_ORDERS)}, not {order!r}")
    if not 1 <= steps <= cells:
        raise ValueError(f"steps must be 1 to {cells}, not {steps}")
    if order == "random":
        base, extra = divmod(cells, steps)
        return [base + (i < extra) for i in range(steps)]
    masked = np.floor(mask_ratio(np.arange(1, steps + 1) / steps) * cells).astype(int)  # still masked after each step
    written = cells - masked
    # At least one cell a step: the k-th step has written at least k cells, and leaves room for the rest.
    written = np.maximum(written, np.arange(1, steps + 1))
    written = np.minimum(written, cells - (steps - np.arange(1, steps + 1)))
    return np.diff(np.concatenate([[0], written])).tolist()


def random_order(cells: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the cells (raster indices), drawn from the run's generator."""
    return torch.randperm(cells, generator=generator)


def most_confident(confidence: torch.Tensor, masked: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` masked cells of highest confidence (raster indices, most confident first).
    confidence, masked: (N,). Cells already written are never chosen."""
    scores = confidence.masked_fill(~masked, float("-inf"))  # (N,)
    return torch.topk(scores, count).indices


def training_mask(batch: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Which cells a training example hides: a mask ratio r = cos(pi/2 * u), u ~ U(0, 1), at least
    one cell, the cells chosen at random. Returns (B, N) bool."""
    u = torch.rand(batch, generator=generator)  # (B,)
    count = torch.clamp(torch.ceil(torch.cos(math.pi / 2 * u) * cells), min=1).long()  # (B,)
    ranks = torch.rand(batch, cells, generator=generator).argsort(1).argsort(1)  # (B, N) each cell's place in a random order
    return ranks < count[:, None]


def masked_inputs(prompt_ids: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor, config) -> torch.Tensor:
    """The model's input: prompt_ids (B, P), codes (B, N) and mask (B, N) bool -> (B, P + N),
    masked cells as MASK, the others as their codes."""
    image = torch.where(mask, torch.full_like(codes, config.mask_token_id), codes + config.image_token_offset)  # (B, N)
    return torch.cat([prompt_ids, image], dim=1)


@dataclass
class MaskedModel:
    """Everything the any-order sampler needs, loaded."""

    transformer: BertForMaskedLM  # any masked LM laid out as above
    prompt_encoder: PromptEncoder
    autoencoder: SharedAutoencoder
