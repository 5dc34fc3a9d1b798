"""The samplers in worker processes (playground/runtime/workers.py): the same frames and pictures as
on a thread, Stop reaches them, a busy pool falls back to threads, and a worker that dies or
fails is reported as a message and replaced. Tiny random models; two spawned workers."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from playground.runtime.run import LiveRun
from playground.runtime.workers import WorkerError, WorkerPool
from playground.settings import GenerationSettings
from playground.ui.views import OUTPUTS

PROMPT = "a large red circle on the left on a blue background"


@pytest.fixture(scope="module")
def pool(tiny_assets):
    pool = WorkerPool(tiny_assets, size=2).start()
    assert pool.wait_ready(timeout=300), "the workers did not load the tiny models"
    yield pool
    pool.close()


def finished_run(engine, pool, seed=3, min_seconds=0.0) -> LiveRun:
    run = LiveRun(engine, PROMPT, GenerationSettings(seed=seed), pool=pool).start(min_seconds)
    assert run.done.wait(timeout=120), "the run did not finish"
    return run


def test_workers_give_the_same_frames_and_pictures_as_a_thread(tiny_engine, pool):
    remote = finished_run(tiny_engine, pool)
    local = finished_run(tiny_engine, None)
    assert remote.in_workers and not local.in_workers
    assert remote.error is None and remote.complete
    for r, t in zip(remote.tracks, local.tracks):
        assert [f.step for f in r.frames] == [f.step for f in t.frames]
        np.testing.assert_array_equal(r.latest.image(), t.latest.image())
        assert r.frames[-1].autoencoder is not None  # re-attached: the page decodes them
    # The samplers' CPU was spent elsewhere: none of it is this process's.
    assert remote.compute_cpu_s > 0 and remote.local_compute_cpu_s == 0
    assert pool.wait_ready(2, timeout=10), "the workers were not given back"


def test_stop_reaches_the_workers(tiny_engine, pool):
    run = LiveRun(tiny_engine, PROMPT, GenerationSettings(seed=1), pool=pool).start(min_seconds=60)
    with run.changed:
        run.changed.wait_for(lambda: all(t.frames for t in run.tracks), timeout=30)
    run.request_stop()
    assert run.done.wait(timeout=5), "a stopped run did not end"
    assert run.error is None and not run.complete
    assert all(t.latest.step < t.latest.total for t in run.tracks)
    assert pool.wait_ready(2, timeout=10)


def test_a_busy_pool_leaves_the_run_on_a_thread(tiny_engine, pool):
    assert pool.wait_ready(2, timeout=10)
    taken = pool.acquire(2)
    try:
        assert pool.acquire(1) is None
        run = finished_run(tiny_engine, pool)
        assert not run.in_workers and run.complete and run.error is None
    finally:
        for worker in taken:
            pool.release(worker)


def test_a_sampler_error_in_a_worker_becomes_a_message(pool):
    assert pool.wait_ready(1, timeout=10)
    (worker,) = pool.acquire(1)
    try:
        with pytest.raises(WorkerError, match="scheduler"):
            list(worker.run("diffusion", PROMPT, {"scheduler": "no-such-scheduler"}))
        # The worker is still serving: the next job runs.
        frames = list(worker.run("autoregressive", PROMPT, {"seed": 0}))
        assert frames and frames[-1][0].done
    finally:
        pool.release(worker)


def test_a_worker_that_dies_is_reported_and_replaced(tiny_engine, pool):
    run = LiveRun(tiny_engine, PROMPT, GenerationSettings(seed=2), pool=pool).start(min_seconds=60)
    with run.changed:
        run.changed.wait_for(lambda: run.diffusion.frames, timeout=30)
    worker = run._workers["diffusion"]
    os.kill(worker.process.pid, signal.SIGKILL)
    assert run.done.wait(timeout=10), "the run hung on a dead worker"
    assert isinstance(run.error, WorkerError) and "exited" in str(run.error)
    assert pool.wait_ready(2, timeout=300), "the dead worker was not replaced"
    assert finished_run(tiny_engine, pool).in_workers


@pytest.fixture(scope="module")
def app_with_workers(tiny_engine, pool):
    """app.py's page computing in two worker processes (its own pool, started by warm_up)."""
    import app

    demo = app.build_demo(engine_loader=lambda: tiny_engine, cache_examples=False, workers=2)
    demo.playground.warm_up()
    assert demo.playground.pool.wait_ready(timeout=300)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()
    demo.playground.pool.close()


def test_the_page_streams_from_workers_and_stops_them(app_with_workers, monkeypatch):
    from gradio_client import Client

    demo, url = app_with_workers
    client = Client(url, verbose=False, analytics_enabled=False)
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 2.5)  # read by the page's process, sent with each job
    job = client.submit(prompt=PROMPT, seed=0, api_name="/generate")
    updates = list(job)
    final = job.result()
    stats = final[OUTPUTS.index("stats")]
    assert stats["computed_in"] == "worker processes"
    # Several pictures of each run before the end (test_app counts them against the target).
    assert sum(isinstance(u[0], str) for u in updates[:-1]) >= 5
    assert sum(isinstance(u[1], str) for u in updates[:-1]) >= 5
    assert final[OUTPUTS.index("ar_status")].startswith("✓ done · token 256/256")

    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 10.0)
    job = client.submit(prompt="a green square", seed=1, api_name="/generate")
    for n, _ in enumerate(job):
        if n == 3:
            break
    run = demo.playground.runs.latest()
    assert run.in_workers
    client.predict(api_name="/stop")
    job.cancel()
    assert run.done.wait(timeout=2)
    assert run.ended_at - run.stop_requested_at < 0.5, "the workers went on for more than 0.5 s"
    assert not run.complete


def test_a_run_stopped_before_it_starts_computes_nothing(tiny_engine, pool):
    assert pool.wait_ready(2, timeout=60)
    run = LiveRun(tiny_engine, PROMPT, GenerationSettings(seed=4), pool=pool)
    run.request_stop()
    run.start(min_seconds=60)
    assert run.done.wait(timeout=10)
    assert run.in_workers and not run.complete
    assert all(len(t.frames) == 0 for t in run.tracks)


ORPHANING_PARENT = """
import os, sys
from playground.runtime.workers import WorkerPool
if __name__ == "__main__":
    pool = WorkerPool(sys.argv[1], size=1).start()
    assert pool.wait_ready(timeout=300)
    [worker] = pool.acquire()
    print(worker.process.pid, flush=True)
    for i, _ in enumerate(worker.run("autoregressive", "a red circle", {"seed": 0})):
        if i == 3:
            os.kill(os.getpid(), 9)  # the page's process dies in the middle of a run
"""


def test_a_worker_exits_when_the_page_process_dies_in_the_middle_of_a_run(tiny_assets, tmp_path):
    """The worker finishes its run into a queue nobody reads, notices its parent is gone and
    exits: it does not wait forever to flush the unread frames."""
    import subprocess
    import sys
    import time

    script, out = tmp_path / "parent.py", tmp_path / "out.txt"
    script.write_text(ORPHANING_PARENT)
    with out.open("w") as stdout:
        parent = subprocess.run([sys.executable, str(script), str(tiny_assets)], stdout=stdout, timeout=300,
                                cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert parent.returncode == -signal.SIGKILL
    pid = int(out.read_text().split()[0])

    def running() -> bool:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"  # a zombie has exited (nobody reaped it yet)

    deadline = time.monotonic() + 60
    while running() and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = running()
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the orphaned worker was still running 60 s after its parent died"


def run_malloc_script(body: str, how: str = "") -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter (with `how` as sys.argv[1], and `rss()`: its resident MB)."""
    rss = "rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024\n"
    return subprocess.run([sys.executable, "-c", "import sys, torch\n" + rss + body, how],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_keeps_a_freed_tensor_for_the_next_step():
    """A process that keeps freed memory does not give a step's large tensor back to the system
    (to map it again at the next step); one that does not, gives it back."""
    script = (
        "from playground.engine import keep_freed_memory\n"
        "if sys.argv[1] == 'keep': keep_freed_memory()\n"
        "x = torch.ones(16 << 20)  # 64 MB\n"
        "before = rss(); del x; print(before - rss())\n"
    )
    given_back = {how: int(run_malloc_script(script, how).stdout.split()[-1]) for how in ("keep", "default")}  # MB
    assert given_back["default"] >= 60 and given_back["keep"] <= 4, given_back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_few_malloc_arenas_serve_many_threads():
    """Eight threads that allocate at once get arenas of their own by default; with
    few_malloc_arenas(2) they share two (glibc's malloc_stats lists one "Arena N:" per arena)."""
    script = (
        "import ctypes, threading\n"
        "from playground.engine import few_malloc_arenas\n"
        "if sys.argv[1] == 'few': assert few_malloc_arenas(2)\n"
        "go = threading.Barrier(8)\n"
        "def work(): go.wait(); [bytearray(1000) for _ in range(20000)]\n"
        "threads = [threading.Thread(target=work) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "ctypes.CDLL('libc.so.6').malloc_stats()\n"
    )
    arenas = {how: run_malloc_script(script, how).stderr.count("Arena ") for how in ("few", "default")}
    assert arenas["few"] <= 2 < arenas["default"], arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_give_back_freed_memory_returns_what_a_worker_kept():
    """A batch worker at rest gives back what keep_freed_memory made it keep, when it is more
    than a visitor alone frees."""
    script = (
        "from playground.engine import give_back_freed_memory, keep_freed_memory\n"
        "keep_freed_memory()\n"
        "x = torch.ones(16 << 20)  # 64 MB\n"
        "y = torch.ones(1 << 20); del y; assert not give_back_freed_memory(above_mb=64)\n"
        "del x; kept = rss(); assert give_back_freed_memory(above_mb=64); print(kept - rss())\n"
    )
    assert int(run_malloc_script(script).stdout.split()[-1]) >= 60  # MB
