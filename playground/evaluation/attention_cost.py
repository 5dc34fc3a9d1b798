"""What the attention maps cost: extra time per picture when a word is chosen, on this machine.

    python -m playground.evaluation.attention_cost                  # shipped models, 3 prompts
    python -m playground.evaluation.attention_cost --assets DIR --updates 30 --threads 1

For each prompt both samplers are drained (the time of a picture, both panels, previews not
counted), then the page's work for a chosen word is replayed through the page's own code
(ui/attention.py): `--updates` page updates, each showing both panels at the next fraction of
their progress, with the compute time reached by then, so that the maps keep to their live
share as on the page; then the final pictures' own maps, as the page shows them at the end. The
figure is the maps' time (computing and drawing them) over the picture's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from playground.engine import load_engine
from playground.outputs import frame_at, preview_image
from playground.settings import GenerationSettings
from playground.ui.attention import PICTURE, STATUS, AttentionMaps

PROMPTS = (
    ("a large red circle on the left and a small blue star on the right on a yellow background", "star"),
    ("a small green triangle at the top on a white background", "triangle"),
    ("a large purple heart in the center", "heart"),
)
BUDGET = 0.15  # the most extra time per picture the maps may cost
UPDATES = 20  # page updates of a run: the Pacer's 12 at least, at most 20 a second


def measure(engine, prompt: str, word: str, updates: int) -> dict:
    s = GenerationSettings()
    t0 = time.perf_counter()
    frames = {"diffusion": list(engine.diffusion_progressive(
        prompt, num_inference_steps=s.num_inference_steps, seed=s.seed, guidance_scale=s.guidance_scale,
        scheduler=s.scheduler))}
    t1 = time.perf_counter()
    frames["autoregressive"] = list(engine.autoregressive_progressive(
        prompt, seed=s.seed, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, guidance_scale=s.ar_guidance_scale))
    t2 = time.perf_counter()
    seconds = {"diffusion": t1 - t0, "autoregressive": t2 - t1}
    for f in frames["diffusion"] + frames["autoregressive"]:
        preview_image(f, 4)  # the pictures the maps are drawn over: the page decodes them anyway
    tracks = [SimpleNamespace(kind=kind, total_compute_ms=0.0) for kind in frames]
    run = SimpleNamespace(id=f"bench-{time.perf_counter()}", prompt=prompt, settings=s, tracks=tracks)
    maps = AttentionMaps()
    started = time.perf_counter()
    for k in range(1, updates + 1):
        for track in tracks:
            track.total_compute_ms = 1000 * seconds[track.kind] * k / updates
        live = maps.decorator(engine, run, word, live=True)
        for track in tracks:
            frame = frame_at(frames[track.kind], k / updates)
            live(track, frame, {PICTURE[track.kind]: preview_image(frame, 4), STATUS[track.kind]: ""})
    final = maps.decorator(engine, run, word)
    for track in tracks:
        frame = frames[track.kind][-1]
        final(track, frame, {PICTURE[track.kind]: preview_image(frame, 4), STATUS[track.kind]: ""})
    spent = time.perf_counter() - started
    return {**seconds, "maps_s": spent, "diffusion_steps": sorted(maps.of_run(engine, run).diffusion_maps)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", default=None, help="model folder (default: the shipped assets/)")
    parser.add_argument("--updates", type=int, default=UPDATES, help=f"page updates per run (default {UPDATES})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the page's workers use 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = load_engine(args.assets)
    measure(engine, *PROMPTS[0], args.updates)  # warm up
    rows = [measure(engine, prompt, word, args.updates) for prompt, word in PROMPTS]
    for (prompt, word), r in zip(PROMPTS, rows):
        print(f"{word:>9}: picture {r['diffusion']:.2f} + {r['autoregressive']:.2f} s; maps {r['maps_s']:.3f} s "
              f"(diffusion maps at steps {', '.join(map(str, r['diffusion_steps']))} of {GenerationSettings().num_inference_steps})")
    share = statistics.median(r["maps_s"] / (r["diffusion"] + r["autoregressive"]) for r in rows)
    print(f"extra time per picture with a word chosen: {share:.1%} (median of {len(rows)}; budget {BUDGET:.0%})")


if __name__ == "__main__":
    main()
