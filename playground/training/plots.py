"""Tiny PIL plots (no plotting library needed): loss curves for training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def plot_loss_curve(losses: list[float], path: Path, title: str = "loss", size=(640, 360)) -> Path:
    """Raw losses (light) and a moving average (dark) against steps, log-scaled y."""
    w, h, pad = size[0], size[1], 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    y = np.log10(np.maximum(np.asarray(losses, dtype=np.float64), 1e-8))
    if len(y) > 1:
        k = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        lo, hi = float(y.min()), float(y.max()) + 1e-9
        def pts(v, offset=0):
            return [(pad + (i + offset) * (w - 2 * pad) / (len(y) - 1), h - pad - (val - lo) / (hi - lo) * (h - 2 * pad)) for i, val in enumerate(v)]
        d.line(pts(y), fill=(180, 200, 240), width=1)
        d.line(pts(smooth, k // 2), fill=(20, 60, 160), width=2)
        d.text((pad, h - pad + 8), f"step 0 .. {len(y)}", fill="black")
        d.text((4, pad - 14), f"{10**hi:.4g}", fill="black")
        d.text((4, h - pad), f"{10**lo:.4g}", fill="black")
    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    d.text((pad, 10), f"{title} (log scale, final avg {np.mean(losses[-50:]):.4f})", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
