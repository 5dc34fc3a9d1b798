"""Training data: rendered shapes-world scenes, cached once, and captions drawn per batch.

    python -m playground.world.data 40000     # renders data/shapes-40000-seed0.npz (about a minute)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from playground.world.shapes import Scene, SceneObject, caption, render, sample_scene

DATA_DIR = Path("data")
CAPTION_DROP = 0.15  # chance that each optional part of a caption is left out (0.3 left the models vaguer)
UNCONDITIONAL_P = 0.1  # chance that a training caption is empty (for classifier-free guidance)


def build_dataset(n: int, seed: int = 0, folder: Path = DATA_DIR) -> tuple[np.ndarray, list[Scene]]:
    """n rendered training scenes (held-out pairs excluded): images (n, 64, 64, 3) uint8."""
    path = folder / f"shapes-{n}-seed{seed}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            images, scenes = z["images"], [scene_from_json(s) for s in json.loads(str(z["scenes"]))]
        return images, scenes
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, held_out="exclude") for _ in range(n)]
    images = np.stack([render(s) for s in scenes])
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, scenes=json.dumps([scene_to_json(s) for s in scenes]))
    return images, scenes


def scene_to_json(scene: Scene) -> dict:
    return {"background": scene.background, "objects": [o.__dict__ for o in scene.objects]}


def scene_from_json(d: dict) -> Scene:
    objs = tuple(SceneObject(o["color"], o["shape"], o["size"], o["place"], tuple(o["offset"])) for o in d["objects"])
    return Scene(d["background"], objs)


def training_captions(scenes: list[Scene], rng: np.random.Generator, drop: float = CAPTION_DROP,
                      word_drop: float = 0.0, word_rng: np.random.Generator | None = None) -> list[str]:
    """Captions for a batch: each optional part dropped with probability `drop`, some left empty.
    With `word_drop`, each object's colour word and shape word are also left out, each with that
    probability, drawn from `word_rng` (so that the captions are otherwise those drawn without it)."""
    captions = ["" if rng.random() < UNCONDITIONAL_P else caption(s, rng, drop=drop) for s in scenes]
    if word_drop <= 0:
        return captions
    if word_rng is None:
        raise ValueError("word_drop needs word_rng")
    return [drop_object_words(c, s, word_rng, word_drop) if c else c for c, s in zip(captions, scenes)]


def drop_object_words(text: str, scene: Scene, rng: np.random.Generator, p: float) -> str:
    """The caption with each object's colour word and shape word left out, each with probability
    p: "a red star and a blue circle" may become "a star and a blue". Practice at reading a
    colour without its usual shapes, and a shape without its usual colours, for prompts that pair
    them in ways never seen."""
    parts = text.split(" and ")  # one part an object, in the scene's order (caption())
    for i, obj in enumerate(scene.objects):
        words = parts[i].split()
        j = next(k for k in range(len(words) - 1) if words[k : k + 2] == [obj.color, obj.shape])
        keep_color, keep_shape = rng.random() >= p, rng.random() >= p
        words[j : j + 2] = [obj.color] * keep_color + [obj.shape] * keep_shape
        parts[i] = " ".join(words)
    return " and ".join(parts)


if __name__ == "__main__":
    imgs, _ = build_dataset(int(sys.argv[1]) if len(sys.argv) > 1 else 40000)
    print(imgs.shape)
