"""The autoregressive sampler: `autoregressive_progressive()` is a generator that yields one
`AutoregressiveFrame` per token written (KV cache, temperature, top-k, top-p, classifier-free
guidance); `sample()` drains it.

    python -m playground generate "a small blue star at the top" --out out/
"""

from __future__ import annotations

import time

import numpy as np
import torch

from playground.autoregressive.kv_cache import start_decoding
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


@torch.no_grad()
def autoregressive_progressive(
    model: AutoregressiveModel,
    prompt: str,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    guidance_scale: float = 3.0,
    use_cache: bool = True,
    image: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    regional: float = 0.0,
):
    """Generate one picture, yielding an `AutoregressiveFrame` after every token it writes.

    `regional` (0 to 1): for a prompt with two objects at opposite places, how much of the
    conditional logits for a cell come from the prompt of the object whose half holds the cell
    (`regions.regional_prompts`: one more stream per object) rather than from the whole prompt.

    Editing: `image` (64, 64, 3) uint8 is turned into codes, and `keep` ((g*g,) or (g, g) bool,
    raster order) says which of them are copied: the grid is walked in raster order, a kept
    cell's code is fed to the model as if it had written it, every other cell is sampled. The
    model sees only the cells above and to the left of the one it writes. Frames come for the
    written cells only (`total` = how many); their `codes` hold the kept ones from the start.
    """
    start = time.perf_counter()
    lm, cfg = model.transformer, model.transformer.config
    enc = model.prompt_encoder(prompt, order=prompt_order(cfg))
    n = cfg.image_grid**2
    offset, k = cfg.image_token_offset, cfg.codebook_size

    # 1. The prefix: prompt + BEGIN-IMAGE, and the empty prompt's for guidance. With regional
    #    prompts, one stream per object's prompt as well, each weighted on the cells of its half.
    use_cfg = guidance_scale != 1.0 and not enc.unconditional
    texts, weights = conditional_streams(prompt, cfg.image_grid, regional)  # S prompts, (S, g, g)
    weights = torch.from_numpy(weights).flatten(1)  # (S, g*g) each stream's share of each cell
    prompts = [""] * use_cfg + texts
    seq = torch.tensor([model.prompt_encoder(p, order=prompt_order(cfg)).input_ids + [cfg.boi_token_id] for p in prompts],
                       dtype=torch.long)  # (B, P + 1)
    decoder = start_decoding(lm, seq, use_cache)  # with the KV cache: one pass over the prefix
    evaluations = 1
    generator = torch.Generator().manual_seed(int(seed))
    codes = torch.full((n,), UNWRITTEN, dtype=torch.long)  # (g*g,)
    copy = torch.zeros(n, dtype=torch.bool)  # (g*g,) True: the picture's code is kept
    region = None
    if image is not None and keep is not None:
        copy = torch.as_tensor(np.asarray(keep, dtype=bool).reshape(-1))
        codes[copy] = model.autoencoder.latents_to_codes(model.autoencoder.encode(image[None]))[0][copy]
        region = ~copy.view(cfg.image_grid, cfg.image_grid).numpy()  # (g, g) the cells written
    to_write = torch.nonzero(~copy).flatten().tolist()  # raster indices of the cells to sample
    if not to_write:
        raise ValueError("nothing to write: every cell is kept")
    feed = codes[: to_write[0]].tolist()  # codes to give the model before it writes the next cell

    for step, i in enumerate(to_write):
        # 1b. Kept cells before this one (editing): fed in one call, read but not sampled.
        if feed:
            decoder.feed(torch.tensor([feed] * len(prompts), dtype=torch.long) + offset)  # (B, L)
            evaluations += 1
        # 2. Logits over image codes only; the conditional streams are mixed by their share of
        #    this cell, and guidance pushes the mix away from the unconditional stream.
        logits = decoder.logits[:, offset : offset + k].float()  # (B, K)
        cond = (weights[:, i : i + 1] * logits[int(use_cfg) :]).sum(0, keepdim=True)  # (1, K)
        logits = logits[0:1] + guidance_scale * (cond - logits[0:1]) if use_cfg else cond  # (1, K)
        # 3. Choose the token: greedy at temperature 0, else sample from the filtered distribution.
        token, candidates = choose_token(logits, temperature, top_k, top_p, generator)
        codes[i] = token
        yield AutoregressiveFrame(
            step=step + 1,
            total=len(to_write),
            elapsed_ms=(time.perf_counter() - start) * 1000,
            network_evaluations=evaluations,
            autoencoder=model.autoencoder,
            unknown_words=enc.unknown_words,
            unconditional=enc.unconditional,
            codes=codes.clone(),
            position=i,
            token=token,
            candidates=candidates,
            grid=cfg.image_grid,
            kept=int(copy.sum()),
            region=region,
            regional_prompts=tuple(texts[-2:]) if len(texts) > 1 else (),
        )
        # 4. The token goes back in with the kept cells that follow it, before the next cell written.
        following = to_write[step + 1] if step + 1 < len(to_write) else n
        feed = [token] + codes[i + 1 : following].tolist()


def sample(model: AutoregressiveModel, prompt: str, **kwargs):
    """The final frame of `autoregressive_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in autoregressive_progressive(model, prompt, **kwargs):
        pass
    return frame
