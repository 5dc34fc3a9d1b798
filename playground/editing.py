"""Editing: the pictures and masks an edit starts from, and the pure helpers both samplers use.

An edit is a picture (64 x 64 RGB), a new prompt and optionally a painted region (a mask).

    diffusion        noises the picture's latent part of the way (`strength`) and denoises it
                     under the new prompt; with a region, only the region is repainted (the
                     rest is the picture's latent, re-noised to each step's noise level).
    autoregressive   walks the 16 x 16 token grid in raster order, copying the picture's token
                     where it is kept and writing a new one elsewhere: keep the first
                     `keep_rows` rows, or everything outside the region. The model sees only
                     what lies above and to the left of the cell it writes.

Everything here is numpy/PIL only (no model): loading and converting what people upload,
masks at pixel, latent and token resolution, strength to start step, and the small texts the
front ends show about them.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from playground.errors import EditInputError

PICTURE_SIZE = 64  # the models' pictures: 64 x 64 RGB
MAX_SIDE = 8192  # larger pictures are refused before they are decoded
MAX_PIXELS = 40_000_000


@dataclass
class EditInput:
    """What an edit starts from: the picture, the region to repaint (None: all of it) and notes
    on what was converted on the way (shown to the user)."""

    picture: np.ndarray  # (64, 64, 3) uint8
    mask: np.ndarray | None = None  # (64, 64) bool, True where to repaint; None: no region painted
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The input as text (PNG, base64): a few kB, enough to compute the edit again."""
        return {"picture": png_base64(self.picture),
                "mask": None if self.mask is None else png_base64(self.mask.astype(np.uint8) * 255)}

    @classmethod
    def from_dict(cls, d: dict) -> "EditInput":
        mask = d.get("mask")
        return cls(picture=load_picture(from_base64(d["picture"]))[0],
                   mask=None if mask is None else np.asarray(from_base64(mask).convert("L")) > 127)


# ----------------------------------------------------------------------------- pictures


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def from_base64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def open_image(source, what: str = "picture") -> Image.Image:
    """A PIL image from a path, PIL image or array (H, W[, C]); EditInputError when it is not a
    picture, or too large to decode."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)) or source.size == 0:
            raise EditInputError(f"the {what} must be an (H, W), (H, W, 3) or (H, W, 4) array, not {source.shape}")
        array = source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source
        if array.dtype != np.uint8:
            array = to_uint8(array)
        return Image.fromarray(array)
    if not isinstance(source, (str, Path)) and not hasattr(source, "read"):
        raise EditInputError(f"the {what} must be a picture file, not {type(source).__name__}")
    name = Path(source).name if isinstance(source, (str, Path)) else "given"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except FileNotFoundError:
        raise EditInputError(f"no such {what} file: {source}") from None
    except IsADirectoryError:
        raise EditInputError(f"the {what} {source} is a folder, not a picture") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EditInputError(f"the {what} {name} is not a picture this program can read "
                             "(PNG, JPEG, WebP, GIF, BMP ...)") from None
    except OSError as e:
        raise EditInputError(f"cannot read the {what} {source}: {e.strerror or e}") from None
    check_size(image.size, what)
    return image


def check_size(size: tuple[int, int], what: str = "picture") -> None:
    w, h = size
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise EditInputError(f"the {what} is {w:,} x {h:,} pixels; at most {MAX_SIDE:,} a side and "
                             f"{MAX_PIXELS // 1_000_000} million pixels (it is shrunk to 64 x 64 anyway)")
    if w < 1 or h < 1:
        raise EditInputError(f"the {what} is empty ({w} x {h} pixels)")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit or float pixel values to 0..255 (floats in 0..1 taken as fractions)."""
    a = np.asarray(array, dtype=np.float64)
    if a.dtype.kind == "f" and np.nanmax(a, initial=0) <= 1.0 and np.issubdtype(array.dtype, np.floating):
        a = a * 255
    elif array.dtype in (np.uint16, np.int32, np.uint32, np.int64) or a.max(initial=0) > 255:
        a = a / (65535 if a.max(initial=0) > 255 else 255) * 255
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Any PIL mode to RGB: transparency laid on white, 16-bit and float scaled to 8 bits."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        notes.append(f"{mode} pixels scaled to 8 bits")
        return Image.fromarray(to_uint8(np.asarray(image))).convert("RGB")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() < 255:
            notes.append("transparent parts laid on white")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def square_and_resize(image: Image.Image, size: int, notes: list[str], resample=Image.Resampling.BOX) -> Image.Image:
    """The centred square of a picture, resized to size x size."""
    w, h = image.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
        notes.append(f"cropped {w} x {h} to its centred {side} x {side} square")
    if image.size != (size, size):
        notes.append(f"resized {image.size[0]} x {image.size[1]} to {size} x {size}")
        image = image.resize((size, size), resample)
    return image


def load_picture(source) -> tuple[np.ndarray, list[str]]:
    """A picture to edit from a path, PIL image or array: ((64, 64, 3) uint8, notes on what
    was converted). EditInputError when it cannot be used."""
    notes: list[str] = []
    image = open_image(source)
    try:
        image.load()
        rgb = to_rgb(image, notes)
    except (OSError, ValueError) as e:  # truncated or corrupt files
        raise EditInputError(f"the picture cannot be decoded: {e}") from None
    return np.asarray(square_and_resize(rgb, PICTURE_SIZE, notes), dtype=np.uint8), notes


def load_mask(source, picture_size: tuple[int, int] | None = None) -> tuple[np.ndarray | None, list[str]]:
    """The region to repaint from a mask picture: ((64, 64) bool or None when nothing is
    painted, notes). Painted means opaque where the mask has transparency (a brush layer),
    else brighter than mid-grey (white on black). `picture_size`: (w, h) of the picture it
    belongs to. A mask of the picture's shape is cropped and resized as the picture is; a
    square one is taken as painted on the 64 x 64 picture the models see (the page's canvas);
    any other is refused."""
    notes: list[str] = []
    image = open_image(source, "mask")
    try:
        image.load()
        if "A" in image.getbands() and np.asarray(image.getchannel("A")).min() < 255:
            painted = np.asarray(image.getchannel("A")) > 0
        else:
            grey = image if image.mode in ("I;16", "I;16B", "I;16L", "I", "F") else image.convert("L")
            painted = to_uint8(np.asarray(grey)) > 127
    except (OSError, ValueError) as e:
        raise EditInputError(f"the mask cannot be decoded: {e}") from None
    if picture_size is not None and tuple(picture_size) != image.size:
        (pw, ph), (mw, mh) = picture_size, image.size
        if pw * mh != ph * mw and mw != mh:
            raise EditInputError(f"the mask is {mw} x {mh} pixels but the picture is {pw} x {ph}: "
                                 "paint the mask on the picture itself (the same shape, or square: on the 64 x 64 picture)")
        notes.append(f"mask resized from {mw} x {mh} to the picture's {pw} x {ph}")
    mask_image = Image.fromarray(painted.astype(np.uint8) * 255)
    mask = np.asarray(square_and_resize(mask_image, PICTURE_SIZE, [], Image.Resampling.BOX)) > 0
    return (mask if mask.any() else None), notes


def load_edit(picture, mask=None) -> EditInput:
    """The picture and (optional) mask of an edit, checked and converted together."""
    if picture is None:
        raise EditInputError("give a picture to edit (upload one, draw one, or press “Edit this” under a result)")
    image = open_image(picture)
    size = image.size
    array, notes = load_picture(image)
    region = None
    if mask is not None:
        region, mask_notes = load_mask(mask, size)
        notes += mask_notes
    return EditInput(array, region, notes)


# ----------------------------------------------------------------------------- masks and grids


def mask_to_grid(mask: np.ndarray, grid: int) -> np.ndarray:
    """A pixel mask (H, W) bool to cells (grid, grid) bool: a cell is in the region when any
    of its pixels is (so a thin stroke still repaints the cells it touches)."""
    h, w = mask.shape
    if h % grid or w % grid:
        raise ValueError(f"a {h} x {w} mask does not divide into a {grid} x {grid} grid")
    return mask.reshape(grid, h // grid, grid, w // grid).any(axis=(1, 3))  # (g, g)


def kept_rows_mask(keep_rows: int, grid: int) -> np.ndarray:
    """(grid * grid,) bool in raster order: True for the tokens of the first `keep_rows` rows."""
    keep = np.zeros((grid, grid), dtype=bool)
    keep[: max(0, int(keep_rows))] = True
    return keep.reshape(-1)


def autoregressive_keep(grid: int, keep_rows: int, region: np.ndarray | None) -> np.ndarray:
    """Which tokens the autoregressive model copies from the picture, (grid * grid,) bool in
    raster order: everything outside a painted region (cells (grid, grid)); without one, the
    first `keep_rows` rows."""
    if region is not None:
        return ~region.reshape(-1)
    return kept_rows_mask(keep_rows, grid)


def start_step(strength: float, num_inference_steps: int) -> int:
    """How many of the schedule's steps an image-to-image edit skips (diffusers' rule, at
    least one step is run): strength 1 skips none (starts from pure noise), 0.5 half."""
    run = min(num_inference_steps, max(1, int(num_inference_steps * float(strength))))
    return num_inference_steps - run


def strength_timeline(strength: float, num_inference_steps: int, width: int = 20) -> str:
    """A one-line picture of where an edit enters the denoising schedule (markdown)."""
    skipped = start_step(strength, num_inference_steps)
    cut = round(width * skipped / num_inference_steps)
    bar = "░" * cut + "█" * (width - cut)
    return (f"noise `{bar}` clean · strength {strength:.2f}: skips {skipped} of {num_inference_steps} steps, "
            f"denoises {num_inference_steps - skipped} (█)")


def region_summary(keep: np.ndarray, grid: int) -> str:
    """What the autoregressive model keeps and writes, in words."""
    kept = int(keep.sum())
    written = keep.size - kept
    rows = kept // grid
    if np.array_equal(keep, kept_rows_mask(rows, grid)):
        kept_text = f"keeps rows 0–{rows - 1} ({kept} tokens)" if rows else "keeps nothing"
        return f"{kept_text} and writes {written}"
    return f"keeps {kept} tokens outside the region and writes the {written} inside it"


def sampler_kwargs(settings, edit: EditInput | None, grid: int) -> tuple[dict, dict]:
    """The keyword arguments of the two samplers for a run: the settings' own, plus, for an
    edit, the picture, the diffusion region and the cells the autoregressive model keeps."""
    diffusion, autoregressive = settings.diffusion_kwargs(), settings.autoregressive_kwargs()
    if edit is None:
        diffusion.pop("strength", None)
        return diffusion, autoregressive
    region = None if edit.mask is None else mask_to_grid(edit.mask, grid)
    diffusion.update(image=edit.picture, mask=edit.mask)
    autoregressive.update(image=edit.picture, keep=autoregressive_keep(grid, settings.keep_rows, region))
    return diffusion, autoregressive
