"""The Edit tab's examples (pictures drawn by the shapes world, each with a new prompt), and
the folder gradio caches the Generate examples in."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from playground.frames import upscale
from playground.ui.inputs import editor_canvas
from playground.ui.teaching import EDIT_EXAMPLES
from playground.ui.views import PREVIEW_SCALE
from playground.world.shapes import render, scene_from_prompt


def edit_examples(folder: str | Path) -> list[list[str]]:
    """The Edit tab's examples, [picture file, new prompt] each: teaching.EDIT_EXAMPLES's
    pictures drawn by the shapes world's renderer into `folder` (PNG, 64 x 64)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (before, after, _) in enumerate(EDIT_EXAMPLES):
        path = folder / f"edit-example-{i}.png"
        Image.fromarray(render(scene_from_prompt(before))).save(path)
        rows.append([str(path), after])
    return rows


def edit_example_value(sample: list) -> tuple[dict, dict, str]:
    """An Edit example chosen ([picture file, new prompt]) -> the picture on both editors'
    canvases (as "Edit this" puts it there) and the prompt."""
    path, prompt = sample
    canvas = editor_canvas(upscale(np.asarray(Image.open(path).convert("RGB")), PREVIEW_SCALE))  # (256, 256, 3)
    return canvas, canvas, prompt


def examples_cache_dir() -> str:
    """A fresh folder for gradio's cached examples: gradio reuses a cache folder that exists,
    even when the models have changed, so each app process caches its examples anew."""
    folder = tempfile.mkdtemp(prefix="playground-examples-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
