"""The shapes world: the captioned 64x64 pictures the embedded models learn from.

This file is the executable form of `playground/world/SPEC.md` (its words: vocabulary.py):

* `Scene` / `SceneObject` describe a picture; `render()` draws it.
* `sample_scene()` draws a random scene (held-out colour-shape pairs can be excluded or
  forced); `caption()` writes its caption, leaving optional parts out at random.
* `parse_prompt()` turns a prompt back into a partial description (`PromptSpec`).
* `check()` says whether a picture matches a prompt by the spec's rules.

No torch here: everything is numpy and PIL, and fast enough to run in tests.

    python -m playground.world.shapes "a large red circle on the left on a yellow background" out.png
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from playground.world.vocabulary import (
    COLORS,
    HELD_OUT_PAIRS,
    JITTER,
    OPPOSITE_PAIRS,
    PALETTE,
    PLACE_PHRASES,
    PLACES,
    SHAPES,
    SIZE_SYNONYMS,
    SIZES,
    VOCABULARY,
)

IMAGE_SIZE = 64
SUPERSAMPLE = 4

_PALETTE_ARRAY = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)  # (8, 3)


# ----------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    size: str = "large"
    place: str = "center"
    offset: tuple[int, int] = (0, 0)  # jitter of the centre, in pixels


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, box: float, fill) -> None:
    """Draw one shape whose box of side `box` is centred on (cx, cy), at supersampled scale."""
    h = box / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    elif shape == "star":
        # Five points, one up; centred vertically in its box.
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, h, h * 0.4)
        ys = -np.sin(angles) * radii
        shift = (ys.max() + ys.min()) / 2
        pts = [(cx + np.cos(a) * r, cy + y - shift) for a, r, y in zip(angles, radii, ys)]
        draw.polygon(pts, fill=fill)
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 200)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        scale = box / max(x.max() - x.min(), y.max() - y.min())
        x = (x - (x.max() + x.min()) / 2) * scale
        y = (y - (y.max() + y.min()) / 2) * scale
        draw.polygon(list(zip(cx + x, cy + y)), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene) -> np.ndarray:
    """Draw a scene: a (64, 64, 3) uint8 array."""
    s = SUPERSAMPLE
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), PALETTE[scene.background])
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        px, py = PLACES[obj.place]
        cx, cy = (px + obj.offset[0]) * s, (py + obj.offset[1]) * s
        _draw_shape(draw, obj.shape, cx, cy, SIZES[obj.size] * s, PALETTE[obj.color])
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8)


# ----------------------------------------------------------------------------- captions


def sample_scene(rng: np.random.Generator, held_out: str = "exclude", num_objects: int | None = None) -> Scene:
    """A random scene. held_out: "exclude" (training), "include" (anything) or "require"
    (at least one object is a held-out colour-shape pair)."""
    n = num_objects or int(rng.integers(1, 3))
    background = COLORS[rng.integers(len(COLORS))]
    if n == 1:
        places = [list(PLACES)[rng.integers(len(PLACES))]]
    else:
        pair = OPPOSITE_PAIRS[rng.integers(2)]
        places = list(pair) if rng.random() < 0.5 else list(pair[::-1])
    must_hold_out = held_out == "require"
    forced = int(rng.integers(n)) if must_hold_out else -1
    objects = []
    for i, place in enumerate(places):
        while True:
            color = COLORS[rng.integers(len(COLORS))]
            shape = SHAPES[rng.integers(len(SHAPES))]
            if color == background:
                continue
            is_held = (color, shape) in HELD_OUT_PAIRS
            if i == forced and not is_held:
                continue
            if i != forced and held_out in ("exclude", "require") and is_held:
                continue
            break
        size = list(SIZES)[rng.integers(2)]
        offset = tuple(int(v) for v in rng.integers(-JITTER, JITTER + 1, size=2))
        objects.append(SceneObject(color, shape, size, place, offset))
    return Scene(background, tuple(objects))


def caption(scene: Scene, rng: np.random.Generator | None = None, drop: float = 0.0) -> str:
    """The caption of a scene. Each optional part (size, place, background) is left out with
    probability `drop` (needs `rng`)."""

    def keep() -> bool:
        return rng is None or drop <= 0 or rng.random() >= drop

    parts = []
    for obj in scene.objects:
        words = ["a"]
        if keep():
            words.append(obj.size)
        words += [obj.color, obj.shape]
        if keep():
            words.append(PLACE_PHRASES[obj.place])
        parts.append(" ".join(words))
    text = " and ".join(parts)
    if keep():
        text += f" on a {scene.background} background"
    return text


# ----------------------------------------------------------------------------- prompts


@dataclass
class ObjectSpec:
    color: str
    shape: str
    size: str | None = None
    place: str | None = None


@dataclass
class PromptSpec:
    """What a prompt names; None where it leaves a part free."""

    objects: list[ObjectSpec] = field(default_factory=list)
    background: str | None = None
    unknown_words: list[str] = field(default_factory=list)


def normalize_prompt(prompt: str) -> list[str]:
    """Lower case words, punctuation and extra spaces removed."""
    return re.sub(r"[^a-z0-9 ]+", " ", prompt.lower()).split()


def unknown_words(prompt: str) -> list[str]:
    """Words of a prompt outside this world's vocabulary, in order, without repeats."""
    seen: list[str] = []
    for w in normalize_prompt(prompt):
        if w not in VOCABULARY and w not in seen:
            seen.append(w)
    return seen


_SIZE_RE = "|".join(list(SIZES) + list(SIZE_SYNONYMS))
_COLOR_RE = "|".join(COLORS)
_SHAPE_RE = "|".join(SHAPES)
_PLACE_RE = "|".join(PLACE_PHRASES.values())
_OBJECT_RE = re.compile(
    rf"\ban? (?:({_SIZE_RE}) )?({_COLOR_RE}) ({_SHAPE_RE})(?: ({_PLACE_RE}))?(?= |$)"
)
_BACKGROUND_RE = re.compile(rf"\bon an? ({_COLOR_RE}) background\b")


def parse_prompt(prompt: str) -> PromptSpec:
    """Read what a prompt names. Words outside the grammar are listed in `unknown_words`."""
    # Unknown words are left out, as the prompt encoder leaves them out for the models.
    text = " ".join(w for w in normalize_prompt(prompt) if w in VOCABULARY)
    spec = PromptSpec(unknown_words=unknown_words(prompt))
    bg = _BACKGROUND_RE.search(text)
    if bg:
        spec.background = bg.group(1)
        text = text[: bg.start()] + text[bg.end() :]
    place_by_phrase = {v: k for k, v in PLACE_PHRASES.items()}
    for m in _OBJECT_RE.finditer(text):
        size = m.group(1)
        spec.objects.append(
            ObjectSpec(
                color=m.group(2),
                shape=m.group(3),
                size=SIZE_SYNONYMS.get(size, size) if size else None,
                place=place_by_phrase[m.group(4)] if m.group(4) else None,
            )
        )
    return spec


# ----------------------------------------------------------------------------- checker


def scene_from_prompt(prompt: str, like: Scene | None = None) -> Scene:
    """The scene a prompt describes. What it leaves out comes from `like` (its background and
    each object's size, place and jitter), else: large, in the center (one object) or left and
    right (two), on a white background, no jitter."""
    spec = parse_prompt(prompt)
    default_places = ["center"] if len(spec.objects) == 1 else ["left", "right"]
    objects = []
    for i, o in enumerate(spec.objects):
        old = like.objects[i] if like is not None and i < len(like.objects) else None
        size = SIZE_SYNONYMS.get(o.size, o.size) or (old.size if old else "large")
        place = o.place or (old.place if old else default_places[min(i, len(default_places) - 1)])
        objects.append(SceneObject(o.color, o.shape, size, place, old.offset if old else (0, 0)))
    return Scene(spec.background or (like.background if like else "white"), tuple(objects))


@dataclass
class CheckResult:
    ok: bool
    reasons: list[str]

    def __bool__(self) -> bool:
        return self.ok


def nearest_color_index(image: np.ndarray) -> np.ndarray:
    """(64, 64, 3) uint8 -> (64, 64) index into COLORS of each pixel's nearest palette colour."""
    d = ((image[..., None, :].astype(np.float32) - _PALETTE_ARRAY) ** 2).sum(-1)  # (H, W, 8)
    return d.argmin(-1)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Connected components (8-neighbour) of a boolean mask, largest first (equal sizes in the
    order of their first pixel, raster order), as boolean masks.

    Each pixel's label starts as its raster index and takes the smallest in its 3x3 neighbourhood,
    then the label of the pixel it names (pointer jumping: a long shape in a few steps), until none
    changes: a component ends labelled by its first pixel. 0.43 ms a mask; pages check every picture."""
    h, w = mask.shape
    outside = h * w
    labels = np.where(mask, np.arange(outside).reshape(h, w), outside)  # (h, w)
    padded, label_of = np.full((h + 2, w + 2), outside), np.full(outside + 1, outside)
    while True:
        padded[1:-1, 1:-1] = labels
        smallest = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(smallest, padded[dy : dy + h, dx : dx + w], out=smallest)
        smallest[~mask] = outside
        while True:  # pointer jumping
            label_of[:outside] = smallest.ravel()
            if np.array_equal(jumped := label_of[smallest], smallest):
                break
            smallest = jumped
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    found = [labels == first for first in np.unique(labels[mask])]  # by first pixel
    return sorted(found, key=lambda m: -int(m.sum()))


def place_region(place: str | None, size: int = IMAGE_SIZE) -> np.ndarray:
    """Where an object at `place` stands, (size, size) bool: its half of the picture, the
    middle for `center`, everywhere for no place (the checker's rule; a latent grid's size
    gives the same region on the grid)."""
    r = np.zeros((size, size), dtype=bool)
    half = size // 2
    if place is None:
        r[:] = True
    elif place == "left":
        r[:, :half] = True
    elif place == "right":
        r[:, half:] = True
    elif place == "top":
        r[:half, :] = True
    elif place == "bottom":
        r[half:, :] = True
    else:  # center: the middle half in each direction (32 x 32 of the picture)
        q = size // 4
        r[q : q + half, q : q + half] = True
    return r


@lru_cache(maxsize=None)
def _shape_mask(shape: str, size: str) -> np.ndarray:
    """The pixels a shape covers when drawn alone in the center (the renderer's own answer)."""
    img = render(Scene("black", (SceneObject("white", shape, size, "center"),)))
    return nearest_color_index(img) == COLORS.index("white")


TEMPLATE_SIZE = 24


def _normalized(mask: np.ndarray) -> np.ndarray:
    """Crop a mask to its bounding box and resize it to TEMPLATE_SIZE^2 (boolean)."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    img = Image.fromarray(crop.astype(np.uint8) * 255).resize((TEMPLATE_SIZE, TEMPLATE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(img) >= 128


@lru_cache(maxsize=None)
def _templates(size: str) -> dict[str, np.ndarray]:
    return {s: _normalized(_shape_mask(s, size)) for s in SHAPES}


def classify_shape(blob: np.ndarray) -> tuple[str, float]:
    """The shape whose outline fits a blob best, and that fit (IoU of bounding-box-normalised masks)."""
    size = "small" if blob.sum() < 2 * _shape_mask("circle", "small").sum() else "large"
    norm = _normalized(blob)
    scores = {s: float((norm & t).sum() / max((norm | t).sum(), 1)) for s, t in _templates(size).items()}
    best = max(scores, key=scores.get)
    return best, scores[best]


MIN_SHAPE_IOU = 0.6
MIN_BLOB_SHARE = 0.75


def _object_matches(obj: ObjectSpec, blob: np.ndarray) -> str | None:
    """None when a blob is the object the prompt names, else why not."""
    area = int(blob.sum())
    sizes = [obj.size] if obj.size else list(SIZES)
    if not any(_shape_mask(obj.shape, s).sum() / 2 <= area <= _shape_mask(obj.shape, s).sum() * 2 for s in sizes):
        return f"area {area} px is not that of a {obj.size or ''} {obj.shape}".replace("  ", " ")
    shape, iou = classify_shape(blob)
    if shape != obj.shape or iou < MIN_SHAPE_IOU:
        return f"outline looks like a {shape} (fit {iou:.2f}), not a {obj.shape}"
    return None


def check(image: np.ndarray | Image.Image, prompt: str | PromptSpec) -> CheckResult:
    """Does a picture match a prompt? (the spec's rules; see the module docstring)."""
    image = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    idx = nearest_color_index(image)
    reasons = []

    border = np.concatenate([idx[0], idx[-1], idx[1:-1, 0], idx[1:-1, -1]])
    bg = COLORS[np.bincount(border, minlength=len(COLORS)).argmax()]
    if spec.background and bg != spec.background:
        reasons.append(f"background is {bg}, not {spec.background}")

    used: list[np.ndarray] = []
    # Objects with a place first, so that a placeless one cannot take their blob.
    for obj in sorted(spec.objects, key=lambda o: o.place is None):
        colour_mask = (idx == COLORS.index(obj.color)) & place_region(obj.place)
        if obj.color == bg and obj.place is None:
            colour_mask &= ~_border_connected(colour_mask)
        blobs = [b for b in components(colour_mask) if not any((b & u).any() for u in used)]
        name = f"{obj.color} {obj.shape}" + (f" ({obj.place})" if obj.place else "")
        if not blobs:
            reasons.append(f"no {obj.color} pixels for the {name}")
            continue
        if obj.place is not None:
            # One blob: the largest holds (nearly) all of this colour in its region.
            total = int(colour_mask.sum())
            if blobs[0].sum() < MIN_BLOB_SHARE * total:
                reasons.append(f"the {obj.color} pixels for the {name} are not one blob")
                continue
            why = _object_matches(obj, blobs[0])
            if why:
                reasons.append(f"{name}: {why}")
            else:
                used.append(blobs[0])
        else:
            whys = []
            for b in blobs[:4]:
                why = _object_matches(obj, b)
                if why is None:
                    used.append(b)
                    break
                whys.append(why)
            else:
                reasons.append(f"{name}: {whys[0] if whys else 'not found'}")
    return CheckResult(ok=not reasons, reasons=reasons)


def _border_connected(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    for b in components(mask):
        if b[0].any() or b[-1].any() or b[:, 0].any() or b[:, -1].any():
            out |= b
    return out


def one_word_changes(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Full captions of `scene` with exactly one word changed (colour, shape, size, place or
    background), each still a valid scene of this world: used to test the checker."""
    out = []
    objs = list(scene.objects)
    for i, obj in enumerate(objs):
        others_colors = [c for c in COLORS if c != obj.color and c != scene.background]
        changes = [
            SceneObject(str(rng.choice(others_colors)), obj.shape, obj.size, obj.place),
            SceneObject(obj.color, str(rng.choice([s for s in SHAPES if s != obj.shape])), obj.size, obj.place),
            SceneObject(obj.color, obj.shape, "small" if obj.size == "large" else "large", obj.place),
        ]
        if len(objs) == 1:
            changes.append(SceneObject(obj.color, obj.shape, obj.size, str(rng.choice([p for p in PLACES if p != obj.place]))))
        for new in changes:
            changed = objs.copy()
            changed[i] = new
            out.append(caption(Scene(scene.background, tuple(changed))))
    colours = [c for c in COLORS if c != scene.background and all(o.color != c for o in objs)]
    out.append(caption(Scene(str(rng.choice(colours)), scene.objects)))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m playground.world.shapes PROMPT OUT.png   (draws the prompt's scene)")
    p = parse_prompt(sys.argv[1])
    rng = np.random.default_rng(0)
    sc = Scene(
        p.background or "white",
        tuple(SceneObject(o.color, o.shape, o.size or "large", o.place or "center") for o in p.objects),
    )
    Image.fromarray(render(sc)).save(sys.argv[2])
    print(check(render(sc), sys.argv[1]))
