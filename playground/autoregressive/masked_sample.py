"""The any-order sampler: `masked_progressive()` is a generator that yields one
`AutoregressiveFrame` per network evaluation, each saying which cells it wrote; `sample()`
drains it.

    order="random"      a random permutation of the cells, an even share written each step
    order="confidence"  MaskGIT: every masked cell is sampled, and the ones the model is surest
                        of are kept, few at first and many at the end (the cosine schedule)

The raster order (one cell a step, with a KV cache) is `sample.py`'s. Here every step reads
the whole grid as it stands, both ways, so there is no cache, and far fewer steps.

    python -m playground generate "a small blue star at the top" --order confidence --out out/
"""

from __future__ import annotations

import time

import numpy as np
import torch

from playground.autoregressive.masked_model import (DEFAULT_STEPS, MASKED_ORDERS, MaskedModel, cells_per_step, masked_inputs,
                                                    most_confident, random_order)
from playground.autoregressive.sample import NUM_CANDIDATES, filter_logits
from playground.frames import UNWRITTEN, AutoregressiveFrame
from playground.world.text import prompt_order

CHOICE_TEMPERATURE = 4.5  # MaskGIT's noise on the confidence, annealed to 0 over the steps


@torch.no_grad()
def masked_progressive(model: MaskedModel, prompt: str, order: str = "confidence", seed: int = 0, temperature: float = 0.6,
                       top_k: int = 0, top_p: float = 1.0, guidance_scale: float = 1.5, num_inference_steps: int | None = None,
                       start_codes: torch.Tensor | np.ndarray | None = None, image: np.ndarray | None = None,
                       keep: np.ndarray | None = None):
    """Generate one picture in `order`, yielding a frame after each of `num_inference_steps`
    network evaluations (default DEFAULT_STEPS[order]); temperature 0.6 and guidance 1.5, the
    best of those tried on the validation prompts (assets/EXPERIMENTS.md). Cells can be given from the start and
    kept: `start_codes` ((g*g,) ints, UNWRITTEN where to write; a branch's), or an edit's
    `image` (64, 64, 3) uint8 with `keep` ((g*g,) or (g, g) bool: the cells copied from it)."""
    start = time.perf_counter()
    cfg = model.transformer.config
    grid, n, k, offset = cfg.image_grid, cfg.image_grid**2, cfg.codebook_size, cfg.image_token_offset
    if order not in MASKED_ORDERS:
        raise ValueError(f"order must be one of {', '.join(MASKED_ORDERS)}, not {order!r}")
    generator = torch.Generator().manual_seed(int(seed))
    codes = torch.full((n,), UNWRITTEN, dtype=torch.long)  # (N,)
    if start_codes is not None:
        given = torch.as_tensor(np.asarray(start_codes), dtype=torch.long).reshape(-1)
        if len(given) != n or ((given < UNWRITTEN) | (given >= k)).any():
            raise ValueError(f"start_codes must be {n} codes in 0 to {k - 1} (or {UNWRITTEN}: written)")
        codes = given.clone()
    region = None
    if image is not None and keep is not None:
        copy = torch.as_tensor(np.asarray(keep, dtype=bool).reshape(-1))  # (N,)
        codes[copy] = model.autoencoder.latents_to_codes(model.autoencoder.encode(image[None]))[0][copy].long()
    kept = int((codes != UNWRITTEN).sum())
    if kept:
        region = (codes == UNWRITTEN).view(grid, grid).numpy()  # (g, g) the cells written
    to_write = n - kept
    if to_write == 0:
        raise ValueError("nothing to write: every cell is kept")
    steps = min(num_inference_steps or DEFAULT_STEPS[order], to_write)
    schedule = cells_per_step(order, to_write, steps)  # cells written at each step

    # 1. The prompt, and the empty prompt's for guidance: one batch of S streams.
    enc = model.prompt_encoder(prompt, order=prompt_order(cfg))
    use_cfg = guidance_scale != 1.0 and not enc.unconditional
    prompts = [""] * use_cfg + [prompt]
    prefix = torch.tensor([model.prompt_encoder(p, order=prompt_order(cfg)).input_ids for p in prompts], dtype=torch.long)  # (S, P)
    if order == "random":
        permutation = random_order(n, generator)  # (N,)
        permutation = permutation[codes[permutation] == UNWRITTEN]  # (to_write,) kept cells are not written again
    written = 0  # cells written so far
    for step, count in enumerate(schedule):
        # 2. The grid as it stands, masked where unwritten, through the model: logits for every cell.
        masked = codes == UNWRITTEN  # (N,)
        inputs = masked_inputs(prefix, codes.clamp(min=0).expand(len(prompts), n), masked.expand(len(prompts), n), cfg)  # (S, P + N)
        logits = model.transformer(input_ids=inputs).logits[:, prefix.shape[1] :, offset : offset + k].float()  # (S, N, K)
        if use_cfg:  # guidance pushes the prompt's logits away from the empty prompt's
            logits = logits[0] + guidance_scale * (logits[1] - logits[0])  # (N, K)
        else:
            logits = logits[0]  # (N, K)
        # 3. A code for every cell, sampled with the run's settings; its probability is the confidence.
        if temperature <= 0:
            probs = logits.softmax(-1)  # (N, K)
            tokens = logits.argmax(-1)  # (N,)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)  # (N, K)
            tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (N,)
        # 4. Which cells keep their code this step: the next in the random order, or the surest.
        if order == "random":
            cells = permutation[written : written + count]  # (count,)
        else:
            confidence = probs.gather(1, tokens[:, None])[:, 0].clamp_min(1e-12).log()  # (N,)
            noise = -torch.log(-torch.log(torch.rand(n, generator=generator).clamp(1e-12, 1 - 1e-12)))  # (N,) Gumbel
            confidence = confidence + CHOICE_TEMPERATURE * (1 - (step + 1) / steps) * noise
            cells = most_confident(confidence, masked, count)  # (count,)
        codes[cells] = tokens[cells]
        written += count
        first = int(cells[0])
        top = torch.topk(probs[first], min(NUM_CANDIDATES, k))
        yield AutoregressiveFrame(
            step=step + 1,
            total=steps,
            elapsed_ms=(time.perf_counter() - start) * 1000,
            network_evaluations=step + 1,
            autoencoder=model.autoencoder,
            unknown_words=enc.unknown_words,
            unconditional=enc.unconditional,
            codes=codes.clone(),
            position=first,
            token=int(tokens[first]),
            candidates=[(int(c), float(p)) for c, p in zip(top.indices, top.values)],
            grid=grid,
            kept=kept,
            region=region,
            written_now=tuple(int(c) for c in cells),
            order=order,
        )


def sample(model: MaskedModel, prompt: str, **kwargs) -> AutoregressiveFrame:
    """The final frame of `masked_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in masked_progressive(model, prompt, **kwargs):
        pass
    return frame
