"""Attention maps drawn over pictures, and prompt words found among a prompt's tokens: pure
functions, no model.

A map is (g, g) floats, one per latent cell or token cell: how much that cell attends to a
prompt word. NaN marks a cell with no value (an autoregressive cell not written yet); it is
left as the picture shows it. The map is scaled to its own largest value, coloured from black
through red and yellow to white ("hot"), enlarged nearest-neighbour to the picture's size, so
that each cell stays one visible square, and blended over the picture.

    python -m playground.attention_overlay picture.png out.png     # a test pattern over a picture
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from playground.world.text import CANONICAL

OVERLAY_ALPHA = 0.6  # the heat map's share of each blended pixel: the picture stays readable under it


def normalised(attention: np.ndarray) -> np.ndarray:
    """The map scaled to [0, 1] by its largest finite value; NaN stays NaN. (g, g) -> (g, g)."""
    m = np.asarray(attention, dtype=np.float64)
    finite = np.isfinite(m)
    if not finite.any():
        return m.copy()
    low = min(0.0, float(m[finite].min()))  # maps are probabilities, but a negative value must not wrap round
    top = float(m[finite].max()) - low
    out = (m - low) / top if top > 0 else np.where(finite, 0.0, np.nan)
    return np.where(finite, np.clip(out, 0.0, 1.0), np.nan)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """"Hot" colours for values in [0, 1]: black, red, yellow, white. (...) -> (..., 3) uint8."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def enlarge(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (g, g, ...) grid as (height, width, ...), each cell a block of equal pixels (nearest
    neighbour, also where the size is not a whole multiple of g)."""
    g_rows, g_cols = grid.shape[:2]
    if height % g_rows == 0 and width % g_cols == 0:  # the usual case, and the fastest
        return grid.repeat(height // g_rows, axis=0).repeat(width // g_cols, axis=1)
    rows = np.arange(height) * g_rows // height  # (H,) the cell row of each pixel row
    cols = np.arange(width) * g_cols // width  # (W,)
    return grid[rows][:, cols]


def overlay(image: np.ndarray, attention: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The heat map of `attention` (g, g) blended over `image` (H, W, 3) uint8; cells that are
    NaN are left as they are. Returns a new (H, W, 3) uint8 array. Integer arithmetic in
    1/256ths (a frame's overlay is drawn while it streams: under 1 ms at 256 x 256)."""
    h, w, _ = image.shape
    m = normalised(attention)
    g_rows, g_cols = m.shape
    a = int(round(alpha * 256))
    weight = np.where(np.isfinite(m), a, 0).astype(np.uint16)[..., None]  # (g, g, 1) the heat's share, 0 where NaN
    heat = heat_colours(m).astype(np.uint16) * weight + 128  # (g, g, 3), with the rounding
    if h % g_rows == 0 and w % g_cols == 0:  # cells of whole pixels: broadcast over (g, cell, g, cell, 3) blocks
        blocks = image.reshape(g_rows, h // g_rows, g_cols, w // g_cols, 3).astype(np.uint16)
        blended = blocks * (256 - weight)[:, None, :, None] + heat[:, None, :, None]
        return (blended >> 8).astype(np.uint8).reshape(h, w, 3)
    blended = image.astype(np.uint16) * (256 - enlarge(weight, h, w)) + enlarge(heat, h, w)  # (H, W, 3)
    return (blended >> 8).astype(np.uint8)


def word_positions(tokens: list[str], word: str) -> list[int]:
    """The indices of `word` among a prompt's tokens (as the model reads them: lower case),
    every occurrence; [] when it is not there."""
    word = (word or "").strip().lower()
    return [i for i, t in enumerate(tokens) if t.lower() == word]


class WordNotInPrompt(ValueError):
    """The chosen word is not one of the prompt's tokens (its message is one line for people)."""


def chosen_word_positions(tokens: list[str], word: str) -> list[int]:
    """The positions of a chosen word among a prompt's tokens, a synonym counting ("big" is
    "large"); WordNotInPrompt with a one-line message when it is not there (or none is chosen)."""
    word = (word or "").strip().lower()
    found = word_positions(tokens, CANONICAL.get(word, word)) if word else []
    if not found:
        raise WordNotInPrompt(f"“{word}” is not a word of this prompt" if word else "no word chosen")
    return found


def mean_over(maps: np.ndarray, positions: list[int]) -> np.ndarray:
    """The mean of the maps (T, g, g) at token positions: one (g, g) map for a word that occurs
    more than once (or is split into several tokens)."""
    return np.asarray(maps)[list(positions)].mean(axis=0)


if __name__ == "__main__":
    picture = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
    pattern = np.add.outer(np.arange(16), np.arange(16)).astype(float)  # brighter towards the bottom right
    Image.fromarray(overlay(picture, pattern)).save(sys.argv[2])
