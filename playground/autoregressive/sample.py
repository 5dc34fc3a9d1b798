"""The autoregressive sampler: `autoregressive_progressive()` is a generator that yields one
`AutoregressiveFrame` per token written (KV cache, temperature, top-k, top-p, classifier-free
guidance); `sample()` drains it.

    python -m playground generate "a small blue star at the top" --out out/
"""

from __future__ import annotations

import time

import numpy as np
import torch

from playground.autoregressive.kv_cache import BatchedGPT2Decoding, start_decoding
from playground.autoregressive.model import AutoregressiveModel
from playground.frames import UNWRITTEN, AutoregressiveFrame
from playground.world.regions import conditional_streams
from playground.world.text import prompt_order

NUM_CANDIDATES = 5  # the most likely next codes a frame reports (shown under the panel)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k logits and the smallest set whose probability reaches top-p; -inf elsewhere.
    logits: (B, K)."""
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top-p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def choose_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator):
    """The next token from logits (1, K): greedy at temperature 0, else sampled from the
    filtered distribution. Returns (token, the NUM_CANDIDATES most likely as (code, probability))."""
    if temperature <= 0:
        probs = logits.softmax(-1)
        token = int(logits.argmax(-1))
    else:
        probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)  # (1, K)
        token = int(torch.multinomial(probs, 1, generator=generator))
    top = torch.topk(probs[0], min(NUM_CANDIDATES, probs.shape[-1]))
    return token, [(int(c), float(p)) for c, p in zip(top.indices, top.values)]


class AutoregressiveRun:
    """One picture being written, whoever feeds the model: `autoregressive_progressive` alone
    with its own decoder, or `write_together` with other requests in one batch.

        run = AutoregressiveRun(model, prompt, seed=3)    # step 1: run.prefix (B, P + 1)
        while not run.done:
            tokens = run.next_tokens()                    # (B, L) to feed first, or None
            ...                                           # the model fed them on run's rows
            frame = run.advance(logits)                   # logits (B, V) after them: steps 2-4

    `regional` (0 to 1): for a prompt with two objects at opposite places, how much of the
    conditional logits for a cell come from the prompt of the object whose half holds the cell
    (`regions.regional_prompts`: one more stream per object) rather than from the whole prompt.

    Editing: `image` (64, 64, 3) uint8 is turned into codes, and `keep` ((g*g,) or (g, g) bool,
    raster order) says which of them are copied: the grid is walked in raster order, a kept
    cell's code is fed to the model as if it had written it, every other cell is sampled. The
    model sees only the cells above and to the left of the one it writes. Frames come for the
    written cells only (`total` = how many); their `codes` hold the kept ones from the start.

    Branching ("what if"): `start_codes` ((n,) ints, n <= g*g, raster order) are codes given
    directly: every cell with a code (not UNWRITTEN, -1) is kept as above and the others are
    written, so another run's first k cells make a branch that resamples from token k with its
    own seed, temperature or prompt. They override `image` where both give a cell.

    Everything a run draws comes from its own generator, so it writes the same codes however it
    is batched."""

    def __init__(self, model: AutoregressiveModel, prompt: str, seed: int = 0, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, guidance_scale: float = 3.0, use_cache: bool = True,
                 image: np.ndarray | None = None, keep: np.ndarray | None = None, regional: float = 0.0,
                 start_codes: torch.Tensor | np.ndarray | None = None):
        self.start = time.perf_counter()
        cfg = model.transformer.config
        self.model, self.grid = model, cfg.image_grid
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.guidance_scale, self.use_cache = guidance_scale, use_cache
        self.enc = model.prompt_encoder(prompt, order=prompt_order(cfg))
        n = cfg.image_grid**2
        self.offset, self.k = cfg.image_token_offset, cfg.codebook_size

        # 1. The prefix: prompt + BEGIN-IMAGE, and the empty prompt's for guidance. With regional
        #    prompts, one stream per object's prompt as well, each weighted on the cells of its half.
        self.use_cfg = guidance_scale != 1.0 and not self.enc.unconditional
        self.texts, weights = conditional_streams(prompt, cfg.image_grid, regional)  # S prompts, (S, g, g)
        self.weights = torch.from_numpy(weights).flatten(1)  # (S, g*g) each stream's share of each cell
        prompts = [""] * self.use_cfg + self.texts
        self.prefix = torch.tensor([model.prompt_encoder(p, order=prompt_order(cfg)).input_ids + [cfg.boi_token_id]
                                    for p in prompts], dtype=torch.long)  # (B, P + 1)
        self.evaluations = 1  # the prefix's pass
        self.generator = torch.Generator().manual_seed(int(seed))
        self.codes = torch.full((n,), UNWRITTEN, dtype=torch.long)  # (g*g,)
        self.copy = torch.zeros(n, dtype=torch.bool)  # (g*g,) True: the picture's code is kept
        self.region = None
        if image is not None and keep is not None:
            self.copy = torch.as_tensor(np.asarray(keep, dtype=bool).reshape(-1))
            self.codes[self.copy] = model.autoencoder.latents_to_codes(model.autoencoder.encode(image[None]))[0][self.copy]
            self.region = ~self.copy.view(cfg.image_grid, cfg.image_grid).numpy()  # (g, g) the cells written
        if start_codes is not None:  # a branch: cells given by code, kept as a picture's are
            given = torch.as_tensor(np.asarray(start_codes), dtype=torch.long).reshape(-1)  # (n,)
            if len(given) > n or ((given < UNWRITTEN) | (given >= self.k)).any():
                raise ValueError(f"start_codes must be at most {n} codes in 0 to {self.k - 1} (or {UNWRITTEN}: written)")
            cells = torch.nonzero(given != UNWRITTEN).flatten()  # (kept,)
            self.copy = self.copy.clone()  # never the caller's `keep`
            self.codes[cells], self.copy[cells] = given[cells], True
            self.region = ~self.copy.view(cfg.image_grid, cfg.image_grid).numpy()  # (g, g) the cells written
        self.to_write = torch.nonzero(~self.copy).flatten().tolist()  # raster indices of the cells to sample
        if not self.to_write:
            raise ValueError("nothing to write: every cell is kept")
        self.step = 0  # cells written
        self.pending = self.codes[: self.to_write[0]].tolist()  # codes to give the model before the next cell
        self.rows: list[int] | None = None  # its rows in a batched decoder, while it is in one

    @property
    def done(self) -> bool:
        return self.step == len(self.to_write)

    def next_tokens(self) -> torch.Tensor | None:
        """The tokens to feed every stream before the next cell (B, L): the last token written
        and the kept cells after it (editing); None when there are none (the first cell)."""
        if not self.pending:
            return None
        return torch.tensor([self.pending] * self.prefix.shape[0], dtype=torch.long) + self.offset  # (B, L)

    def advance(self, logits: torch.Tensor) -> AutoregressiveFrame:
        """Write the next cell from the logits (B, V) after the prefix and every token fed so far
        (`next_tokens` fed last), and say so in a frame."""
        if self.pending:
            self.evaluations += 1  # 1b. the kept cells and last token were fed in one call
        i, step = self.to_write[self.step], self.step
        # 2. Logits over image codes only; the conditional streams are mixed by their share of
        #    this cell, and guidance pushes the mix away from the unconditional stream.
        logits = logits[:, self.offset : self.offset + self.k].float()  # (B, K)
        cond = (self.weights[:, i : i + 1] * logits[int(self.use_cfg) :]).sum(0, keepdim=True)  # (1, K)
        logits = logits[0:1] + self.guidance_scale * (cond - logits[0:1]) if self.use_cfg else cond  # (1, K)
        # 3. Choose the token: greedy at temperature 0, else sample from the filtered distribution.
        token, candidates = choose_token(logits, self.temperature, self.top_k, self.top_p, self.generator)
        self.codes[i] = token
        frame = AutoregressiveFrame(
            step=step + 1,
            total=len(self.to_write),
            elapsed_ms=(time.perf_counter() - self.start) * 1000,
            network_evaluations=self.evaluations,
            autoencoder=self.model.autoencoder,
            unknown_words=self.enc.unknown_words,
            unconditional=self.enc.unconditional,
            codes=self.codes.clone(),
            position=i,
            token=token,
            candidates=candidates,
            grid=self.grid,
            kept=int(self.copy.sum()),
            region=self.region,
            regional_prompts=tuple(self.texts[-2:]) if len(self.texts) > 1 else (),
        )
        # 4. The token goes back in with the kept cells that follow it, before the next cell written.
        self.step += 1
        following = self.to_write[self.step] if not self.done else len(self.codes)
        self.pending = [token] + self.codes[i + 1 : following].tolist()
        return frame


@torch.no_grad()
def autoregressive_progressive(model: AutoregressiveModel, prompt: str, **kwargs):
    """Generate one picture, yielding an `AutoregressiveFrame` after every token it writes: an
    `AutoregressiveRun` (its arguments and their defaults are described there) decoded alone."""
    run = AutoregressiveRun(model, prompt, **kwargs)
    decoder = start_decoding(model.transformer, run.prefix, run.use_cache)  # with the KV cache: one pass over the prefix
    while not run.done:
        tokens = run.next_tokens()  # (B, L) or None
        if tokens is not None:
            decoder.feed(tokens)
        yield run.advance(decoder.logits)


@torch.no_grad()
def write_together(model: AutoregressiveModel, runs: list[AutoregressiveRun], decoder: BatchedGPT2Decoding) -> list[AutoregressiveFrame]:
    """One cell more of every run not done, with one forward of the model for all of them: a
    frame for each of those runs, in their order. Runs may join between calls (a run not yet in
    `decoder` joins at its first call), and leave: a finished run's rows are freed here, one
    given up on is freed by `decoder.remove(run.rows)` and left out of the next calls.
    Each run writes exactly the codes it writes alone (`BatchedGPT2Decoding`)."""
    if decoder.lm is not model.transformer:
        raise ValueError("the decoder holds another model")
    active = [run for run in runs if not run.done]
    logits: dict[int, torch.Tensor] = {}  # id(run) -> (B_r, V)
    together = []
    for run in active:
        # 1. A run joining: its prefix through the model, into free rows.
        if run.rows is None:
            if not run.use_cache:
                raise ValueError("batched runs use the KV cache")
            run.rows = decoder.add(run.prefix)
            logits[id(run)] = decoder.logits  # (B_r, V)
        tokens = run.next_tokens()  # (B_r, L) or None
        # 1b. Several tokens at once (an edit's kept cells): this run's rows in a call of their own.
        if tokens is not None and tokens.shape[1] > 1:
            logits[id(run)] = decoder.feed(run.rows, tokens)
        elif tokens is not None:
            together.append((run, tokens))
    # 2. Every other run's last token: one forward, each row at its own position.
    if together:
        out = decoder.feed([r for run, _ in together for r in run.rows], torch.cat([t for _, t in together]))  # (N, V)
        for part, (run, _) in zip(out.split([len(run.rows) for run, _ in together]), together):
            logits[id(run)] = part
    # 3-4. Each run chooses its token with its own settings and generator.
    frames = []
    for run in active:
        frames.append(run.advance(logits[id(run)]))
        if run.done:
            decoder.remove(run.rows)
            run.rows = None
    return frames


def sample(model: AutoregressiveModel, prompt: str, **kwargs):
    """The final frame of `autoregressive_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in autoregressive_progressive(model, prompt, **kwargs):
        pass
    return frame
