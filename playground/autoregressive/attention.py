"""Where the autoregressive model looks for each prompt token: each written cell's attention to
the prompt, from the transformer's own weights.

The cell at raster index j is chosen by the query of the token before it (BEGIN-IMAGE for the
first cell, else the code of cell j-1): that query's attention weights over the prompt's
positions, averaged over heads and layers, are the cell's row of the maps. The sequence is
prompt + BEGIN-IMAGE + the codes in raster order, exactly what the sampler fed (conditional
stream only). Attention is causal, so a cell's row never changes once written: `PromptAttention`
feeds only the codes it has not seen yet, and a whole picture costs one pass over its tokens,
however many frames are shown. Unwritten cells are NaN.

Only a GPT-2 can be read this way (`GPT2Arithmetic`, the KV-cache decoder's arithmetic, with the
weights kept); another model gives `AttentionUnavailable`.

    python -m playground generate "a small blue star at the top" --attention-word star --out out/
"""

from __future__ import annotations

import numpy as np
import torch

from playground.attention_overlay import chosen_word_positions, mean_over
from playground.autoregressive.kv_cache import GPT2Arithmetic
from playground.autoregressive.model import AutoregressiveModel
from playground.frames import UNWRITTEN
from playground.world.text import prompt_order


class AttentionUnavailable(ValueError):
    """This model's attention cannot be read (its message is one line for people)."""


class PromptAttention(GPT2Arithmetic):
    """A GPT-2 fed one sequence a piece at a time, keeping each new position's attention to the
    first `prompt_len` positions, averaged over heads and layers."""

    def __init__(self, lm, prefix: torch.Tensor, prompt_len: int):
        if not GPT2Arithmetic.supports(lm):
            raise AttentionUnavailable("attention maps: not available for this model")
        super().__init__(lm)
        self.prompt_len = prompt_len
        self.keys, self.values = self.buffers(1)  # (layers, 1, H, max T, hd)
        self.length = 0  # positions fed
        self.rows: list[torch.Tensor] = []  # (L, prompt_len) per feed
        self.feed(prefix)

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor) -> None:
        """Tokens (1, L) at the next L positions; their attention rows are kept."""
        t = self.lm.transformer
        b, n = tokens.shape
        start, end = self.length, self.length + n
        x = (t.wte(tokens) + t.wpe.weight[start:end]).view(b * n, self.width)  # (L, D)
        future = ~(torch.arange(start, end)[:, None] >= torch.arange(end)[None])  # (L, end) True: not yet seen
        to_prompt = torch.zeros(n, self.prompt_len)  # (L, P) summed over layers

        def attend(i, q, k, v):
            nonlocal to_prompt
            self.keys[i, :, :, start:end] = k
            self.values[i, :, :, start:end] = v
            scores = (q @ self.keys[i, :, :, :end].transpose(-1, -2)) * self.scale  # (1, H, L, end)
            weights = scores.masked_fill(future, float("-inf")).softmax(-1)  # (1, H, L, end)
            to_prompt = to_prompt + weights[0, :, :, : self.prompt_len].float().mean(0)  # (L, P)
            return weights @ self.values[i, :, :, :end]  # (1, H, L, hd)

        self.blocks(x, b, n, attend)
        self.length = end
        self.rows.append(to_prompt / len(t.h))

    def attention_rows(self) -> torch.Tensor:
        """Every fed position's attention to the prompt (length, P)."""
        return torch.cat(self.rows)


class AutoregressiveAttention:
    """One prompt's attention maps on the embedded autoregressive model: `maps(frame)` for the
    frames of one run (its codes are fed as they grow; frames of another run need another one)."""

    def __init__(self, model: AutoregressiveModel, prompt: str):
        cfg = model.transformer.config
        self.grid = cfg.image_grid
        self.offset = cfg.image_token_offset
        self.encoded = model.prompt_encoder(prompt, order=prompt_order(cfg))
        ids = self.encoded.input_ids
        self.prompt_len = len(ids)
        words = self.encoded.words
        self.tokens = [""] * (len(ids) - len(words)) + words  # each prompt position's word ("": padding, BOS)
        prefix = torch.tensor([ids + [cfg.boi_token_id]], dtype=torch.long)  # (1, P + 1)
        self.reader = PromptAttention(model.transformer, prefix, self.prompt_len)

    def positions(self, word: str) -> list[int]:
        """The prompt positions of `word` (a synonym counts); WordNotInPrompt (a ValueError)."""
        return chosen_word_positions(self.tokens, word)

    @torch.no_grad()
    def maps(self, frame, feed: bool = True) -> np.ndarray:
        """Every prompt position's map at a frame (P, g, g): cells up to the one just written
        have their attention, later ones NaN. `feed=False`: no new computation, only the cells
        whose rows are known already (a page over its time budget)."""
        n = self.grid * self.grid
        last = frame.position if frame.step else -1  # raster index of the last cell with a value
        fed_codes = self.reader.length - self.prompt_len - 1  # codes fed so far
        needed = last  # cell `last` is chosen by the query after codes[:last]
        if not feed:
            last = min(last, fed_codes)
        elif needed > fed_codes:
            codes = frame.codes[fed_codes:needed]  # (new,)
            if (codes == UNWRITTEN).any():
                raise ValueError("a frame's codes have a gap before its last cell")
            self.reader.feed((codes + self.offset)[None])  # (1, new)
        rows = self.reader.attention_rows()[self.prompt_len : self.prompt_len + last + 1]  # (last + 1, P)
        out = np.full((n, self.prompt_len), np.nan, dtype=np.float32)  # (g*g, P)
        out[: last + 1] = rows.numpy()
        return out.T.reshape(self.prompt_len, self.grid, self.grid)  # (P, g, g)

    def word_map(self, frame, word: str) -> np.ndarray:
        """The map of one word at a frame, (g, g): non-negative where written, NaN elsewhere."""
        return mean_over(self.maps(frame), self.positions(word))
