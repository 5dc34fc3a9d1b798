"""Benchmark the samplers on this machine: time per picture with and without live previews,
and the autoregressive KV cache's speed-up over recomputing the whole sequence.

    python -m playground.benchmark            # default settings, shipped models
    python -m playground.benchmark --repeats 5 --assets /path/to/models

A "preview" consumer decodes the frame it would show whenever 50 ms have passed since the
last one (what the playground does); the "no preview" consumer decodes only the final picture.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from .engine import load_engine
from .settings import GenerationSettings

PROMPT = "a large red circle on the left and a small blue star on the right on a yellow background"


def consume(frames, preview_every_ms: float | None) -> tuple[float, int]:
    """Drain a sampler like a viewer would; returns (seconds, previews decoded)."""
    t0 = time.perf_counter()
    last, previews, frame = -1e9, 0, None
    for frame in frames:
        now = (time.perf_counter() - t0) * 1000
        if preview_every_ms is not None and now - last >= preview_every_ms:
            frame.preview(4) if frame.kind == "autoregressive" else frame.x0_image()
            last, previews = now, previews + 1
    frame.image()
    return time.perf_counter() - t0, previews


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", default=PROMPT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = load_engine(args.assets)
    s = GenerationSettings()
    runs = {
        "diffusion": lambda: engine.diffusion_progressive(args.prompt, **s.diffusion_kwargs()),
        "autoregressive": lambda: engine.autoregressive_progressive(args.prompt, **s.autoregressive_kwargs()),
    }
    consume(runs["diffusion"](), None), consume(runs["autoregressive"](), None)  # warm-up
    print(f"torch threads {torch.get_num_threads()}, default settings {s.as_dict()}")
    for name, run in runs.items():
        plain = [consume(run(), None)[0] for _ in range(args.repeats)]
        live = [consume(run(), 50) for _ in range(args.repeats)]
        t_plain = statistics.median(plain)
        t_live = statistics.median(t for t, _ in live)
        print(f"{name:15s} no previews {t_plain:.3f} s   previews every 50 ms {t_live:.3f} s "
              f"({live[0][1]} previews, overhead {100 * (t_live / t_plain - 1):+.1f} %)")
    kw = s.autoregressive_kwargs()
    cached = statistics.median(consume(engine.autoregressive_progressive(args.prompt, **kw), None)[0] for _ in range(args.repeats))
    recomputed = consume(engine.autoregressive_progressive(args.prompt, **kw, use_cache=False), None)[0]
    print(f"KV cache: {cached:.3f} s with, {recomputed:.3f} s recomputing: {recomputed / cached:.1f}x speed-up")


if __name__ == "__main__":
    main()
