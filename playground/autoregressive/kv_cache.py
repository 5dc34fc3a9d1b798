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
- `BatchedGPT2Decoding`, the same GPT-2 arithmetic for many requests at once, each row at its
  own position (slots added and removed as requests come and go), each row's logits the
  bit-for-bit same as `GPT2Decoding`'s (`sample.write_together` uses it).
- `CachedDecoding`, any other causal LM with the KV cache: transformers' own cache.
- `Recomputing` (use_cache=False): the whole sequence every time, the baseline of the KV cache's
  speed-up (`python -m playground.evaluation.benchmark`).

The prompt's padding is part of what the model was trained on, so nothing is masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float, mask) -> torch.Tensor:
    """q (B, H, L, hd) over keys and values (B, H, T, hd) -> (B, H, L, hd). For one new token, two
    small matrix products (the fused kernel costs more at these sizes); for several, `mask`
    (L, T) is the causal mask within the new ones."""
    if q.shape[2] == 1:
        weights = (q @ keys.transpose(-1, -2)).mul_(scale).softmax(-1)  # (B, H, 1, T)
        return weights @ values  # (B, H, 1, hd)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, L, hd)


def causal_mask(start: int, end: int, device) -> torch.Tensor:
    """(L, end): each of the new tokens at start..end-1 sees every earlier position and itself."""
    return torch.arange(start, end, device=device)[:, None] >= torch.arange(end, device=device)[None]


def _onednn_linear_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


class RowInvariantLinear:
    """x (N, in) -> x W^T + b (N, out), each row the same bits however many rows x has.

    Why: one product over thirty requests' rows must give each request exactly what its own
    product gives it alone, or a sampled token tips now and then. torch.addmm does not: MKL
    takes another kernel below 4 rows, so the last bits of a row depend on the product's size.
    oneDNN's linear on a weight packed once (torch.ops.mkldnn, the kernels torch's compiler uses
    on CPU) gives every row the same result from 1 row up, with 1 thread or 2, and at 2 rows is
    as fast as addmm (measured on these machines; tests/test_batching_autoregressive.py checks
    it). Where oneDNN is missing (or the model is not on the CPU), rows are padded to a multiple
    of 4 for addmm: the same guarantee on these CPUs, slower below 4 rows."""

    PAD_TO = 4

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight.detach(), None if bias is None else bias.detach()  # (out, in), (out,)
        onednn = (self.weight.device.type == "cpu" and self.weight.dtype == torch.float32
                  and _onednn_linear_available())
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight) if onednn else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")  # (N, out)
        n, extra = x.shape[0], -x.shape[0] % self.PAD_TO
        if extra:
            x = torch.cat([x, x.new_zeros(extra, x.shape[1])])  # (N + extra, in)
        return F.linear(x, self.weight, self.bias)[:n]


class GPT2Arithmetic:
    """GPT-2's blocks written with functional calls on the model's own weights, shared by the
    one-batch and the many-sequence decoders: a module call costs ~10 us of Python and a token
    makes ~40 of them; the tanh GELU is one call instead of transformers' six-operation formula.
    Who owns the keys and values is the caller's."""

    def __init__(self, lm):
        c = lm.config
        self.lm, self.heads, self.width = lm, c.n_head, c.n_embd
        self.eps = c.layer_norm_epsilon
        self.scale = (c.n_embd // c.n_head) ** -0.5
        self.gelu_tanh = c.activation_function in ("gelu_new", "gelu_pytorch_tanh")
        # Every product through RowInvariantLinear; GPT-2's Conv1D weights are (in, out).
        conv = lambda m: RowInvariantLinear(m.weight.t(), m.bias)  # noqa: E731
        self.linears = [(conv(b.attn.c_attn), conv(b.attn.c_proj), conv(b.mlp.c_fc), conv(b.mlp.c_proj))
                        for b in lm.transformer.h]
        self.lm_head = RowInvariantLinear(lm.lm_head.weight, None)  # GPT-2's head has no bias

    @staticmethod
    def supports(lm) -> bool:
        """Whether `lm` is a GPT-2 whose attention this class reproduces."""
        c = lm.config
        return (c.model_type == "gpt2" and c.scale_attn_weights and not c.scale_attn_by_inverse_layer_idx
                and not c.reorder_and_upcast_attn and not getattr(c, "add_cross_attention", False))

    def buffers(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed keys and values for `rows` sequences of the longest length."""
        c = self.lm.config
        like = self.lm.lm_head.weight  # the model's dtype and device
        keys = torch.zeros((c.n_layer, rows, c.n_head, c.n_positions, c.n_embd // c.n_head),
                           dtype=like.dtype, device=like.device)  # (layers, rows, H, max T, hd)
        return keys, torch.zeros_like(keys)

    def blocks(self, x: torch.Tensor, b: int, n: int, attend) -> torch.Tensor:
        """The hidden states x (B*L, D) of B rows' L new tokens through every block.
        attend(layer, q, k, v) stores k and v (B, H, L, hd) and returns q's attention (B, H, L, hd).
        A row's result never depends on the other rows (RowInvariantLinear)."""
        d = self.width
        for i, block in enumerate(self.lm.transformer.h):
            qkv_proj, attn_proj, up, down = self.linears[i]
            h = F.layer_norm(x, (d,), block.ln_1.weight, block.ln_1.bias, self.eps)  # (B*L, D)
            q, k, v = qkv_proj(h).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, L, hd) each
            a = attend(i, q, k, v).transpose(1, 2).reshape(b * n, d)  # (B*L, D)
            x = x + attn_proj(a)  # residual
            h = F.layer_norm(x, (d,), block.ln_2.weight, block.ln_2.bias, self.eps)
            h = up(h)  # (B*L, 4D)
            h = F.gelu(h, approximate="tanh") if self.gelu_tanh else block.mlp.act(h)
            x = x + down(h)  # residual
        return x

    def last_hidden(self, x: torch.Tensor, b: int, n: int) -> torch.Tensor:
        """The final layer norm of each row's last new token: x (B*L, D) -> (B, D)."""
        t = self.lm.transformer
        return F.layer_norm(x.view(b, n, self.width)[:, -1], (self.width,), t.ln_f.weight, t.ln_f.bias, self.eps)


class GPT2Decoding(GPT2Arithmetic):
    """A GPT-2 (transformers `GPT2LMHeadModel`) decoded with preallocated keys and values, all
    B rows at the same position (`GPT2Arithmetic` is the arithmetic)."""

    def __init__(self, lm, prefix: torch.Tensor):
        super().__init__(lm)
        self.keys, self.values = self.buffers(prefix.shape[0])  # (layers, B, H, max T, hd)
        self.length = 0  # positions written
        self.feed(prefix)

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L) at the next L positions -> the logits after the last one (B, V)."""
        t = self.lm.transformer
        b, n = tokens.shape
        start, end = self.length, self.length + n
        x = (t.wte(tokens) + t.wpe.weight[start:end]).view(b * n, self.width)  # (B*L, D)
        mask = causal_mask(start, end, tokens.device) if n > 1 else None  # (L, end)

        def attend(i, q, k, v):
            self.keys[i, :, :, start:end] = k
            self.values[i, :, :, start:end] = v
            return attention(q, self.keys[i, :, :, :end], self.values[i, :, :, :end], self.scale, mask)

        x = self.blocks(x, b, n, attend)
        self.length = end
        self.logits = self.lm_head(self.last_hidden(x, b, n))  # (B, V)
        return self.logits


class BatchedGPT2Decoding(GPT2Arithmetic):
    """Many sequences in one GPT-2, each at its own position: slots in preallocated keys and
    values, given out and taken back as requests come and go (continuous batching).

        decoder = BatchedGPT2Decoding(lm)
        rows = decoder.add(prefix)         # prefix (R, P): R new rows, prefilled; decoder.logits (R, V)
        decoder.feed(rows, tokens)         # tokens (N, L) for any N rows -> (N, V) after the last
        decoder.remove(rows)               # their slots are free again

    A row's logits are bit-for-bit `GPT2Decoding`'s for the same sequence, fed in the same
    pieces: the matrix products over every row give each row what it gets alone
    (`RowInvariantLinear`), and attention is done per stretch of neighbouring slots at the same position, over that
    position's keys only (no padding, which would change the softmax's sums): requests that
    start together sit side by side and share one product.
    """

    def __init__(self, lm, rows: int = 8):
        super().__init__(lm)
        self.keys, self.values = self.buffers(rows)  # (layers, rows, H, max T, hd)
        self.lengths = [0] * rows  # positions written, per slot
        self.used = [False] * rows
        self.logits = None

    @property
    def rows(self) -> list[int]:
        """The slots in use."""
        return [s for s, used in enumerate(self.used) if used]

    def _free_slots(self, r: int) -> int:
        """The first of r free neighbouring slots, the buffers grown if there are none."""
        run = 0
        for s, used in enumerate(self.used):
            run = 0 if used else run + 1
            if run == r:
                return s - r + 1
        tail = len(self.used) - run  # free slots at the end are used first
        grow = max(len(self.used), tail + r - len(self.used))
        more_keys, more_values = self.buffers(grow)
        self.keys = torch.cat([self.keys, more_keys], 1)
        self.values = torch.cat([self.values, more_values], 1)
        self.lengths += [0] * grow
        self.used += [False] * grow
        return tail

    @torch.no_grad()
    def add(self, prefix: torch.Tensor) -> list[int]:
        """New rows for the sequences prefix (R, P), fed the prefix in one pass: their slots.
        `self.logits` (R, V) are the logits after it."""
        r = prefix.shape[0]
        first = self._free_slots(r)
        rows = list(range(first, first + r))
        for s in rows:
            self.used[s], self.lengths[s] = True, 0
        self.feed(rows, prefix)
        return rows

    def remove(self, rows) -> None:
        """Frees the rows' slots (what their keys held is overwritten by the next rows there)."""
        for s in [int(r) for r in rows]:
            if not self.used[s]:
                raise ValueError(f"row {s} is not in use")
            self.used[s], self.lengths[s] = False, 0

    def _groups(self, slots: list[int]) -> list[list[int]]:
        """Attention groups of the slots (in increasing order): [first, last + 1 in that order,
        first slot, position], neighbouring slots at the same position together."""
        groups: list[list[int]] = []
        for at, s in enumerate(slots):
            if groups and groups[-1][2] + at - groups[-1][0] == s and groups[-1][3] == self.lengths[s]:
                groups[-1][1] = at + 1
            else:
                groups.append([at, at + 1, s, self.lengths[s]])
        return groups

    @torch.no_grad()
    def feed(self, rows, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (N, L) for the given rows, each at its own next L positions -> the logits after
        each row's last one (N, V), in the rows' order."""
        rows = [int(r) for r in rows]
        n, l = tokens.shape
        if len(set(rows)) != n or not all(self.used[s] for s in rows):
            raise ValueError("feed needs one row of tokens for each of distinct rows in use")
        if max(self.lengths[s] for s in rows) + l > self.keys.shape[3]:
            raise ValueError("a row would pass the model's longest sequence")
        order = sorted(range(n), key=rows.__getitem__)  # through the model by slot
        slots = [rows[j] for j in order]
        groups = self._groups(slots)
        index = torch.tensor(order)
        positions = torch.tensor([self.lengths[s] for s in slots])[:, None] + torch.arange(l)  # (N, L)
        t = self.lm.transformer
        x = (t.wte(tokens[index]) + t.wpe.weight[positions]).view(n * l, self.width)  # (N*L, D)

        def attend(i, q, k, v):
            out = []
            for first, last, slot, start in groups:
                span, end = slice(slot, slot + last - first), start + l
                self.keys[i, span, :, start:end] = k[first:last]
                self.values[i, span, :, start:end] = v[first:last]
                mask = causal_mask(start, end, tokens.device) if l > 1 else None  # (L, end)
                out.append(attention(q[first:last], self.keys[i, span, :, :end], self.values[i, span, :, :end],
                                     self.scale, mask))  # (rows, H, L, hd)
            return out[0] if len(out) == 1 else torch.cat(out)

        x = self.blocks(x, n, l, attend)
        logits = self.lm_head(self.last_hidden(x, n, l))  # (N, V) in the model's order
        for s in slots:
            self.lengths[s] += l
        if order == sorted(order):
            self.logits = logits
        else:
            self.logits = torch.empty_like(logits)
            self.logits[index] = logits
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
