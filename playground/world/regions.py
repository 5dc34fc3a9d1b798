"""Regional prompts: a two-object prompt split into one prompt per object, each with its half.

A small diffusion model draws one named object well but binds two badly: the prompt reaches the
picture as one code, and the network must work out which object goes where, so it often gives
the objects each other's place (see `grounding.py`). When a prompt places its two objects at opposite places
("... on the left and ... on the right"), the sampler can do that work instead: each object's
own prompt ("a large red circle on the left on a yellow background") also steers its half of
the latent grid (regional prompting, as in Composable Diffusion and MultiDiffusion's region
prompts). The network still paints the whole picture from noise (or token by token); it is
told, half by half, which object that half holds. On for diffusion by default (0.5,
settings.py): it is what lets it put two objects in their places. The autoregressive model
reads each object's place first and gains a few points at most, for twice the token streams:
off by default for its time (settings.py; the figures are in assets/README.md).

Pure functions, no model:

    regional_prompts("a red circle on the left and a blue star on the right on a white background", grid=16)
    # [("a red circle on the left on a white background", left-half mask (16, 16)),
    #  ("a blue star on the right on a white background", right-half mask)]
    conditional_streams(prompt, grid=16, regional=0.5)
    # the prompts a sampler runs (the whole prompt, then each object's) and their weights (3, 16, 16)
"""

from __future__ import annotations

import numpy as np

from playground.world.shapes import ObjectSpec, parse_prompt, place_region
from playground.world.vocabulary import OPPOSITE_PAIRS, PLACE_PHRASES


def object_prompt(obj: ObjectSpec, background: str | None) -> str:
    """One object's prompt in the world's grammar, with the scene's background if named."""
    words = ["a"] + ([obj.size] if obj.size else []) + [obj.color, obj.shape]
    if obj.place:
        words.append(PLACE_PHRASES[obj.place])
    if background:
        words += ["on", "a", background, "background"]
    return " ".join(words)


def regional_prompts(prompt: str, grid: int) -> list[tuple[str, np.ndarray]] | None:
    """For a prompt naming exactly two objects at opposite places (left and right, or top and
    bottom), each object's prompt and its half of the grid; the halves cover the grid once.
    None for any other prompt (one object, no places, places that do not split the picture)."""
    spec = parse_prompt(prompt)
    if len(spec.objects) != 2:
        return None
    places = tuple(o.place for o in spec.objects)
    if places not in OPPOSITE_PAIRS and places[::-1] not in OPPOSITE_PAIRS:
        return None
    return [(object_prompt(o, spec.background), place_region(o.place, grid)) for o in spec.objects]


def conditional_streams(prompt: str, grid: int, regional: float) -> tuple[list[str], np.ndarray]:
    """The prompts a sampler's conditional prediction is made of, and each one's share of every
    cell, (S, grid, grid) float32 summing to 1 on each cell. Without regional prompts (`regional`
    0, or a prompt they do not apply to): the prompt alone. With them: the prompt at 1 - regional
    (left out at 1), and each object's prompt at `regional` on its half."""
    regions = regional_prompts(prompt, grid) if regional > 0 else None
    if not regions:
        return [prompt], np.ones((1, grid, grid), dtype=np.float32)
    prompts = [prompt] if regional < 1 else []
    weights = [np.full((grid, grid), 1.0 - regional, dtype=np.float32)] if regional < 1 else []
    for text, half in regions:
        prompts.append(text)
        weights.append(regional * half.astype(np.float32))
    return prompts, np.stack(weights)
