"""30 people at once: concurrent gradio_client sessions with different prompts and seeds all
finish without errors, and each gets exactly the pictures its own prompt and seed give when
the engine is called directly (no cross-talk between sessions). Prints latency percentiles."""

import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from playground.runtime.run import GENERATE_CONCURRENCY
from playground.settings import GenerationSettings
from playground.ui.handlers import QUEUE_SIZE
from playground.ui.views import picture
from playground.world.shapes import COLORS, SHAPES

SESSIONS = 30

pytestmark = pytest.mark.slow


def prompts():
    for i in range(SESSIONS):
        yield f"a {COLORS[i % len(COLORS)]} {SHAPES[i % len(SHAPES)]}", 1000 + i


def session(url: str, prompt: str, seed: int) -> tuple[float, list[np.ndarray]]:
    """One visitor: submit, read every update, return (seconds, final [diffusion, AR] pictures)."""
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    started = time.perf_counter()
    job = client.submit(prompt=prompt, seed=seed, api_name="/generate")
    final = job.result()  # waits; iterating the job instead polls every millisecond, 30 times over
    seconds = time.perf_counter() - started
    assert len(job.outputs()) > 2  # it streamed
    return seconds, [fetch(final[i]["url"]) for i in (0, 1)]


def fetch(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB"))


def direct_pictures(engine, prompt: str, seed: int) -> list[np.ndarray]:
    """The final pictures of a direct engine call, drawn as the page draws them."""
    settings = GenerationSettings(seed=seed)
    *_, diffusion = engine.diffusion_progressive(prompt, **settings.diffusion_kwargs())
    *_, autoregressive = engine.autoregressive_progressive(prompt, **settings.autoregressive_kwargs())
    return [picture(diffusion), picture(autoregressive)]


def test_thirty_sessions_at_once(playground_app, tiny_engine):
    _, url = playground_app
    jobs = list(prompts())
    with ThreadPoolExecutor(max_workers=SESSIONS) as pool:
        futures = [pool.submit(session, url, prompt, seed) for prompt, seed in jobs]
        results = [f.result(timeout=600) for f in futures]  # re-raises any session's error

    for (prompt, seed), (_, pictures) in zip(jobs, results):
        expected = direct_pictures(tiny_engine, prompt, seed)
        for got, want, name in zip(pictures, expected, ("diffusion", "autoregressive")):
            assert np.array_equal(got, want), f"{name} picture of {prompt!r} seed {seed} is not its own"

    latencies = sorted(seconds for seconds, _ in results)
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(f"\n{SESSIONS} concurrent sessions: latency p50 {p50:.1f} s, p95 {p95:.1f} s, max {latencies[-1]:.1f} s "
          f"(generate concurrency {GENERATE_CONCURRENCY}, queue size {QUEUE_SIZE})")
