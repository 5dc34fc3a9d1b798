"""The small typed frames that every sampler yields, and the pure preview functions.

A frame holds tensors (a latent, a token grid) and decodes its pictures only when asked, and
at most once: a consumer that shows one frame in ten pays for one decode in ten. It decodes
through its `autoencoder`, any object with the `Decoder` methods: the embedded models' shared
autoencoder, or a real model's own VAE / VQ model (playground/hub_diffusion.py, hub_janus.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch
from PIL import Image

UNWRITTEN = -1  # code of a grid cell the autoregressive model has not written yet
DISPLAY_SIZE = 64  # the embedded models' pictures are 64x64
MIN_BOXED_CELL = 8  # the current cell is outlined once a cell is shown at least this many pixels wide


class Decoder(Protocol):
    """What frames decode through. Pictures are (B, H, W, 3) uint8; `preview(scale)` shows
    them `display_size * scale` pixels high. A decoder without `display_size` is shown at
    DISPLAY_SIZE, one without `preview_latents` / `preview_codes` previews with `decode_latents`
    / `decode_codes`."""

    display_size: int

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> the full-quality pictures (a diffusion run's final picture)."""

    def preview_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> pictures cheap enough to show at every step (may be rougher)."""

    def decode_codes(self, codes: torch.Tensor) -> np.ndarray:
        """Codes (B, g*g) -> pictures. With `decodes_top_rows` set, also (B, r*g) -> the top r
        rows' part of the pictures."""

    def preview_codes(self, codes: torch.Tensor) -> np.ndarray:
        """As decode_codes, cheap enough for a grid still being written (optional)."""


@dataclass
class Frame:
    step: int  # 1-based: denoising steps or tokens done
    total: int
    elapsed_ms: float
    network_evaluations: int
    autoencoder: object = field(repr=False)
    unknown_words: list[str] = field(default_factory=list)
    unconditional: bool = False
    region: np.ndarray | None = field(default=None, repr=False)  # (g, g) bool: the cells an edit repaints
    regional_prompts: tuple[str, ...] = ()  # each object's own prompt, when they steer its half (regions.py)

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def fraction(self) -> float:
        return self.step / max(self.total, 1)

    @property
    def display_size(self) -> int:
        """Pixels high of the picture at preview scale 1."""
        return getattr(self.autoencoder, "display_size", DISPLAY_SIZE)

    def _preview_latents(self, latents: torch.Tensor) -> np.ndarray:
        return getattr(self.autoencoder, "preview_latents", self.autoencoder.decode_latents)(latents)

    def _cached(self, key: str, fn) -> np.ndarray:
        cache = self.__dict__.setdefault("_previews", {})
        if key not in cache:
            cache[key] = fn()
        return cache[key]


@dataclass
class DiffusionFrame(Frame):
    timestep: int = 0
    latents: torch.Tensor | None = field(default=None, repr=False)  # (1, C, g, g) the noisy state
    pred_x0: torch.Tensor | None = field(default=None, repr=False)  # (1, C, g, g) predicted clean
    skipped: int = 0  # steps of the schedule an image-to-image edit skipped (strength < 1)

    kind = "diffusion"

    def noisy_image(self) -> np.ndarray:
        """The current noisy latent, decoded (a preview until the last step): (H, W, 3) uint8."""
        decode = self.autoencoder.decode_latents if self.done else self._preview_latents
        return self._cached("noisy", lambda: decode(self.latents)[0])

    def x0_image(self) -> np.ndarray:
        """The model's predicted clean picture at this step (a preview): (H, W, 3) uint8."""
        return self._cached("x0", lambda: self._preview_latents(self.pred_x0)[0])

    def decode_previews(self) -> None:
        """Decode the noisy state and the x0 guess together, in one batch (about 40 % cheaper
        than one at a time); noisy_image() and x0_image() then return them from the cache."""
        cache = self.__dict__.setdefault("_previews", {})
        if "noisy" in cache and "x0" in cache:
            return
        noisy, x0 = self._preview_latents(torch.cat([self.latents, self.pred_x0]))
        cache.setdefault("noisy", noisy)
        cache.setdefault("x0", x0)

    def image(self) -> np.ndarray:
        """The picture this frame stands for: the final picture once done, else the x0 guess."""
        return self.noisy_image() if self.done else self.x0_image()


@dataclass
class AutoregressiveFrame(Frame):
    codes: torch.Tensor | None = field(default=None, repr=False)  # (g*g,) long, UNWRITTEN where not yet
    position: int = 0  # raster index of the token just written
    token: int = 0
    candidates: list[tuple[int, float]] = field(default_factory=list)  # top (code, probability)
    grid: int = 16
    kept: int = 0  # tokens copied from an input picture (editing), not written by the model
    written_now: tuple[int, ...] = ()  # every cell this step wrote, where a step writes several (any-order models)
    order: str = "raster"  # the order the cells are written in (masked_model.ORDERS)

    kind = "autoregressive"

    @property
    def row_col(self) -> tuple[int, int]:
        return divmod(self.position, self.grid)

    def raw_image(self) -> np.ndarray:
        """The grid decoded as it stands: (H, W, 3) uint8. Before the last token a decoder that
        can (`decodes_top_rows`) decodes only the rows down to the last one written, and one
        more, unwritten cells as code 0; the rows below stay black, for every preview hatches
        them. In raster order that halves a preview's cost on average."""
        def decode():
            partial = getattr(self.autoencoder, "decodes_top_rows", False)
            rows = decoded_rows(self.codes, self.grid, self.done) if partial else self.grid
            codes = self.codes[: rows * self.grid].clone()  # (rows * g,)
            codes[codes == UNWRITTEN] = 0
            decode_codes = self.autoencoder.decode_codes
            if not self.done:  # a preview: the cheap decode where there is one
                decode_codes = getattr(self.autoencoder, "preview_codes", decode_codes)
            picture = decode_codes(codes[None])[0]  # (rows * cell, W, 3)
            if rows == self.grid:
                return picture
            full = np.zeros((picture.shape[1],) * 2 + (3,), dtype=np.uint8)
            full[: picture.shape[0]] = picture
            return full

        return self._cached("raw", decode)

    def image(self) -> np.ndarray:
        """The final picture once done; before that the partial grid (unwritten cells hatched)."""
        return self.raw_image() if self.done else self.preview(scale=1)

    def preview(self, scale: int = 4) -> np.ndarray:
        """The partial grid shown `display_size * scale` pixels high: unwritten cells hatched,
        the current cell boxed (when cells are big enough to see a box)."""
        def draw():
            written = (self.codes != UNWRITTEN).view(self.grid, self.grid).numpy()
            image, size = self.raw_image(), self.display_size * scale
            if size % image.shape[0] == 0:  # whole-number enlargements first, so that marks stay crisp
                image = upscale(image, size // image.shape[0])
            current = None if self.done or image.shape[0] // self.grid < MIN_BOXED_CELL else (self.written_now or self.position)
            image = mark_partial_grid(image, written, current)
            if self.region is not None and image.shape[0] // self.grid >= MIN_BOXED_CELL:
                image = outline_cells(image, self.region)
            return fit(image, size)

        return self._cached(f"preview{scale}", draw)


# ----------------------------------------------------------------------------- pure previews


def decoded_rows(codes: torch.Tensor, grid: int, done: bool) -> int:
    """How many grid rows a preview decodes: all once done, else down to the last row holding a
    written cell, plus one (so the decoder sees below the frontier what a full decode would)."""
    written = (codes.view(grid, grid) != UNWRITTEN).any(1).nonzero()  # (rows written, 1)
    if done or len(written) == 0:
        return grid
    return min(grid, int(written[-1]) + 2)


def mark_partial_grid(image: np.ndarray, written: np.ndarray, position: int | tuple[int, ...] | None) -> np.ndarray:
    """Hatch the cells not yet written and outline the cell at `position` (raster index; or the
    cells at several, for a step that wrote several).

    image: (H, W, 3) uint8; written: (g, g) bool. Returns a new (H, W, 3) uint8 array.
    """
    h, w, _ = image.shape
    g = written.shape[0]
    cell = h // g
    out = image.copy()
    # Whole cells at once, through (g, g, cell, cell) views of the picture and the hatching:
    # 0.3 against 1.1 ms at 256x256 for a pixel mask.
    cells = out.reshape(g, cell, g, cell, 3).transpose(0, 2, 1, 3, 4)  # (g, g, cell, cell, 3), a view
    hatch = hatch_pattern(h, w).reshape(g, cell, g, cell).transpose(0, 2, 1, 3)  # (g, g, cell, cell)
    cells[~written] = hatch[~written][..., None]
    box = np.array([255, 0, 255], dtype=np.uint8)  # magenta: visible on every palette colour
    for index in ([] if position is None else [position] if isinstance(position, int) else position):
        r, c = divmod(index, g)
        y0, x0 = r * cell, c * cell
        out[y0, x0 : x0 + cell] = box
        out[y0 + cell - 1, x0 : x0 + cell] = box
        out[y0 : y0 + cell, x0] = box
        out[y0 : y0 + cell, x0 + cell - 1] = box
    return out


@lru_cache(maxsize=8)
def hatch_pattern(h: int, w: int) -> np.ndarray:
    """Grey diagonal stripes, (h, w) uint8, made once per size (every preview uses them)."""
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.where(((yy + xx) // 2) % 2 == 0, 200, 150).astype(np.uint8)
    stripes.flags.writeable = False
    return stripes


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so that 64x64 pictures stay crisp on a projector."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def fit(image: np.ndarray, height: int) -> np.ndarray:
    """The picture `height` pixels high: a whole-number enlargement stays crisp (nearest
    neighbour), anything else is resampled smoothly. (H, W, 3) uint8 -> (height, W', 3) uint8."""
    h, w, _ = image.shape
    if h == height:
        return image
    if height % h == 0:
        return upscale(image, height // h)
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


EDIT_OUTLINE = np.array([0, 230, 255], dtype=np.uint8)  # cyan: the edge of an edit's region


def outline_cells(image: np.ndarray, region: np.ndarray, color: np.ndarray = EDIT_OUTLINE) -> np.ndarray:
    """Draw the outline of a region of grid cells: the pixels of region cells that border a
    cell outside it (or the picture's edge, where the region is not the whole picture).

    image: (H, W, 3) uint8; region: (g, g) bool. Returns a new (H, W, 3) uint8 array.
    """
    h, w, _ = image.shape
    cell = h // region.shape[0]
    inside = np.kron(region, np.ones((cell, cell), dtype=bool))  # (H, W)
    padded = np.pad(inside, 1, constant_values=bool(region.all()))  # the edge of the picture counts, unless all is in
    neighbours_out = ~padded[:-2, 1:-1] | ~padded[2:, 1:-1] | ~padded[1:-1, :-2] | ~padded[1:-1, 2:]
    out = image.copy()
    out[inside & neighbours_out] = color
    return out
