"""A class at once through the page: requests batched in the two batch workers
(runtime/batching.py), driven with the official client as browsers would.

Each session's pictures must be the ones its own prompt and seed give alone (no cross-talk),
a session beyond the batch size is told its place in the queue, and a session that stops
leaves the others finishing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from playground.evaluation.load import PROMPTS, alone


@pytest.fixture(scope="module")
def batched_app(tiny_engine):
    """app.py's page with batching on (batches of 4: the rest of 8 sessions wait their turn)."""
    import app
    from playground.runtime.batching import BatchConfig

    demo = app.build_demo(engine_loader=lambda: tiny_engine, cache_examples=False,
                          batch=BatchConfig(max_batch=4, window_ms=50))
    demo.playground.warm_up()
    assert demo.playground.pool.ready, "the batch workers did not start"
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()
    demo.playground.pool.close()


def session(url: str, prompt: str, seed: int, cancel_after_first: bool = False) -> dict:
    from gradio_client import Client

    from playground.ui.views import OUTPUTS

    client = Client(url, verbose=False, analytics_enabled=False)
    job = client.submit(prompt=prompt, seed=seed, api_name="/generate")
    if cancel_after_first:
        while not any(isinstance(u[0], str) for u in job.outputs()):
            assert not job.done(), "the run ended before it could be stopped"
            time.sleep(0.02)
        job.cancel()
        return {"cancelled": True}
    final = job.result()
    statuses = [u[OUTPUTS.index("diffusion_status")] for u in job.outputs()]
    pictures = [np.asarray(Image.open(final[OUTPUTS.index(k)]).convert("RGB")) for k in ("diffusion_image", "ar_image")]
    return {"pictures": pictures, "statuses": [s for s in statuses if isinstance(s, str)]}


@pytest.mark.slow
def test_eight_batched_sessions_get_their_own_pictures_and_a_stop_spares_the_others(batched_app, tiny_engine):
    demo, url = batched_app
    with ThreadPoolExecutor(max_workers=9) as pool:
        stopped = pool.submit(session, url, PROMPTS[0], 999, True)
        futures = [pool.submit(session, url, p, seed) for seed, p in enumerate(PROMPTS)]
        results = [f.result(timeout=300) for f in futures]
    assert stopped.result()["cancelled"]
    for seed, (prompt, result) in enumerate(zip(PROMPTS, results)):
        # Autoregressive: the same tokens, so the same picture. Diffusion: batched float math may
        # differ in the last bits, allowed down to 60 dB (the codebook snaps it back: equal so far).
        for kind, shown, own in zip(("diffusion", "autoregressive"), result["pictures"], alone(tiny_engine, prompt, seed)):
            scale = shown.shape[0] // own.shape[0]
            shown = shown[::scale, ::scale].astype(np.float64)  # the panel is the picture upscaled
            mse = float(np.mean((shown - own) ** 2))
            if kind == "autoregressive":
                assert mse == 0, f"{prompt!r}: not the tokens it writes alone"
            else:
                assert mse == 0 or 10 * np.log10(255**2 / mse) >= 60, f"{prompt!r}: not the picture it gives alone"
    # 9 sessions, batches of 4: some waited, and were told their place
    assert any("in the queue" in s for r in results for s in r["statuses"]), [r["statuses"][:3] for r in results]
    # the stopped request left the workers: nothing is left in them
    deadline = time.monotonic() + 5
    while demo.playground.pool.in_use and time.monotonic() < deadline:
        time.sleep(0.05)
    assert demo.playground.pool.in_use == 0
