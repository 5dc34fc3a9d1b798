"""Benchmark the samplers on this machine: time per picture with and without live previews,
and the autoregressive KV cache's speed-up over recomputing the whole sequence.

    python -m playground.benchmark            # default settings, shipped models
    python -m playground.benchmark --repeats 5 --assets /path/to/models
    python -m playground.benchmark --tiny-hub   # the real-model backends on tiny random checkpoints
    python -m playground.benchmark --diffusion-model stabilityai/sd-turbo --autoregressive-model deepseek-community/Janus-Pro-1B

A "preview" consumer decodes the frame it would show whenever 50 ms have passed since the
last one (what the playground does); the "no preview" consumer decodes only the final picture.
The per-step figure is the difference divided by the steps of a picture.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from .cli import load_engine_or_exit
from .engine import build_random_assets
from .settings import GenerationSettings

PROMPT = "a large red circle on the left and a small blue star on the right on a yellow background"


def consume(frames, preview_every_ms: float | None, spent: list | None = None) -> tuple[float, int]:
    """Drain a sampler like a viewer would; returns (seconds, previews decoded). The seconds
    each preview took are appended to `spent`."""
    t0 = time.perf_counter()
    last, previews, frame = -1e9, 0, None
    for frame in frames:
        now = (time.perf_counter() - t0) * 1000
        if preview_every_ms is not None and now - last >= preview_every_ms:
            started = time.perf_counter()
            frame.preview(4) if frame.kind == "autoregressive" else frame.x0_image()
            if spent is not None:
                spent.append(time.perf_counter() - started)
            last, previews = now, previews + 1
    frame.image()
    return time.perf_counter() - t0, previews


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--diffusion-model", default=None, help="a real diffusion model (hub id or folder)")
    p.add_argument("--autoregressive-model", default=None, help="a real Janus model (hub id or folder)")
    p.add_argument("--tiny-hub", action="store_true",
                   help="build tiny random SD and Janus checkpoints (and tiny embedded models) and measure those")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tiny_hub:
        from .hub_tiny import build_tiny_hub_models

        folder = tempfile.mkdtemp(prefix="playground-bench-")
        tiny = build_tiny_hub_models(folder)
        args.assets = args.assets or build_random_assets(f"{folder}/assets")
        args.diffusion_model, args.autoregressive_model = str(tiny["diffusion"]), str(tiny["autoregressive"])
    engine = load_engine_or_exit(p, args.assets, diffusion_model=args.diffusion_model or "",
                                 autoregressive_model=args.autoregressive_model or "")
    for problem in engine.problems:
        print(f"warning: {problem}")
    s = GenerationSettings()
    print(f"models: diffusion {engine.models('diffusion')[0]}, autoregressive {engine.models('autoregressive')[0]}")
    runs = {
        "diffusion": lambda: engine.diffusion_progressive(args.prompt, **s.diffusion_kwargs()),
        "autoregressive": lambda: engine.autoregressive_progressive(args.prompt, **s.autoregressive_kwargs()),
    }
    consume(runs["diffusion"](), None), consume(runs["autoregressive"](), None)  # warm-up
    print(f"torch threads {torch.get_num_threads()}, default settings {s.as_dict()}")
    for name, run in runs.items():
        # The three ways in turn, repeat by repeat: this machine's speed drifts by 10-30 % over
        # tens of seconds, which would otherwise land on one way more than another.
        plain, live, every, spent = [], [], [], []
        for _ in range(args.repeats):
            plain.append(consume(run(), None)[0])
            live.append(consume(run(), 50))
            every.append(consume(run(), 0, spent))
        t_plain = statistics.median(plain)
        t_live = statistics.median(t for t, _ in live)
        t_every = statistics.median(t for t, _ in every)
        steps = every[0][1]
        print(f"{name:15s} no previews {t_plain:.3f} s   previews every 50 ms {t_live:.3f} s "
              f"({live[0][1]} previews, overhead {100 * (t_live / t_plain - 1):+.1f} %)")
        print(f"{'':15s} a preview every step: {1000 * t_plain / steps:.2f} ms/step without, "
              f"{1000 * t_every / steps:.2f} ms/step with; the preview itself {1000 * statistics.median(spent):.2f} ms "
              f"(median of {len(spent)})")
    if engine.models("autoregressive")[0] != "embedded":
        return  # the KV-cache comparison is the embedded sampler's (use_cache=False)
    kw = s.autoregressive_kwargs()
    cached = statistics.median(consume(engine.autoregressive_progressive(args.prompt, **kw), None)[0] for _ in range(args.repeats))
    recomputed = consume(engine.autoregressive_progressive(args.prompt, **kw, use_cache=False), None)[0]
    print(f"KV cache: {cached:.3f} s with, {recomputed:.3f} s recomputing: {recomputed / cached:.1f}x speed-up")


if __name__ == "__main__":
    main()
