"""Where the samplers run: a `Track` (one sampler's run and its frames) and the worker
processes that compute tracks away from the page's process.

Why processes: the samplers are Python loops around small torch calls, and the page's own
work (decoding previews, PNG encoding, gradio) is Python too. In one process they take turns
on one interpreter lock; measured on 2 cores, the autoregressive sampler alone took 0.81 s,
beside a viewer-like thread 1.15 s (+42 %), beside the same work in another process 0.85 s.
So each sampler of a run computes in its own worker process (both at once, one core each),
and the page's process only shows what they send:

    page process                               worker process (one per sampler of a run)
    ------------                               --------------
    WorkerPool.acquire() -> SamplerWorker  --> job: (kind, prompt, sampler kwargs, min_seconds)
    RemoteTrack reader thread              <-- ("frame", frame without its decoder, ms, cpu s)
      frame.autoencoder = our own decoder  <-- ... one per step or token ...
    Stop: worker.stop.set()                --> a shared flag, read after every step
                                           <-- ("end", error or None)

A frame carries its tensors (a latent, a token grid: a few kB) and is decoded, as always,
only if and when the page shows it, by the page process's copy of the same autoencoder.
Workers are spawned (a fresh interpreter, not a fork of this one), so, as always with
multiprocessing's spawn, a script that starts them keeps its own work under
`if __name__ == "__main__":` (app.py does). Only the embedded models run in workers (each worker loads them from the assets folder, about
40 MB); real Hub models, which want the GPU and memory once, run on a thread as before.

    pool = WorkerPool(folder, size=4); pool.start()    # background: workers load the models
    worker = pool.acquire()                            # None while none is ready and free
    for message in worker.run("diffusion", prompt, kwargs): ...
    pool.release(worker)
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import pickle
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0  # a worker that has not loaded the models by then is given up
POLL_S = 0.5  # how often a reader checks that its worker is still alive


# ----------------------------------------------------------------------------- frames between processes


def portable(frame):
    """A frame as a worker sends it to the page: without the decoder (the page has its own), an
    autoregressive frame's codes as int16 numpy (a torch tensor pickles about 5 times dearer,
    and a class writing together sends the page thousands of frames a minute)."""
    light = dataclasses.replace(frame, autoencoder=None)
    if getattr(light, "codes", None) is not None and not isinstance(light.codes, np.ndarray):
        light.codes = light.codes.numpy().astype(np.int16)  # codes < 32768, UNWRITTEN = -1
    return light


def restored(frame, autoencoder):
    """The page's frame from a `portable` one: its own decoder, the codes as a torch tensor."""
    import torch

    frame.autoencoder = autoencoder
    if isinstance(getattr(frame, "codes", None), np.ndarray):
        frame.codes = torch.from_numpy(frame.codes.astype(np.int64))
    return frame


# ----------------------------------------------------------------------------- a sampler's run


@dataclass
class Track:
    """One sampler's run: its frames so far and the compute time spent to reach each."""

    kind: str  # "diffusion" | "autoregressive"
    generator: Iterator | None  # None: the frames come from a worker process (`receive`)
    frames: list = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)  # cumulative, one per frame
    compute_cpu_s: float = 0.0  # CPU time spent in this sampler (in whichever process)
    finished: bool = False
    shown_step: int = 0  # step of the newest frame handed to the viewer
    shown: list = field(default_factory=list)  # the frames the viewer was sent (decoded already)

    @property
    def remote(self) -> bool:
        """Computed in a worker process (its CPU time is not this process's)."""
        return self.generator is None

    @property
    def latest(self):
        return self.frames[-1] if self.frames else None

    @property
    def total_compute_ms(self) -> float:
        return self.compute_ms[-1] if self.compute_ms else 0.0

    @property
    def unshown(self) -> bool:
        return bool(self.frames) and self.frames[-1].step > self.shown_step

    def advance(self):
        """Compute one step (one denoising step, one token); its frame, None past the end."""
        started, cpu = time.perf_counter(), time.thread_time()
        frame = next(self.generator, None)
        spent = (time.perf_counter() - started) * 1000
        self.compute_cpu_s += time.thread_time() - cpu
        if frame is None:
            self.finished = True
            return None
        self.receive(frame, self.total_compute_ms + spent, self.compute_cpu_s)
        return frame

    def receive(self, frame, compute_ms: float, compute_cpu_s: float) -> None:
        """Add a frame computed elsewhere (or just now), with the totals reached at it."""
        self.compute_ms.append(compute_ms)
        self.compute_cpu_s = compute_cpu_s
        self.frames.append(frame)
        self.finished = frame.done

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()  # a stopped sampler lets go of its tensors now

    def due_in(self, elapsed: float, min_seconds: float) -> float:
        """Seconds until the next step may start, for a run paced to last at least min_seconds."""
        if not min_seconds or not self.frames:
            return 0.0
        return self.frames[-1].fraction * min_seconds - elapsed

    def compute_ms_at(self, frame) -> float:
        """The compute time reached at one of this track's frames. (Frames may skip steps: a
        batch worker stepping a class sends only some of them; see batching.sends_frame.)"""
        i = frame.step - 1
        if not (i < len(self.frames) and self.frames[i] is frame):
            i = next(j for j in range(len(self.frames) - 1, -1, -1) if self.frames[j] is frame)
        return self.compute_ms[i]

    @property
    def keyframes(self) -> list:
        """The frames to replay (filmstrip, GIF): those shown live, else all of them."""
        if self.shown and self.frames and self.shown[-1] is not self.frames[-1]:
            return self.shown + [self.frames[-1]]
        return self.shown or self.frames


# ----------------------------------------------------------------------------- the worker side


class StopFlag:
    """A stop request shared with a worker process: one byte of shared memory and no lock.
    (A multiprocessing Event will not do: its set() waits for every process waiting on it to
    wake, and one that was killed never does.)"""

    def __init__(self, ctx):
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0

    def is_set(self) -> bool:
        return bool(self._value.value)


def run_track(track: Track, stop: StopFlag, min_seconds: float, on_frame) -> None:
    """Advance one track to its end, or until `stop` is set, paced to last at least
    min_seconds; `on_frame(track)` after every step that made a frame. (A worker's whole job.)"""
    started = time.perf_counter()
    while not stop.is_set() and not track.finished:
        wait = track.due_in(time.perf_counter() - started, min_seconds)
        if wait > 0:
            time.sleep(min(wait, 0.02))  # looks at the stop flag every 20 ms
            continue
        if track.advance() is not None:
            on_frame(track)


def _serve(folder: str, threads: int, jobs, results, stop) -> None:
    """A worker process: load the embedded models once, then run jobs until told to quit."""
    import torch

    from playground.engine import keep_freed_memory, load_engine

    torch.set_num_threads(threads)
    keep_freed_memory()
    try:
        engine = load_engine(folder, diffusion_model=[], autoregressive_model=[])
    except Exception as exc:  # reported; the pool gives this worker up
        results.put(("failed", f"{type(exc).__name__}: {exc}"))
        return
    results.put(("ready", None))

    def send(track: Track) -> None:
        results.put(("frame", pickle.dumps((portable(track.latest), track.total_compute_ms, track.compute_cpu_s))))

    parent = mp.parent_process()
    while True:
        try:
            job = jobs.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                # The page's process has gone: so does its worker, without waiting to flush the
                # frames nobody will read (a process joins its queues' feeder threads at exit, and
                # this one would wait forever once the pipe is full).
                results.cancel_join_thread()
                return
            continue
        if job is None:
            return
        kind, prompt, kwargs, min_seconds = pickle.loads(job)
        error = None
        try:
            run = engine.diffusion_progressive if kind == "diffusion" else engine.autoregressive_progressive
            track = Track(kind, run(prompt, **kwargs))
            try:
                run_track(track, stop, min_seconds, send)
            finally:
                track.close()
        except Exception as exc:  # the page shows it as a message
            error = f"{type(exc).__name__}: {exc}"
        results.put(("end", error))


# ----------------------------------------------------------------------------- the page side


class WorkerError(RuntimeError):
    """A worker process failed or went away in the middle of a run."""


class SamplerWorker:
    """One worker process, its job and result queues, and its stop flag."""

    queued = None  # a worker of its own never waits in line (a batch handle may: runtime/batching.py)

    def __init__(self, ctx, folder: str, threads: int):
        self.jobs, self.results, self.stop = ctx.Queue(), ctx.Queue(), StopFlag(ctx)
        self.process = ctx.Process(target=_serve, args=(folder, threads, self.jobs, self.results, self.stop),
                                   name="playground-sampler", daemon=True)

    def start(self) -> None:
        self.process.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """Block until the worker has loaded its models; False if it failed or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.is_alive():
            try:
                status, detail = self.results.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if status == "failed":
                log.warning("a sampler worker could not load the models: %s", detail)
                return False
            return status == "ready"
        return False

    def run(self, kind: str, prompt: str, kwargs: dict, min_seconds: float = 0.0) -> Iterator[tuple]:
        """Run one sampler; yields (frame without decoder, compute ms, compute CPU s) per step.
        Raises WorkerError when the sampler failed or the process died."""
        # Pickled here, as the frames are in the worker: a Queue would send tensors through
        # shared-memory files, far dearer than the few kB they hold.
        self.jobs.put(pickle.dumps((kind, prompt, kwargs, min_seconds)))
        while True:
            try:
                status, payload = self.results.get(timeout=POLL_S)
            except queue.Empty:
                if not self.process.is_alive():
                    raise WorkerError(f"the {kind} worker process exited (code {self.process.exitcode})") from None
                continue
            if status == "frame":
                yield pickle.loads(payload)  # our own child's bytes
            elif status == "end":
                if payload:
                    raise WorkerError(payload)
                return

    def close(self) -> None:
        if self.process.is_alive():
            self.stop.set()
            self.jobs.put(None)
            self.process.join(timeout=2)
            if self.process.is_alive():
                self.process.kill()


class WorkerPool:
    """`size` worker processes for the embedded models in `folder`, started in the background.
    Spawned, not forked: the page's process has threads (gradio, torch) a fork would copy
    mid-flight."""

    def __init__(self, folder: str | Path, size: int, threads: int = 1):
        self.folder, self.size, self.threads = str(folder), size, threads
        self._ctx = mp.get_context("spawn")
        self._free: list[SamplerWorker] = []
        self._all: list[SamplerWorker] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> "WorkerPool":
        """Start the workers; each joins the pool once it has loaded the models."""
        for _ in range(self.size):
            self._add()
        return self

    def _add(self) -> None:
        worker = SamplerWorker(self._ctx, self.folder, self.threads)
        with self._lock:
            if self._closed:
                return
            self._all.append(worker)
        worker.start()
        threading.Thread(target=self._join_when_ready, args=(worker,), daemon=True, name="sampler-start").start()

    def _join_when_ready(self, worker: SamplerWorker) -> None:
        if worker.wait_ready():
            self.release(worker)
        else:
            self.discard(worker, replace=False)  # loading failed: runs stay on threads

    @property
    def ready(self) -> int:
        """Workers ready and free now."""
        with self._lock:
            return len(self._free)

    def wait_ready(self, count: int | None = None, timeout: float = READY_TIMEOUT_S) -> bool:
        """Block until `count` (default: all) workers are ready and free."""
        count = self.size if count is None else count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                free, alive = len(self._free), len(self._all)
            if free >= count:
                return True
            if alive < count:  # workers that could not load the models are not replaced
                return False
            time.sleep(0.05)
        return False

    @staticmethod
    def serves(settings) -> bool:
        """Runs it can take: every run of the embedded models (a worker runs any sampler)."""
        return True

    def acquire(self, count: int = 1) -> list[SamplerWorker] | None:
        """`count` free workers, or None (without waiting) when fewer are free."""
        with self._lock:
            if len(self._free) < count:
                return None
            taken, self._free = self._free[:count], self._free[count:]
        for worker in taken:
            worker.stop.clear()  # a stop from now on is the new holder's
        return taken

    def release(self, worker: SamplerWorker) -> None:
        """Give a worker back after its run (a dead one is replaced instead)."""
        if not worker.process.is_alive():
            self.discard(worker)
            return
        with self._lock:
            if not self._closed:
                self._free.append(worker)
                return
        worker.close()

    def discard(self, worker: SamplerWorker, replace: bool = True) -> None:
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            closed = self._closed
        worker.close()
        if replace and not closed:
            log.warning("a sampler worker went away; starting another")
            self._add()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all, self._free = self._all, [], []
        for worker in workers:
            worker.close()
