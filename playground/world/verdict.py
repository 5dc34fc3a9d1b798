"""Does a picture match its prompt, part by part: the shapes-world checker's answer explained.

`check()` (shapes.py) says yes or no, with reasons. `verdict()` keeps that answer and adds a
mark for each part the prompt names: each object's colour, shape, size and place, and the
background. Each part is judged on the blob that best stands for its object (of its colour;
in its place, with its outline, and largest, preferred in that order), so a wrong shape does
not also mark the colour wrong. `verdict_markdown()` writes it as one line per object for the
page; `model_note()` is what to say instead for a model from outside the shapes world.

Pure numpy, no model: the page shows it under each final picture, the experiment counts it.

    python -m playground.world.verdict "a large red circle on the left on a yellow background" picture.png
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from playground.world.shapes import (
    MIN_BLOB_SHARE,
    MIN_SHAPE_IOU,
    ObjectSpec,
    PromptSpec,
    _shape_mask,
    check,
    classify_shape,
    components,
    nearest_color_index,
    parse_prompt,
    place_region,
)
from playground.world.vocabulary import COLORS, PLACE_PHRASES, SIZES

PARTS = ("colour", "shape", "size", "place", "background")
NOTHING_TO_CHECK = "Nothing to check: the prompt names no shape or background of the shapes world."
EMPTY_PROMPT = "Nothing to check: the prompt is empty, so any picture will do."


@dataclass(frozen=True)
class PartVerdict:
    part: str  # one of PARTS
    named: str  # the prompt's words for it: "red", "circle", "large", "on the left", "yellow background"
    ok: bool
    seen: str = ""  # what the picture shows instead, when not ok


@dataclass
class Verdict:
    ok: bool  # the checker's own answer (shapes.check): the one the experiment counts
    objects: list[list[PartVerdict]] = field(default_factory=list)  # each named object's parts
    background: PartVerdict | None = None
    reasons: list[str] = field(default_factory=list)  # the checker's

    @property
    def checkable(self) -> bool:
        return bool(self.objects) or self.background is not None

    @property
    def parts(self) -> list[PartVerdict]:
        return [p for obj in self.objects for p in obj] + ([self.background] if self.background else [])


def _area_range(shape: str, size: str | None) -> tuple[float, float]:
    """The areas the checker accepts for a shape of a size (any size when None)."""
    areas = [int(_shape_mask(shape, s).sum()) for s in ([size] if size else SIZES)]
    return min(areas) / 2, max(areas) * 2


def _shape_fits(blob: np.ndarray, shape: str) -> tuple[bool, str]:
    found, fit = classify_shape(blob)
    return bool(found == shape and fit >= MIN_SHAPE_IOU), found


def _in_place(blob: np.ndarray, place: str | None) -> bool:
    return place is None or bool((blob & place_region(place)).sum() >= MIN_BLOB_SHARE * blob.sum())


def _where(blob: np.ndarray) -> str:
    """Where a blob stands, in the prompt's words: the narrowest place that holds it, else the
    place that holds most of it."""
    return PLACE_PHRASES[max(PLACE_PHRASES, key=lambda p: (_in_place(blob, p), -place_region(p).sum() * _in_place(blob, p),
                                                           (blob & place_region(p)).sum()))]


def object_parts(idx: np.ndarray, obj: ObjectSpec, background: str) -> list[PartVerdict]:
    """Colour, shape, size (if named) and place (if named) of one object, on a picture's
    nearest-palette-colour indices `idx`."""
    mask = idx == COLORS.index(obj.color)
    low, _ = _area_range(obj.shape, None)
    blobs = [b for b in components(mask) if b.sum() >= low]
    if obj.color == background:  # the background itself is not the object
        blobs = [b for b in blobs if not (b[0].any() or b[-1].any() or b[:, 0].any() or b[:, -1].any())]
    if not blobs:
        parts = [PartVerdict("colour", obj.color, False, f"no {obj.color} shape")]
        parts.append(PartVerdict("shape", obj.shape, False, f"no {obj.color} shape"))
        if obj.size:
            parts.append(PartVerdict("size", obj.size, False, "nothing to measure"))
        if obj.place:
            parts.append(PartVerdict("place", PLACE_PHRASES[obj.place], False, "nothing to place"))
        return parts
    blob = max(blobs, key=lambda b: (_in_place(b, obj.place), _shape_fits(b, obj.shape)[0], int(b.sum())))
    fits, found = _shape_fits(blob, obj.shape)
    parts = [PartVerdict("colour", obj.color, True),
             PartVerdict("shape", obj.shape, fits, "" if fits else f"looks like a {found}")]
    if obj.size:
        low, high = _area_range(obj.shape, obj.size)
        area = int(blob.sum())
        ok = bool(low <= area <= high)
        seen = "" if ok else ("too small" if area < low else "too large") + f": {area} px"
        parts.append(PartVerdict("size", obj.size, ok, seen))
    if obj.place:
        ok = _in_place(blob, obj.place)
        parts.append(PartVerdict("place", PLACE_PHRASES[obj.place], ok, "" if ok else _where(blob)))
    return parts


def verdict(image: np.ndarray | Image.Image, prompt: str | PromptSpec) -> Verdict:
    """The checker's answer for a picture and prompt, with a mark for each named part."""
    image = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    result = check(image, spec)
    idx = nearest_color_index(image)
    border = np.concatenate([idx[0], idx[-1], idx[1:-1, 0], idx[1:-1, -1]])
    bg = COLORS[np.bincount(border, minlength=len(COLORS)).argmax()]
    background = None
    if spec.background:
        ok = bool(bg == spec.background)
        background = PartVerdict("background", f"{spec.background} background", ok, "" if ok else f"{bg} background")
    return Verdict(ok=result.ok, objects=[object_parts(idx, o, bg) for o in spec.objects],
                   background=background, reasons=list(result.reasons))


def part_markdown(p: PartVerdict) -> str:
    return f"{p.named} ✓" if p.ok else f"{p.named} ✗ ({p.seen})" if p.seen else f"{p.named} ✗"


def verdict_markdown(v: Verdict, prompt: str = "") -> str:
    """The verdict in a few lines of markdown: the answer, then each object's parts."""
    if not v.checkable:
        return EMPTY_PROMPT if not prompt.strip() else NOTHING_TO_CHECK
    lines = ["**✓ matches the prompt**" if v.ok else "**✗ does not match the prompt**"]
    for i, obj in enumerate(v.objects):
        label = f"object {i + 1}: " if len(v.objects) > 1 else ""
        lines.append(label + " · ".join(part_markdown(p) for p in obj))
    if v.background is not None:
        lines.append(part_markdown(v.background))
    if not v.ok and all(p.ok for p in v.parts):  # every part is there, yet the whole is not
        lines.append("the checker: " + "; ".join(v.reasons))
    return "  \n".join(lines)


def model_note(model: str) -> str:
    """What the verdict line says for a model from outside the shapes world."""
    return f"No verdict: the checker knows only the shapes world, not the pictures of {model}."


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m playground.world.verdict PROMPT PICTURE.png")
    picture = Image.open(sys.argv[2]).convert("RGB").resize((64, 64), Image.Resampling.BOX)
    print(verdict_markdown(verdict(picture, sys.argv[1]), sys.argv[1]).replace("  \n", "\n"))
