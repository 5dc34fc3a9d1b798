"""The embedded autoregressive model: a transformers GPT-2 (GPT2LMHeadModel) that writes the
shared autoencoder's codes one at a time, in raster order, after the prompt:

    [PAD.. BOS w1 .. wn] [BEGIN-IMAGE] [c_0 c_1 ... c_255]        (24 + 1 + 256 tokens)

One vocabulary holds the prompt words (ids 0..V-1), BEGIN-IMAGE (id V) and the image codes
(ids V+1 .. V+K). GPT-2's learned absolute positions tell each image token which grid cell it
is (with a fixed-length prompt, position 25 + 16 * row + col), which a small model learns far
faster than the same from relative (RoPE) positions. `autoregressive_progressive()` is the sampler: a generator that yields one
`AutoregressiveFrame` per token, with the KV cache (`decoding.py`), temperature, top-k, top-p and
classifier-free guidance (a conditional and an unconditional stream, batched).

    python -m playground generate "a small blue star at the top" --out out/
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

from playground.autoencoder.model import SharedAutoencoder
from playground.world.text import MAX_PROMPT_TOKENS, PromptEncoder

# The word order this model is trained on (saved in its config as prompt_order; text.place_first).
PROMPT_ORDER = "place_first"


@dataclass
class AutoregressiveConfig:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024


def build_transformer(cfg: AutoregressiveConfig, text_vocab_size: int, codebook_size: int, grid: int, pad_id: int, bos_id: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=text_vocab_size + 1 + codebook_size,
        n_positions=MAX_PROMPT_TOKENS + 1 + grid * grid,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu_pytorch_tanh",  # GPT-2's tanh GELU (gelu_new) as one kernel: the same function, faster to train
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
    )
    # Where the image lives in the vocabulary, saved with the config.
    config.boi_token_id = text_vocab_size
    config.image_token_offset = text_vocab_size + 1
    config.codebook_size = codebook_size
    config.image_grid = grid
    config.prompt_order = PROMPT_ORDER
    return GPT2LMHeadModel(config)


def grow_depth(lm: GPT2LMHeadModel, num_layers: int) -> GPT2LMHeadModel:
    """A deeper copy of a trained GPT-2 that computes exactly the same function: new blocks are
    spread evenly between the old ones (4 -> 6: old, old, new, old, old, new), with their
    output projections zeroed, so each starts as the identity on the residual stream and
    training goes on from what the smaller model knew."""
    old = lm.config.n_layer
    if num_layers <= old:
        return lm
    config = lm.config.__class__.from_dict(lm.config.to_dict())
    config.n_layer = num_layers
    grown = GPT2LMHeadModel(config)
    slots = [i * num_layers // old for i in range(old)]  # where each old block goes; 4 -> 6: 0, 1, 3, 4
    state = {k: v for k, v in lm.state_dict().items() if not k.startswith("transformer.h.")}
    for i, slot in enumerate(slots):
        for k, v in lm.transformer.h[i].state_dict().items():
            state[f"transformer.h.{slot}.{k}"] = v
    missing = grown.load_state_dict(state, strict=False).missing_keys
    for j in set(range(num_layers)) - set(slots):
        block = grown.transformer.h[j]
        for proj in (block.attn.c_proj, block.mlp.c_proj):  # the residual branches start at zero
            torch.nn.init.zeros_(proj.weight)
            torch.nn.init.zeros_(proj.bias)
    assert all(k.startswith("transformer.h.") or k == "lm_head.weight" for k in missing), missing
    return grown


def training_sequences(prompt_ids: torch.Tensor, codes: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and labels: prompt_ids (B, P), codes (B, N) -> (B, P + 1 + N) each.
    Only image codes are learned (labels are -100 on the prompt and BEGIN-IMAGE)."""
    b, p = prompt_ids.shape
    boi = torch.full((b, 1), config.boi_token_id, dtype=torch.long)
    input_ids = torch.cat([prompt_ids, boi, codes + config.image_token_offset], dim=1)  # (B, T)
    labels = input_ids.clone()
    labels[:, : p + 1] = -100
    return input_ids, labels


@dataclass
class AutoregressiveModel:
    """Everything the autoregressive sampler needs, loaded."""

    transformer: PreTrainedModel  # any causal LM laid out as above (GPT-2 here)
    prompt_encoder: PromptEncoder
    autoencoder: SharedAutoencoder
