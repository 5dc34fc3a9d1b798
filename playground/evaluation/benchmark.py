"""Benchmark the samplers on this machine: time per picture with and without live previews,
and the autoregressive KV cache's speed-up over recomputing the whole sequence.

    python -m playground.evaluation.benchmark            # default settings, shipped models
    python -m playground.evaluation.benchmark --repeats 5 --assets /path/to/models
    python -m playground.evaluation.benchmark --tiny-hub   # the real-model backends on tiny random checkpoints
    python -m playground.evaluation.benchmark --diffusion-model stabilityai/sd-turbo --autoregressive-model deepseek-community/Janus-Pro-1B
    python -m playground.evaluation.benchmark --compare /path/to/other/models --pairs 15   # these weights against others

A "preview" consumer decodes the frame it would show whenever 50 ms have passed since the
last one (what the playground does); the "no preview" consumer decodes only the final picture.
The per-step figure is the difference divided by the steps of a picture.

Both consumers first run in the sampler's own thread: every preview is time the sampler waits.
Then, for the embedded models, as the page runs them: the sampler in a worker process
(playground/runtime/workers.py, one torch thread) and the previews decoded in this process as the
frames arrive (one torch thread), so that a preview costs the sampler only the core it shares.

`--compare OTHER` answers "are these weights slower than those?": one picture from each set in
turn (no previews; which goes first alternates), `--pairs` times after a warm-up pair, and the
median of the pairs' time ratios with its quartiles, so that the host's drift lands on both.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import torch

from playground.arguments import load_engine_or_exit
from playground.engine import build_random_assets
from playground.runtime.workers import WorkerPool, restored
from playground.settings import EMBEDDED, GenerationSettings

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


def from_worker(worker, kind: str, prompt: str, kwargs: dict, decoder):
    """A sampler's frames as computed by a worker process, each given this process's decoder."""
    for frame, _, _ in worker.run(kind, prompt, kwargs):
        yield restored(frame, decoder)  # the codes as a tensor again


def timings(run, repeats: int, every_step: bool = False) -> dict:
    """Seconds of `run()` (a fresh sampler) drained with no previews and with a preview every
    50 ms, and with every_step, a preview at every step. This machine's speed drifts by 10-30 %
    over tens of seconds, so the two ways run as a pair, back to back (which goes first
    alternates), and the overhead is the median of the pairs' ratios: a slow minute lands on
    both halves of a pair."""
    plain, live, ratios, every, spent = [], [], [], [], []
    for i in range(repeats):
        if i % 2:
            (t_live, n), t_plain = consume(run(), 50), consume(run(), None)[0]
        else:
            t_plain, (t_live, n) = consume(run(), None)[0], consume(run(), 50)
        plain.append(t_plain)
        live.append((t_live, n))
        ratios.append(t_live / t_plain)
        if every_step:
            every.append(consume(run(), 0, spent))
    out = {"plain": statistics.median(plain), "live": statistics.median(t for t, _ in live), "previews": live[0][1],
           "overhead": statistics.median(ratios) - 1, "range": (min(ratios) - 1, max(ratios) - 1)}
    if every_step:
        out.update(every=statistics.median(t for t, _ in every), steps=every[0][1], preview=statistics.median(spent))
    return out


def paired_ratios(time_a, time_b, pairs: int) -> dict:
    """`time_a()` and `time_b()` each make one picture and return its seconds. They run in
    pairs, back to back, a first (warm-up) pair left out and which goes first alternating; the
    result: each side's median seconds and the median and quartiles of the pairs' ratios a / b."""
    a, b = [], []
    for i in range(pairs + 1):
        if i % 2:
            t_b, t_a = time_b(), time_a()
        else:
            t_a, t_b = time_a(), time_b()
        if i:
            a.append(t_a), b.append(t_b)
    ratios = sorted(x / y for x, y in zip(a, b))
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"a": statistics.median(a), "b": statistics.median(b), "ratio": median, "quartiles": (q1, q3), "pairs": pairs}


def compare(engine, other, prompt: str, settings: GenerationSettings, pairs: int) -> None:
    """Time per picture of `engine`'s embedded samplers against `other`'s, in pairs."""
    for kind in ("diffusion", "autoregressive"):
        kwargs = settings.diffusion_kwargs() if kind == "diffusion" else settings.autoregressive_kwargs()

        def timer(e):
            return lambda: consume(getattr(e, f"{kind}_progressive")(prompt, **kwargs), None)[0]

        r = paired_ratios(timer(engine), timer(other), pairs)
        low, high = r["quartiles"]
        print(f"{kind:15s} these {r['a']:.3f} s, those {r['b']:.3f} s a picture (medians); paired ratio "
              f"{100 * (r['ratio'] - 1):+.1f} % (quartiles {100 * (low - 1):+.1f} to {100 * (high - 1):+.1f} %), {pairs} pairs")


def print_overhead(name: str, t: dict) -> None:
    low, high = t["range"]
    print(f"{name:15s} no previews {t['plain']:.3f} s   previews every 50 ms {t['live']:.3f} s "
          f"({t['previews']} previews, overhead {100 * t['overhead']:+.1f} %: median of the pairs' ratios, "
          f"{100 * low:+.1f} to {100 * high:+.1f} %)")


def in_workers(engine, prompt: str, settings: GenerationSettings, repeats: int) -> None:
    """The embedded samplers as the page runs them: each in a worker process, its previews
    decoded here as its frames arrive (both with one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = WorkerPool(engine.folder, size=1, threads=1).start()
    try:
        if not pool.wait_ready():
            print("in a worker process: the worker could not load the models")
            return
        [worker] = pool.acquire()
        print("in a worker process (as the page runs them), previews decoded in this process, one thread each:")
        for kind, kwargs in (("diffusion", settings.diffusion_kwargs()), ("autoregressive", settings.autoregressive_kwargs())):
            decoder = getattr(engine, kind).autoencoder
            run = functools.partial(from_worker, worker, kind, prompt, kwargs, decoder)
            consume(run(), None)  # warm-up
            print_overhead(kind, timings(run, repeats))
    finally:
        pool.close()
        torch.set_num_threads(threads)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--compare", default=None, metavar="OTHER_ASSETS",
                   help="time these embedded models against another models folder, picture by picture (nothing else is measured)")
    p.add_argument("--pairs", type=int, default=15, help="with --compare: how many pairs of pictures")
    p.add_argument("--diffusion-model", default=None, help="a real diffusion model (hub id or folder)")
    p.add_argument("--autoregressive-model", default=None, help="a real Janus model (hub id or folder)")
    p.add_argument("--tiny-hub", action="store_true",
                   help="build tiny random SD and Janus checkpoints (and tiny embedded models) and measure those")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error(f"--pairs must be at least 1, not {args.pairs}")
    torch.set_num_threads(args.threads)
    if args.tiny_hub:
        from playground.hub.tiny import build_tiny_hub_models

        folder = tempfile.mkdtemp(prefix="playground-bench-")
        tiny = build_tiny_hub_models(folder)
        args.assets = args.assets or build_random_assets(f"{folder}/assets")
        args.diffusion_model, args.autoregressive_model = str(tiny["diffusion"]), str(tiny["autoregressive"])
    engine = load_engine_or_exit(p, args.assets, diffusion_model=args.diffusion_model or "",
                                 autoregressive_model=args.autoregressive_model or "")
    for problem in engine.problems:
        print(f"warning: {problem}")
    s = GenerationSettings()
    if args.compare:
        other = load_engine_or_exit(p, args.compare)
        print(f"these models: {engine.folder}; those: {other.folder}; torch threads {torch.get_num_threads()}, no previews")
        compare(engine, other, args.prompt, s, args.pairs)
        return
    print(f"models: diffusion {engine.models('diffusion')[0]}, autoregressive {engine.models('autoregressive')[0]}")
    runs = {
        "diffusion": lambda: engine.diffusion_progressive(args.prompt, **s.diffusion_kwargs()),
        "autoregressive": lambda: engine.autoregressive_progressive(args.prompt, **s.autoregressive_kwargs()),
    }
    consume(runs["diffusion"](), None), consume(runs["autoregressive"](), None)  # warm-up
    print(f"torch threads {torch.get_num_threads()}, default settings {s.as_dict()}")
    for name, run in runs.items():
        t = timings(run, args.repeats, every_step=True)
        print_overhead(name, t)
        print(f"{'':15s} a preview every step: {1000 * t['plain'] / t['steps']:.2f} ms/step without, "
              f"{1000 * t['every'] / t['steps']:.2f} ms/step with; the preview itself {1000 * t['preview']:.2f} ms "
              f"(median of {args.repeats * t['steps']})")
    if engine.models("autoregressive")[0] != EMBEDDED:
        return  # the KV-cache comparison is the embedded sampler's (use_cache=False)
    kw = s.autoregressive_kwargs()
    cached = statistics.median(consume(engine.autoregressive_progressive(args.prompt, **kw), None)[0] for _ in range(args.repeats))
    recomputed = consume(engine.autoregressive_progressive(args.prompt, **kw, use_cache=False), None)[0]
    print(f"KV cache: {cached:.3f} s with, {recomputed:.3f} s recomputing: {recomputed / cached:.1f}x speed-up")
    if engine.models("diffusion")[0] == EMBEDDED:
        in_workers(engine, args.prompt, s, args.repeats)


if __name__ == "__main__":
    main()
