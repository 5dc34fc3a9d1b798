"""Feeding tokens to the autoregressive model a few at a time: one interface, three ways.

    decoder = start_decoding(lm, prefix, use_cache=True)  # prefix (B, P) token ids
    decoder.logits                                         # (B, V) after the prefix's last token
    decoder.feed(tokens)                                   # tokens (B, L) -> (B, V) after the last

- `GPT2Decoding`, a GPT-2 with the KV cache (the embedded model): each token goes through the
  model's own layers and weights, its keys and values written into buffers allocated once for
  the longest sequence. The arithmetic is transformers' GPT-2 (tests/test_samplers.py compares
  the logits); what it leaves out is the bookkeeping of the generic forward (cache objects,
  mask building, output classes), which cost more than the arithmetic: a token (4 layers, batch
  2) takes 2.1 against 3.6 ms through `GPT2LMHeadModel.forward` with its DynamicCache on the
  2-core machine.
- `CachedDecoding`, any other causal LM with the KV cache: transformers' own cache.
- `Recomputing` (use_cache=False): the whole sequence every time, the baseline of the KV cache's
  speed-up (`python -m playground.benchmark`).

The prompt's padding is part of what the model was trained on, so nothing is masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class GPT2Decoding:
    """A GPT-2 (transformers `GPT2LMHeadModel`) decoded with preallocated keys and values."""

    def __init__(self, lm, prefix: torch.Tensor):
        c = lm.config
        self.lm, self.heads, self.width = lm, c.n_head, c.n_embd
        b = prefix.shape[0]
        shape = (c.n_layer, b, c.n_head, c.n_positions, c.n_embd // c.n_head)
        like = lm.lm_head.weight  # the model's dtype and device
        self.keys = torch.zeros(shape, dtype=like.dtype, device=like.device)  # (layers, B, H, max T, hd)
        self.values = torch.zeros_like(self.keys)
        self.length = 0  # positions written
        self.feed(prefix)

    @staticmethod
    def supports(lm) -> bool:
        """Whether `lm` is a GPT-2 whose attention this class reproduces."""
        c = lm.config
        return (c.model_type == "gpt2" and c.scale_attn_weights and not c.scale_attn_by_inverse_layer_idx
                and not c.reorder_and_upcast_attn and not getattr(c, "add_cross_attention", False))

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L) at the next L positions -> the logits after the last one (B, V)."""
        t = self.lm.transformer
        b, n = tokens.shape
        start, end = self.length, self.length + n
        positions = torch.arange(start, end, device=tokens.device)
        x = t.wte(tokens) + t.wpe(positions)  # (B, L, D)
        # Each new token sees every earlier position and itself (a causal mask within the new ones).
        mask = None if n == 1 else positions[:, None] >= torch.arange(end, device=tokens.device)[None]  # (L, end)
        for i, block in enumerate(t.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(self.width, dim=2)  # (B, L, D) each
            q = q.view(b, n, self.heads, -1).transpose(1, 2)  # (B, H, L, hd)
            self.keys[i, :, :, start:end] = k.view(b, n, self.heads, -1).transpose(1, 2)
            self.values[i, :, :, start:end] = v.view(b, n, self.heads, -1).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, self.keys[i, :, :, :end], self.values[i, :, :, :end],
                                               attn_mask=mask)  # (B, H, L, hd)
            x = x + block.attn.c_proj(a.transpose(1, 2).reshape(b, n, self.width))  # (B, L, D)
            x = x + block.mlp(block.ln_2(x))
        self.length = end
        self.logits = self.lm.lm_head(t.ln_f(x[:, -1]))  # (B, V)
        return self.logits


class CachedDecoding:
    """Any causal LM, with transformers' own KV cache."""

    def __init__(self, lm, prefix: torch.Tensor):
        self.lm = lm
        self.out = lm(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True)
        self.logits = self.out.logits[:, -1]

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        self.out = self.lm(input_ids=tokens, cache=self.out.cache, use_cache=True)
        self.logits = self.out.logits[:, -1]
        return self.logits


class Recomputing:
    """Any causal LM, the whole sequence through the model at every step (no cache)."""

    def __init__(self, lm, prefix: torch.Tensor):
        self.lm, self.seq = lm, prefix[:, :0]
        self.feed(prefix)

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        self.seq = torch.cat([self.seq, tokens], dim=1)  # (B, T)
        self.logits = self.lm(input_ids=self.seq, attention_mask=torch.ones_like(self.seq), use_cache=False).logits[:, -1]
        return self.logits


def start_decoding(lm, prefix: torch.Tensor, use_cache: bool = True):
    """The prefix (B, P) fed to `lm`, ready for more tokens (see the module's docstring)."""
    if not use_cache:
        return Recomputing(lm, prefix)
    return GPT2Decoding(lm, prefix) if GPT2Decoding.supports(lm) else CachedDecoding(lm, prefix)
