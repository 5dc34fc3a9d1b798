"""Feeding tokens to the autoregressive model a few at a time: one interface, three ways.

    decoder = start_decoding(lm, prefix, use_cache=True)  # prefix (B, P) token ids
    decoder.logits                                         # (B, V) after the prefix's last token
    decoder.feed(tokens)                                   # tokens (B, L) -> (B, V) after the last

- `GPT2Decoding`, a GPT-2 with the KV cache (the embedded model): each token goes through the
  model's own layers and weights, its keys and values written into buffers allocated once for
  the longest sequence. The arithmetic is transformers' GPT-2 (tests/test_samplers.py compares
  the logits); what it leaves out is the bookkeeping of the generic forward (cache objects,
  mask building, output classes, module calls), which cost more than the arithmetic at this
  size (4 layers, batch 2): measured on 2 CPU cores, a token takes about 0.6 of the time of
  `GPT2LMHeadModel.forward` with its DynamicCache.
- `CachedDecoding`, any other causal LM with the KV cache: transformers' own cache.
- `Recomputing` (use_cache=False): the whole sequence every time, the baseline of the KV cache's
  speed-up (`python -m playground.evaluation.benchmark`).

The prompt's padding is part of what the model was trained on, so nothing is masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class GPT2Decoding:
    """A GPT-2 (transformers `GPT2LMHeadModel`) decoded with preallocated keys and values.

    `feed` is GPT-2's arithmetic written with functional calls on the model's own weights: a
    module call costs ~10 us of Python and a token makes ~40 of them; attention for one new
    token is two small matrix products (the fused kernel costs more at these sizes); the tanh
    GELU is one call instead of transformers' six-operation formula."""

    def __init__(self, lm, prefix: torch.Tensor):
        c = lm.config
        self.lm, self.heads, self.width = lm, c.n_head, c.n_embd
        self.eps = c.layer_norm_epsilon
        self.scale = (c.n_embd // c.n_head) ** -0.5
        self.gelu_tanh = c.activation_function in ("gelu_new", "gelu_pytorch_tanh")
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
        d = self.width
        start, end = self.length, self.length + n
        x = (t.wte(tokens) + t.wpe.weight[start:end]).view(b * n, d)  # (B*L, D)
        # Each new token sees every earlier position and itself (a causal mask within the new ones).
        mask = None
        if n > 1:
            mask = torch.arange(start, end, device=tokens.device)[:, None] >= torch.arange(end, device=tokens.device)[None]  # (L, end)
        for i, block in enumerate(t.h):
            attn, mlp = block.attn, block.mlp  # GPT-2's Conv1D weights are (in, out): x @ W + b
            h = F.layer_norm(x, (d,), block.ln_1.weight, block.ln_1.bias, self.eps)  # (B*L, D)
            qkv = torch.addmm(attn.c_attn.bias, h, attn.c_attn.weight)  # (B*L, 3D)
            q, k, v = qkv.view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, L, hd) each
            self.keys[i, :, :, start:end] = k
            self.values[i, :, :, start:end] = v
            keys, values = self.keys[i, :, :, :end], self.values[i, :, :, :end]  # (B, H, T, hd)
            if n == 1:
                weights = (q @ keys.transpose(-1, -2)).mul_(self.scale).softmax(-1)  # (B, H, 1, T)
                a = weights @ values  # (B, H, 1, hd)
            else:
                a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, L, hd)
            a = a.transpose(1, 2).reshape(b * n, d)  # (B*L, D)
            x = torch.addmm(x, a, attn.c_proj.weight).add_(attn.c_proj.bias)  # residual
            h = F.layer_norm(x, (d,), block.ln_2.weight, block.ln_2.bias, self.eps)
            h = torch.addmm(mlp.c_fc.bias, h, mlp.c_fc.weight)  # (B*L, 4D)
            h = F.gelu(h, approximate="tanh") if self.gelu_tanh else mlp.act(h)
            x = torch.addmm(x, h, mlp.c_proj.weight).add_(mlp.c_proj.bias)  # residual
        self.length = end
        last = F.layer_norm(x.view(b, n, d)[:, -1], (d,), t.ln_f.weight, t.ln_f.bias, self.eps)  # (B, D)
        self.logits = F.linear(last, self.lm.lm_head.weight)  # (B, V); GPT-2's head has no bias
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
