"""A class pressing Generate at once: the page under load, with batching on and off, side by side.

    python -m playground.evaluation.load                      # 30 sessions, batching on, then off
    python -m playground.evaluation.load --sessions 10 --modes on
    python -m playground.evaluation.load --sessions 30 --rounds 10 --modes on   # 300 requests: memory
    python -m playground.evaluation.load --rounds 10 --modes on --new-pages --app-args "--max-sessions 30"

For each mode, `python app.py` is started as its own process; N gradio_client sessions open
the page, then submit /generate at the same moment, each with its own prompt and seed (the
clients share the app's cores: about 2.5 CPU seconds a round of 30 that a class's browsers
would spend on their own machines). Printed per mode: seconds from submit to the first
picture (p50, p95) and to both final pictures (p50, p95, max), pictures per second, errors,
the app's memory (RSS of the page and its worker processes) before and after (with several
rounds: each round's final p95, and each process's memory after each round), CPU seconds by
process, and cross-talk: each session's final pictures compared with the same prompt and seed
computed alone in this process (PSNR; a picture of another request would be far below 30 dB).

Run it on an otherwise idle machine: other busy processes make every figure noisy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from playground.evaluation.bench_app import (
    QUIET_ENV,
    free_port,
    has_picture,
    start_app,
    wait_until_idle,
    wait_until_serving,
)

PROMPTS = (
    "a large red circle on the left and a small blue star on the right on a yellow background",
    "a purple star",
    "a small green triangle at the top",
    "a large white heart on a black background",
    "an orange square in the center on a blue background",
    "a yellow circle at the bottom and a red heart at the top",
    "a blue star on the right on a white background",
    "a small black triangle on the left on a green background",
)


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc; just the process elsewhere)."""
    found, pids = [], [pid]
    while pids:
        p = pids.pop()
        found.append(p)
        children = Path(f"/proc/{p}/task/{p}/children")
        if children.exists():
            pids += [int(c) for c in children.read_text().split()]
    return found


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of a process and (by default) all its children, in MB (0 where /proc is missing)."""
    total = 0.0
    for p in process_tree(pid) if children else [pid]:
        status = Path(f"/proc/{p}/status")
        if status.exists():
            total += sum(int(line.split()[1]) / 1024 for line in status.read_text().splitlines()
                         if line.startswith("VmRSS:"))
    return total


def cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the app's page process and of each of its workers."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for p in process_tree(pid):
        stat = Path(f"/proc/{p}/stat")
        if stat.exists():
            fields = stat.read_text().rsplit(")", 1)[1].split()
            out["page" if p == pid else f"worker {p}"] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def open_page(url: str):
    """A visitor with the page open (a client that has read the app's API), before pressing Generate."""
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def one_session(client, url: str, prompt: str, seed: int, go: threading.Barrier | None = None) -> dict:
    """Submit /generate (when every visitor of the round is ready, with `go`): seconds to the
    first picture and to the end, the finals. The client fetches only the final pictures (a
    browser fetches the ones it shows too, but a client that downloads every frame in this
    process would take the CPU from the app)."""
    from playground.ui.views import DONE_MARK, OUTPUTS, PANEL

    if go is not None:
        go.wait()
    started = time.perf_counter()
    job = client.submit(prompt=prompt, seed=seed, api_name="/generate")
    first, seen, finished = None, 0, {}  # finished: kind -> when its status first said done
    statuses = {kind: OUTPUTS.index(f"{prefix}_status") for kind, prefix in PANEL.items()}
    while not job.done():
        outputs = job.outputs()
        now = time.perf_counter()
        if first is None and any(has_picture(u[0]) or has_picture(u[1]) for u in outputs[seen:]):
            first = now
        for kind, i in statuses.items():
            if kind not in finished and any(str(u[i]).startswith(DONE_MARK) for u in outputs[seen:]):
                finished[kind] = now
        seen = len(outputs)
        time.sleep(0.05 if first is None else 0.25)
    final = job.result()
    ended = time.perf_counter()
    pictures = [fetch_picture(url, final[OUTPUTS.index(k)]) for k in ("diffusion_image", "ar_image")]
    return {"first_s": (first or ended) - started, "total_s": ended - started, "pictures": pictures,
            "prompt": prompt, "seed": seed,
            "done_s": {kind: finished.get(kind, ended) - started for kind in statuses}}


def fetch_picture(url: str, value) -> np.ndarray:
    """A picture output (a file the app serves) as an array."""
    import io
    import urllib.request

    link = value["url"] if isinstance(value, dict) else f"{url}gradio_api/file={value}"
    with urllib.request.urlopen(link, timeout=60) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def alone(engine, prompt: str, seed: int) -> list[np.ndarray]:
    """Both final pictures of one request computed alone (the reference for cross-talk)."""
    from playground.settings import GenerationSettings

    settings = GenerationSettings(seed=seed)
    out = []
    for run in (engine.diffusion_progressive(prompt, **settings.diffusion_kwargs()),
                engine.autoregressive_progressive(prompt, **settings.autoregressive_kwargs())):
        frame = None
        for frame in run:
            pass
        out.append(frame.image())
    return out


def load_mode(assets: str | None, batch: bool, sessions: int, rounds: int, new_pages: bool = False,
              extra: list[str] | None = None) -> dict:
    """One app process under `rounds` of `sessions` simultaneous requests. The class keeps its
    pages open between rounds, or (`new_pages`) every round is a new class opening the page."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile() as log:
        app = start_app(assets, port, log, extra=["--batch", "1" if batch else "0", *(extra or [])])
        try:
            wait_until_serving(app, port, log)
            wait_until_idle(app.pid)
            one_session(open_page(url), url, PROMPTS[0], 0)  # warm-up
            rss_before, cpu_before = rss_mb(app.pid), cpu_s(app.pid)
            results, errors, wall, client_cpu, rss_rounds = [], [], 0.0, 0.0, []
            pages = []
            for r in range(rounds):
                # The class opens the page first, then everyone presses Generate at once.
                if new_pages or not pages:
                    with ThreadPoolExecutor(max_workers=sessions) as pool:
                        pages = list(pool.map(lambda _: open_page(url), range(sessions)))
                go = threading.Barrier(sessions)
                started, client_before = time.perf_counter(), time.process_time()
                with ThreadPoolExecutor(max_workers=sessions) as pool:
                    futures = [pool.submit(one_session, pages[i], url, PROMPTS[i % len(PROMPTS)], 100 * r + i, go)
                               for i in range(sessions)]
                    for f in futures:
                        try:
                            results.append({**f.result(timeout=900), "round": r})
                        except Exception as exc:  # counted and shown: this is a measurement
                            errors.append(f"{type(exc).__name__}: {exc}")
                wall += time.perf_counter() - started
                client_cpu += time.process_time() - client_before
                rss_rounds.append({p: rss_mb(p, children=False) for p in process_tree(app.pid)})
            rss_after, cpu_after = rss_mb(app.pid), cpu_s(app.pid)
            cpu_after["load client (this process)"] = client_cpu
        finally:
            app.terminate()
            app.wait(timeout=30)
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    return {"results": results, "errors": errors, "wall_s": wall, "rss": (rss_before, rss_after), "cpu": cpu,
            "rss_rounds": rss_rounds, "page_pid": app.pid}


def report(name: str, m: dict, engine, check: int) -> None:
    res = m["results"]
    first, total = [r["first_s"] for r in res], [r["total_s"] for r in res]
    print(f"\nbatching {name}: {len(res)} finished, {len(m['errors'])} errors"
          + (f" (first: {m['errors'][0]})" if m["errors"] else ""))
    if not res:
        return
    print(f"  first picture: p50 {percentile(first, 0.5):.1f} s, p95 {percentile(first, 0.95):.1f} s")
    print(f"  submit -> final: p50 {percentile(total, 0.5):.1f} s, p95 {percentile(total, 0.95):.1f} s, "
          f"max {max(total):.1f} s")
    for kind in ("diffusion", "autoregressive"):
        done = [r["done_s"][kind] for r in res]
        print(f"    {kind} picture done: p50 {percentile(done, 0.5):.1f} s, p95 {percentile(done, 0.95):.1f} s")
    rounds = sorted({r["round"] for r in res})
    if len(rounds) > 1:
        print("    final p95 of each round (s): " + ", ".join(
            f"{percentile([x['total_s'] for x in res if x['round'] == k], 0.95):.1f}" for k in rounds))
    print(f"  pictures per second (both panels count): {2 * len(res) / m['wall_s']:.2f}")
    print(f"  app memory (page + workers): {m['rss'][0]:.0f} MB before, {m['rss'][1]:.0f} MB after")
    if len(m["rss_rounds"]) > 1:
        for pid in m["rss_rounds"][0]:
            name = "page" if pid == m["page_pid"] else f"worker {pid}"
            print(f"    {name} after each round (MB): "
                  + ", ".join(f"{r.get(pid, 0.0):.0f}" for r in m["rss_rounds"]))
    print("  CPU seconds spent: " + ", ".join(f"{k} {v:.1f}" for k, v in m["cpu"].items() if v >= 0.05))
    worst = {"diffusion": float("inf"), "autoregressive": float("inf")}
    for r in res[:check]:
        for kind, shown, ref in zip(worst, r["pictures"], alone(engine, r["prompt"], r["seed"])):
            scale = shown.shape[0] // ref.shape[0]
            worst[kind] = min(worst[kind], psnr(shown[::scale, ::scale], ref))
    print(f"  cross-talk check, {min(check, len(res))} sessions against the same request alone: lowest PSNR "
          + ", ".join(f"{k} {v:.1f} dB" for k, v in worst.items()) + " (inf: identical)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", default=os.environ.get("PLAYGROUND_ASSETS"), help="model folder (default: assets/)")
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--rounds", type=int, default=1, help="press Generate together this many times")
    p.add_argument("--modes", nargs="+", choices=("on", "off"), default=["on", "off"])
    p.add_argument("--new-pages", action="store_true",
                   help="every round a new class opens the page (default: the class keeps its pages open)")
    p.add_argument("--check", type=int, default=30, help="sessions whose pictures are compared with solo runs")
    p.add_argument("--app-args", default="", help="more arguments for app.py, e.g. '--max-sessions 60'")
    args = p.parse_args(argv)
    os.environ.update(QUIET_ENV)
    import torch

    from playground.engine import load_engine

    torch.set_num_threads(1)
    engine = load_engine(args.assets)
    measured = {mode: load_mode(args.assets, mode == "on", args.sessions, args.rounds, args.new_pages,
                                args.app_args.split()) for mode in args.modes}
    print(f"\n{args.sessions} sessions pressing Generate at once, {args.rounds} time(s)"
          + (", a new page each time" if args.new_pages else ""))
    for mode, m in measured.items():
        report(mode, m, engine, args.check)


if __name__ == "__main__":
    main()
