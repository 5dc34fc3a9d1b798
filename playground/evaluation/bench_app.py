"""How much the live page costs over the engine alone: a benchmark that prints figures.

    python -m playground.evaluation.bench_app [--assets assets/] [--repeats 3] [--prompt "..."]

1. The engine alone, in this process: both samplers run to the end one after the other and
   their final pictures decoded, with the app's torch thread count (best of --repeats).
2. The app: `python app.py` started as its own process on a free port, then /generate driven
   with gradio_client, as a browser would: time from submit to the first picture and to both
   final pictures (client side), and the app's own timings (server side, from the run's
   timing output; they start when the request handler starts).
3. The streaming overhead: both runs finished in the app versus the engine alone, and versus
   the two samplers in two worker processes with no page (how the app runs them).

    python -m playground.evaluation.bench_app --workers 0    # the samplers on a thread of the app, for comparison

Many visitors at once: `python -m playground.evaluation.load`.

Run it on an otherwise idle machine: other busy processes make every figure noisy.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root, where app.py is
QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
             "DO_NOT_TRACK": "1"}


def free_port() -> int:
    for port in range(7870, 7990):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port in 7870-7989")


def engine_alone(assets: str | None, prompt: str, repeats: int) -> tuple[float, float]:
    """Seconds (wall, CPU) for both samplers and their final pictures, best of `repeats`."""
    import torch

    from playground.engine import load_engine
    from playground.runtime.run import torch_threads
    from playground.settings import GenerationSettings

    torch.set_num_threads(torch_threads())
    engine = load_engine(assets)
    settings = GenerationSettings()

    def once() -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        for frame in engine.diffusion_progressive(prompt, **settings.diffusion_kwargs()):
            pass
        frame.image()
        for frame in engine.autoregressive_progressive(prompt, **settings.autoregressive_kwargs()):
            pass
        frame.image()
        return time.perf_counter() - started, time.process_time() - cpu

    once()
    return min(once() for _ in range(repeats))


def engine_in_workers(assets: str | None, prompt: str, repeats: int) -> float:
    """Seconds for both samplers at once, each in its own worker process (a LiveRun as the app
    starts it, with no page), and their final pictures decoded here; best of `repeats`."""
    from playground.engine import load_engine
    from playground.runtime.run import LiveRun, torch_threads
    from playground.runtime.workers import WorkerPool
    from playground.settings import GenerationSettings

    engine = load_engine(assets)
    pool = WorkerPool(engine.folder, 2, threads=torch_threads()).start()
    try:
        if not pool.wait_ready():
            raise RuntimeError("the sampler workers did not start")

        def once() -> float:
            started = time.perf_counter()
            run = LiveRun(engine, prompt, GenerationSettings(), pool=pool).start(min_seconds=0)
            run.done.wait()
            if run.error is not None or not run.in_workers:
                raise RuntimeError(f"the run did not complete in the workers: {run.error}")
            for track in run.tracks:
                track.latest.image()
            return time.perf_counter() - started

        once()
        return min(once() for _ in range(repeats))
    finally:
        pool.close()


def start_app(assets: str | None, port: int, log, workers: int | None = None, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "app.py", "--port", str(port)] + (["--assets", assets] if assets else [])
    cmd += ([] if workers is None else ["--workers", str(workers)]) + list(extra)
    env = {**os.environ, **QUIET_ENV}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_serving(app: subprocess.Popen, port: int, log, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if app.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"app.py exited:\n{log.read().decode(errors='replace')[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError("app.py did not start serving")


def wait_until_idle(pid: int, quiet_s: float = 2.0, busy_share: float = 0.05, timeout: float = 600) -> float:
    """Wait until a process uses under `busy_share` of a core for `quiet_s` in a row (app.py
    caches its examples in the background after it starts serving); seconds waited. Linux only
    (/proc); elsewhere returns at once."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_s() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        before = cpu_s()
        time.sleep(quiet_s)
        if cpu_s() - before < busy_share * quiet_s:
            break
    return time.perf_counter() - started


def has_picture(value) -> bool:
    return isinstance(value, (str, dict)) and not (isinstance(value, dict) and value.get("__type__") == "update")


def one_generate(client, prompt: str, seed: int) -> dict:
    """Client-side timings of one /generate call, and the app's own timing output."""
    from playground.ui.views import DONE_MARK, OUTPUTS

    status = [OUTPUTS.index("diffusion_status"), OUTPUTS.index("ar_status")]
    seen: dict = {"count": 0, "first": None, "both_done": None, "done": [False, False]}

    def read_new_outputs(now: float) -> None:
        outputs = job.outputs()
        for update in outputs[seen["count"]:]:
            if seen["first"] is None and (has_picture(update[0]) or has_picture(update[1])):
                seen["first"] = now
            for i, index in enumerate(status):
                if isinstance(update[index], str) and update[index].startswith(DONE_MARK):
                    seen["done"][i] = True
            if seen["both_done"] is None and all(seen["done"]):
                seen["both_done"] = now
        seen["count"] = len(outputs)

    started = time.perf_counter()
    job = client.submit(prompt=prompt, seed=seed, api_name="/generate")
    while not job.done():
        time.sleep(0.005)  # iterating the job would poll every millisecond: CPU taken from the app
        read_new_outputs(time.perf_counter())
    final = job.result()
    ended = time.perf_counter()
    read_new_outputs(ended)
    return {
        "first_ms": ((seen["first"] or ended) - started) * 1000,
        "both_done_ms": ((seen["both_done"] or ended) - started) * 1000,
        "total_ms": (ended - started) * 1000,
        "server": final[OUTPUTS.index("stats")],
    }


def median(values) -> float:
    return statistics.median(values)


def report(runs: list[dict], engine_s: float, engine_cpu_s: float, workers_s: float | None = None) -> None:
    server_first = [min(r["server"]["first_frame_ms"].values()) for r in runs]
    server_both = [r["server"]["both_finished_ms"] for r in runs]
    compute = [sum(r["server"]["compute_ms"].values()) for r in runs]
    engine_ms = engine_s * 1000
    rows = [
        ("first frame, server side (handler start -> first picture)", median(server_first)),
        ("first frame, client side (submit -> first picture)", median(r["first_ms"] for r in runs)),
        ("both runs finished, server side", median(server_both)),
        ("both runs finished, client side", median(r["both_done_ms"] for r in runs)),
        ("whole /generate call, client side (with filmstrips)", median(r["total_ms"] for r in runs)),
        ("compute inside the app (both samplers' own steps)", median(compute)),
        ("engine alone (both samplers + final pictures)", engine_ms),
    ]
    if workers_s is not None:
        rows.append(("engine alone, the two samplers in two worker processes", workers_s * 1000))
    print(f"\nmedians of {len(runs)} runs, milliseconds")
    for name, value in rows:
        print(f"  {name:<58} {value:8.0f}")
    updates = runs[-1]["server"]["updates"]
    print(f"  pictures shown per run (last run): diffusion {updates['diffusion']}, autoregressive {updates['autoregressive']}")
    print("\nstreaming overhead over the engine alone (wall clock)")
    print(f"  server side: {median(server_both) / engine_ms - 1:+.0%}   client side: "
          f"{median(r['both_done_ms'] for r in runs) / engine_ms - 1:+.0%}")
    if workers_s is not None:
        print(f"  over the two worker processes alone: server side {median(server_both) / (workers_s * 1000) - 1:+.0%}")
    print(f"  the app computed the samplers in: {', '.join(sorted({r['server'].get('computed_in', '?') for r in runs}))}")
    samplers = median(r["server"]["cpu_ms"]["samplers"] for r in runs)
    other = median(r["server"]["cpu_ms"]["everything_else"] for r in runs)
    print("CPU time (not disturbed by other busy processes, unlike the wall clock)")
    print(f"  engine alone {engine_cpu_s * 1000:.0f} ms; in the app: samplers {samplers:.0f} ms, "
          f"everything else in the app process (decoding, encoding, gradio) {other:.0f} ms = "
          f"{other / samplers:.0%} of the samplers'")
    from playground.runtime.run import MIN_RUN_SECONDS

    if engine_s < MIN_RUN_SECONDS:
        print(f"  (the engine takes under {MIN_RUN_SECONDS} s: the app paces runs to last that long, "
              "on purpose, so this overhead is the pacing)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", default=os.environ.get("PLAYGROUND_ASSETS"), help="model folder (default: assets/)")
    parser.add_argument("--prompt", default="a large red circle on the left on a yellow background")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="app.py --workers (default: the app's own default; 0: samplers on threads)")
    args = parser.parse_args(argv)
    os.environ.update(QUIET_ENV)

    print("engine alone ...", flush=True)
    engine_s, engine_cpu_s = engine_alone(args.assets, args.prompt, args.repeats)
    print(f"  {engine_s * 1000:.0f} ms")
    workers_s = None
    if args.workers != 0:
        print("engine alone in two worker processes ...", flush=True)
        workers_s = engine_in_workers(args.assets, args.prompt, args.repeats)
        print(f"  {workers_s * 1000:.0f} ms")

    from gradio_client import Client

    from playground.ui.views import OUTPUTS

    port = free_port()
    print(f"starting app.py on port {port} (caches its examples first) ...", flush=True)
    with tempfile.TemporaryFile() as log:
        app = start_app(args.assets, port, log, args.workers)
        try:
            wait_until_serving(app, port, log)
            print(f"  waited {wait_until_idle(app.pid):.0f} s for the app to finish caching its examples", flush=True)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
            one_generate(client, args.prompt, seed=0)  # warm-up
            runs = [one_generate(client, args.prompt, seed=i) for i in range(args.repeats)]
            started = time.perf_counter()
            result = client.predict(prompt=args.prompt, seed=0, api_name="/generate")
            client.predict(result[OUTPUTS.index("run_key")], api_name="/downloads")
            downloads_ms = (time.perf_counter() - started) * 1000
        finally:
            app.terminate()
            app.wait(timeout=30)
    report(runs, engine_s, engine_cpu_s, workers_s)
    print(f"\none more /generate followed by /downloads (GIFs, strip): {downloads_ms:.0f} ms")


if __name__ == "__main__":
    main()
