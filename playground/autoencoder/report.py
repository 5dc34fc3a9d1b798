"""What the shared autoencoder keeps: its reconstructions measured and checked against the
shapes world's own checker (a ceiling on what either generator can reach).

    python -m playground.evaluation.evaluate       # prints this report among the rest
"""

from __future__ import annotations

import numpy as np
import torch

from playground.autoencoder.model import background_cells, psnr
from playground.world.shapes import caption, check, render, sample_scene


def autoencoder_report(autoencoder, n: int = 500, seed: int = 1000) -> dict:
    """What the shared autoencoder keeps, on n rendered scenes (held-out pairs included):
    - psnr_db: of the reconstructions through the codebook;
    - reconstructions_matching: share of reconstructions the checker accepts for the scene's
      full caption (a ceiling on what either generator can reach);
    - one_object_by_shape: the same for the one-object scenes, by size and shape ("small star":
      {"matching", "n"}): which shapes the decoder cannot draw;
    - background_code_agreement: share of background cells (`background_cells`) coded exactly
      as the plain background of the same colour codes that cell (1.0: a plain cell has one code);
    - codes_used: distinct codes over the n scenes."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, held_out="include") for _ in range(n)]
    images = np.stack([render(s) for s in scenes])
    recon, codes = autoencoder.reconstruct(images)  # (n, 64, 64, 3), (n, g*g)
    plain = images[:, :1, :1].repeat(64, 1).repeat(64, 2)  # each picture's background alone
    plain_codes = autoencoder.latents_to_codes(autoencoder.encode(plain))  # (n, g*g): codes only, nothing to decode
    background = background_cells(images, autoencoder.grid).flatten(1).bool()  # (n, g*g)
    matching = [check(r, caption(s)).ok for r, s in zip(recon, scenes)]
    by_shape: dict[str, list[bool]] = {}
    for scene, ok in zip(scenes, matching):
        if len(scene.objects) == 1:
            by_shape.setdefault(f"{scene.objects[0].size} {scene.objects[0].shape}", []).append(ok)
    return {
        "psnr_db": psnr(recon, images),
        "reconstructions_matching": float(np.mean(matching)),
        "one_object_by_shape": {k: {"matching": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_shape.items())},
        "background_code_agreement": float((codes == plain_codes)[background].float().mean()),
        "codes_used": int(len(torch.unique(codes))),
    }
