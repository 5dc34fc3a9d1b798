"""Many visitors' runs computed together: one worker process per paradigm steps every active
request in one network call (continuous batching, as language-model servers do).

Why: the embedded models are small, and a step for one request (a UNet call at batch 2, one
token at batch 2) is mostly fixed cost; thirty requests stepped together cost a few times one
request's step, not thirty times. A request joins at its own first step while others are
mid-run, leaves when it is done or stopped, and its frames are the ones it would get alone (the
batched samplers are tested against solo runs).

    page process                                  batch worker (one for diffusion, one for AR)
    ------------                                  ------------
    BatchPool.acquire(2) -> two BatchHandles  --> ("start", job id, (prompt, kwargs, min s))
    dispatcher thread routes by job id        <-- (job id, "frame", (frame, ms, cpu s)) every step
                                              <-- (job id, "queued", (position, seconds)) while waiting
    Stop: handle.stop.set()                   --> ("stop", job id): dropped before the next step
                                              <-- (job id, "end", error or None)

A handle looks to `LiveRun` like a `SamplerWorker` (runtime/workers.py): `run()` yields
(frame, compute ms, compute CPU s) and `stop.set()` stops it, so a run does not know whether it
is batched. Settings (environment, or app.py's flags): PLAYGROUND_BATCH (1: on, 0: off),
PLAYGROUND_BATCH_SIZE (requests stepped together per paradigm), PLAYGROUND_BATCH_WINDOW_MS (how
long an idle worker waits for more requests before its first step), PLAYGROUND_QUEUE_SIZE.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import pickle
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

from playground.runtime.pacing import CALM_STREAMS
from playground.runtime.workers import POLL_S, READY_TIMEOUT_S, WorkerError, portable

log = logging.getLogger(__name__)

KINDS = ("diffusion", "autoregressive")


FRAMES_UNDER_LOAD = 32  # frames a run sends the page while more than CALM_STREAMS runs are stepped


def sends_frame(step: int, total: int, active: int) -> bool:
    """Whether a batched run's frame at `step` (1-based) of `total` goes to the page while
    `active` runs are stepped together. A few runs: every frame. A class: the first, the last
    and about FRAMES_UNDER_LOAD between (every 8th of 256 tokens; all 12 diffusion steps). The
    page shows a run's newest frame when it is due and keeps the others for the scrub slider,
    so thirty runs' 7,680 token frames cost it their unpickling and wake-ups for nothing."""
    if active <= CALM_STREAMS or step in (1, total):
        return True
    return step % max(1, total // FRAMES_UNDER_LOAD) == 0


@dataclass(frozen=True)
class BatchConfig:
    max_batch: int = 32  # requests stepped together per paradigm; more wait their turn
    window_ms: float = 50.0  # an idle worker waits this long for more requests to start together
    threads: int = 1  # torch threads per batch worker (one core each for the two paradigms)


# ----------------------------------------------------------------------------- the worker side


def new_run(engine, kind: str, prompt: str, kwargs: dict):
    """One request's sampler state for the batched samplers (the embedded models only)."""
    from playground.autoregressive.sample import AutoregressiveRun
    from playground.diffusion.sample import DiffusionRun

    kwargs = {k: v for k, v in kwargs.items() if k != "model"}  # the batch serves the embedded model
    if kind == "diffusion":
        return DiffusionRun(engine.diffusion, prompt, **kwargs)
    return AutoregressiveRun(engine.autoregressive, prompt, **kwargs)


@dataclass
class Active:
    """A request being stepped: its sampler state and what it has cost so far."""

    job: int
    run: object
    min_seconds: float
    started: float = field(default_factory=time.perf_counter)
    compute_ms: float = 0.0
    compute_cpu_s: float = 0.0
    fraction: float = 0.0  # of the run done (the last frame's)

    def due_in(self, now: float) -> float:
        """Seconds until its next step may start: a run lasts at least min_seconds."""
        return self.fraction * self.min_seconds - (now - self.started) if self.min_seconds else 0.0


class BatchLoop:
    """The batch worker's state, apart from its queues (tested without processes)."""

    def __init__(self, engine, kind: str, cfg: BatchConfig, send):
        from playground.autoregressive.kv_cache import BatchedGPT2Decoding
        from playground.autoregressive.sample import write_together
        from playground.diffusion.sample import denoise_together

        self.engine, self.kind, self.cfg, self.send = engine, kind, cfg, send
        if kind == "diffusion":
            self.decoder = None
            self.step_together = lambda runs: denoise_together(engine.diffusion, runs)
        else:  # every request's keys and values in one cache, each row at its own position
            self.decoder = BatchedGPT2Decoding(engine.autoregressive.transformer, rows=2 * cfg.max_batch)
            self.step_together = lambda runs: write_together(engine.autoregressive, runs, self.decoder)
        self.active: dict[int, Active] = {}
        self.waiting: deque[tuple[int, str, dict, float]] = deque()
        self.seconds_per_run = 2.0  # a guess until a run has finished here

    def _drop(self, job: int) -> Active | None:
        """Take a request out of the batch, freeing its rows of the shared cache."""
        a = self.active.pop(job, None)
        if a is not None and self.decoder is not None and getattr(a.run, "rows", None):
            self.decoder.remove(a.run.rows)
            a.run.rows = None
        return a

    # -- requests in and out

    def start(self, job: int, prompt: str, kwargs: dict, min_seconds: float) -> None:
        self.waiting.append((job, prompt, kwargs, min_seconds))
        self.admit()

    def stop(self, job: int) -> None:
        if self._drop(job) is not None:
            self.send(job, "end", None)
            self.admit()
        elif any(w[0] == job for w in self.waiting):
            self.waiting = deque(w for w in self.waiting if w[0] != job)
            self.send(job, "end", None)
            self.tell_positions()

    def admit(self) -> None:
        """Waiting requests join while there is room; the rest are told their place."""
        while self.waiting and len(self.active) < self.cfg.max_batch:
            job, prompt, kwargs, min_seconds = self.waiting.popleft()
            try:
                self.active[job] = Active(job, new_run(self.engine, self.kind, prompt, kwargs), min_seconds)
            except Exception as exc:  # bad request: its page shows the message, the others go on
                self.send(job, "end", f"{type(exc).__name__}: {exc}")
        self.tell_positions()

    def tell_positions(self) -> None:
        rounds = max(1, self.cfg.max_batch)
        for place, (job, *_rest) in enumerate(self.waiting, start=1):
            self.send(job, "queued", (place, (1 + (place - 1) // rounds) * self.seconds_per_run))

    # -- one step

    def step(self) -> float:
        """Step every active run that is due, in one call; seconds until one is due if none."""
        now = time.perf_counter()
        due = [a for a in self.active.values() if a.due_in(now) <= 0]
        if not due:
            return min((a.due_in(now) for a in self.active.values()), default=POLL_S)
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            frames = self.step_together([a.run for a in due])
        except Exception as exc:  # a broken step ends every run in it, with the reason
            for a in due:
                self._drop(a.job)
                self.send(a.job, "end", f"{type(exc).__name__}: {exc}")
            self.admit()
            return 0.0
        spent_ms = (time.perf_counter() - started) * 1000 / len(due)  # each run's share of the call
        spent_cpu = (time.thread_time() - cpu) / len(due)
        finished = False
        for a, frame in zip(due, frames):
            a.compute_ms += spent_ms
            a.compute_cpu_s += spent_cpu
            a.fraction = frame.fraction
            if sends_frame(frame.step, frame.total, len(self.active)):
                self.send(a.job, "frame", (portable(frame), a.compute_ms, a.compute_cpu_s))
            if frame.done:
                self._drop(a.job)
                self.send(a.job, "end", None)
                self.seconds_per_run = 0.7 * self.seconds_per_run + 0.3 * (time.perf_counter() - a.started)
                finished = True
        if finished:
            self.admit()
        return 0.0


def _serve_batch(folder: str, kind: str, cfg: BatchConfig, jobs, results) -> None:
    """A batch worker process: load the embedded models, then step every request it is given."""
    import torch

    from playground.engine import give_back_freed_memory, keep_freed_memory, load_engine

    torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    try:
        engine = load_engine(folder, diffusion_model=[], autoregressive_model=[])
    except Exception as exc:
        results.put([(None, "failed", f"{type(exc).__name__}: {exc}")])
        return
    results.put([(None, "ready", None)])
    outbox: list[tuple] = []  # what a step (or a request) has to say, sent as one message

    def send(job: int, status: str, payload) -> None:
        # Pickled here: a Queue would send tensors through shared-memory files, dearer than the bytes.
        outbox.append((job, status, pickle.dumps(payload) if status == "frame" else payload))

    def flush() -> None:
        # One message a step, not one a request: thirty requests writing together would
        # otherwise cost thirty queue messages (and thirty wake-ups of the page) per token.
        if outbox:
            results.put(list(outbox))
            outbox.clear()

    loop = BatchLoop(engine, kind, cfg, send)
    parent = mp.parent_process()

    def handle(message) -> bool:
        if message is None:
            return False
        what, job, payload = message
        if what == "start":
            loop.start(job, *pickle.loads(payload))
        else:
            loop.stop(job)
        return True

    while True:
        idle = not loop.active
        try:
            message = jobs.get(timeout=1.0) if idle else jobs.get_nowait()
        except queue.Empty:
            message = ()
        if message != ():
            if not handle(message):
                return
            flush()
            if idle and loop.active:  # the first request after a rest: let the others catch up
                deadline = time.monotonic() + cfg.window_ms / 1000
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        if not handle(jobs.get(timeout=left)):
                            return
                    except queue.Empty:
                        break
                    flush()
            continue  # read everything waiting before the next step
        if idle:
            if parent is not None and not parent.is_alive():
                results.cancel_join_thread()  # nobody reads the results any more
                return
            continue
        wait = loop.step()
        flush()
        if not loop.active:  # the last request of a batch finished: at rest, give memory back
            give_back_freed_memory()
        if wait > 0:
            time.sleep(min(wait, 0.02))


# ----------------------------------------------------------------------------- the page side


class _Stop:
    """A handle's stop: tells its worker to drop the request (before its next step)."""

    def __init__(self, handle: "BatchHandle"):
        self._handle = handle
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._handle.worker.send_stop(self._handle.job)


class BatchHandle:
    """One request in a batch worker, used by LiveRun as if it were a SamplerWorker of its own."""

    def __init__(self, worker: "BatchWorker", job: int):
        self.worker, self.job = worker, job
        self.messages: queue.Queue = queue.Queue()
        self.stop = _Stop(self)
        self.queued: tuple[int, float] | None = None  # (place in line, about how many seconds)

    def run(self, kind: str, prompt: str, kwargs: dict, min_seconds: float = 0.0) -> Iterator[tuple]:
        """Yields (frame without decoder, compute ms, compute CPU s) per step, as SamplerWorker.run."""
        self.worker.send_start(self.job, prompt, kwargs, min_seconds)
        try:
            while True:
                try:
                    status, payload = self.messages.get(timeout=POLL_S)
                except queue.Empty:
                    if not self.worker.process.is_alive():
                        raise WorkerError(f"the {kind} batch worker exited (code {self.worker.process.exitcode})") from None
                    continue
                if status == "frame":
                    self.queued = None
                    yield pickle.loads(payload)  # our own child's bytes
                elif status == "queued":
                    self.queued = payload
                elif status == "end":
                    if payload:
                        raise WorkerError(payload)
                    return
        finally:
            self.worker.forget(self.job)


class BatchWorker:
    """One batch worker process and the dispatcher thread that hands its messages to handles."""

    def __init__(self, ctx, folder: str, kind: str, cfg: BatchConfig):
        self.kind = kind
        self.jobs, self.results = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_serve_batch, args=(folder, kind, cfg, self.jobs, self.results),
                                   name=f"playground-batch-{kind}", daemon=True)
        self.handles: dict[int, BatchHandle] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.failed = threading.Event()

    def start(self) -> None:
        self.process.start()
        threading.Thread(target=self._dispatch, daemon=True, name=f"batch-{self.kind}").start()

    def _dispatch(self) -> None:
        while True:
            try:
                messages = self.results.get(timeout=POLL_S)  # [(job, status, payload)], a step's
            except queue.Empty:
                if not self.process.is_alive():
                    self.failed.set()
                    return
                continue
            except (EOFError, OSError):
                return
            for job, status, payload in messages:
                if job is None:
                    (self.ready if status == "ready" else self.failed).set()
                    if status == "failed":
                        log.warning("a batch worker could not load the models: %s", payload)
                    continue
                with self.lock:
                    handle = self.handles.get(job)
                if handle is not None:
                    handle.messages.put((status, payload))

    def handle(self, job: int) -> BatchHandle:
        h = BatchHandle(self, job)
        with self.lock:
            self.handles[job] = h
        return h

    def forget(self, job: int) -> None:
        with self.lock:
            self.handles.pop(job, None)

    @property
    def load(self) -> int:
        with self.lock:
            return len(self.handles)

    def send_start(self, job: int, prompt: str, kwargs: dict, min_seconds: float) -> None:
        self.jobs.put(("start", job, pickle.dumps((prompt, kwargs, min_seconds))))

    def send_stop(self, job: int) -> None:
        self.jobs.put(("stop", job, None))

    def close(self) -> None:
        if self.process.is_alive():
            self.jobs.put(None)
            self.process.join(timeout=2)
            if self.process.is_alive():
                self.process.kill()


class BatchPool:
    """The two batch workers, handing out a diffusion and an autoregressive handle per run: the
    same `acquire(2)` / `release()` as WorkerPool, so LiveRun takes either. `acquire` gives None
    while the workers are loading, or when `max_queue` requests are in already (the page then
    says the queue is full)."""

    def __init__(self, folder, cfg: BatchConfig = BatchConfig(), max_queue: int = 64):
        self.cfg, self.max_queue = cfg, max_queue
        ctx = mp.get_context("spawn")
        self.workers = [BatchWorker(ctx, str(folder), kind, cfg) for kind in KINDS]
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self) -> "BatchPool":
        for w in self.workers:
            w.start()
        return self

    def wait_ready(self, count: int | None = None, timeout: float = READY_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        for w in self.workers:
            while not (w.ready.is_set() or w.failed.is_set()) and time.monotonic() < deadline:
                w.ready.wait(POLL_S)
        return all(w.ready.is_set() for w in self.workers)

    @property
    def ready(self) -> int:
        return 2 if all(w.ready.is_set() and w.process.is_alive() for w in self.workers) else 0

    @property
    def in_use(self) -> int:
        """Requests in the workers now (running or waiting), the larger of the two paradigms."""
        return max(w.load for w in self.workers)

    @staticmethod
    def serves(settings) -> bool:
        """Runs it can take: the autoregressive worker writes in raster order only (a run in
        another order is computed by the page)."""
        return settings.ar_order == "raster"

    def acquire(self, count: int = 2) -> list[BatchHandle] | None:
        if count != 2 or not self.ready:
            return None
        with self._lock:
            if self.in_use >= self.max_queue:
                return None
            job = next(self._ids)
            return [w.handle(job) for w in self.workers]

    def release(self, handle: BatchHandle) -> None:
        """Nothing to give back: a handle forgets itself when its run ends."""

    def close(self) -> None:
        for w in self.workers:
            w.close()
