"""What a finished run leaves behind: animations of its frames and a side-by-side strip.

Used by the command line (files in a folder) and by the playground (downloads). Frames are
the samplers' own; only the frames that are drawn get decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from playground.frames import MIN_BOXED_CELL, fit, outline_cells


def pick(frames: list, n: int) -> list:
    """n frames spread evenly over a run, always including the last."""
    if not frames:
        return []
    n = max(1, min(n, len(frames)))
    if n == 1:
        return [frames[-1]]
    idx = np.unique(np.linspace(0, len(frames) - 1, num=n).round().astype(int))
    return [frames[i] for i in idx]


def frame_at(frames: list, fraction: float):
    """The frame at a fraction (0..1) of a run's progress: the scrubber's choice."""
    if not frames:
        return None
    i = int(round(min(max(fraction, 0.0), 1.0) * (len(frames) - 1)))
    return frames[i]


def preview_image(frame, scale: int = 4, view: str = "x0") -> np.ndarray:
    """The picture to show for a frame: diffusion's x0 guess or noisy state; the AR partial grid."""
    if frame.kind == "diffusion":
        img = frame.noisy_image() if view == "noisy" else frame.x0_image()
        img = fit(img, frame.display_size * scale)
        cell = img.shape[0] // frame.region.shape[0] if frame.region is not None else 0
        return img if cell < MIN_BOXED_CELL else outline_cells(img, frame.region)
    return frame.preview(scale)


def save_gif(frames: list, path: Path, max_frames: int = 40, scale: int = 4, view: str = "x0", seconds: float = 3.0) -> Path:
    """An animated GIF of a run (at most `max_frames` frames, the last one held)."""
    chosen = pick(frames, max_frames)
    images = [Image.fromarray(preview_image(f, scale, view)) for f in chosen]
    durations = [int(seconds * 1000 / len(images))] * len(images)
    durations[-1] = 1500
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False)
    return Path(path)


def save_mp4(frames: list, path: Path, max_frames: int = 40, scale: int = 4, view: str = "x0") -> Path | None:
    """An MP4 of a run where imageio's ffmpeg plugin is installed; None where it is not."""
    import importlib.util

    if importlib.util.find_spec("imageio_ffmpeg") is None:
        return None
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=12, macro_block_size=1) as writer:
        for f in pick(frames, max_frames):
            writer.append_data(preview_image(f, scale, view))
    return Path(path)


def comparison_strip(diffusion_frames: list, ar_frames: list, n: int = 6, scale: int = 2) -> np.ndarray:
    """Two labelled rows (diffusion's x0 guesses, the AR partial grids) at the same fractions of
    progress: a picture for slides. Returns (H, W, 3) uint8."""
    cell = max(f.display_size for f in diffusion_frames[-1:] + ar_frames[-1:]) * scale
    label_w, gap, top = 110, 4, 18
    fractions = np.linspace(1 / n, 1.0, n)
    rows = [("diffusion", diffusion_frames), ("autoregressive", ar_frames)]
    w = label_w + n * (cell + gap)
    h = top + len(rows) * (cell + gap)
    strip = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(strip)
    for j, frac in enumerate(fractions):
        draw.text((label_w + j * (cell + gap), 3), f"{frac:.0%}", fill="black")
    for r, (name, frames) in enumerate(rows):
        y = top + r * (cell + gap)
        draw.text((4, y + cell // 2 - 6), name, fill="black")
        for j, frac in enumerate(fractions):
            f = frame_at(frames, frac)
            if f is not None:
                strip.paste(Image.fromarray(preview_image(f, scale)), (label_w + j * (cell + gap), y))
    return np.asarray(strip)
