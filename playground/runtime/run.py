"""One press of Generate (or Edit) as it computes: `LiveRun`, and the engine it runs on.

A run holds two tracks, the diffusion run and the autoregressive run. Each sampler computes in
its own worker process (runtime/workers.py) when two are free, else both run on one thread of
this process, interleaved by time share (the one that has used less compute time takes the
next step), so that the two pictures grow together and neither waits for the other to finish.
The page reads the newest frames as the `Pacer` (runtime/pacing.py) allows; frames that are
never shown are never decoded.

A very fast engine (such as the tiny test models) would finish before anyone saw it, so a run
is never faster than MIN_RUN_SECONDS: the worker waits when a run is ahead of that schedule.
The embedded models take longer than that on a CPU, and are never held back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Callable, Iterator

import torch

from playground.editing import EditInput, sampler_kwargs
from playground.engine import Engine, load_engine
from playground.runtime.pacing import Pacer
from playground.runtime.workers import SamplerWorker, Track, WorkerPool, restored
from playground.settings import EMBEDDED, GenerationSettings

log = logging.getLogger(__name__)

MIN_RUN_SECONDS = 1.0  # a run is never faster than this, so that it can be watched
GENERATE_CONCURRENCY = 2  # Generate requests computed at the same time (one core each here)


def torch_threads(concurrency: int = GENERATE_CONCURRENCY) -> int:
    """Threads per torch op: each running Generate keeps two threads busy (compute, display)."""
    return max(1, (os.cpu_count() or 1) // (2 * concurrency))


class EngineHolder:
    """Loads the engine on first use, once, and shares it between all sessions."""

    def __init__(self, loader: Callable[[], Engine] | None = None):
        self._loader = loader or load_engine  # load_engine reads PLAYGROUND_ASSETS
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def get(self) -> Engine:
        with self._lock:
            if self._engine is None:
                torch.set_num_threads(torch_threads())
                started = time.perf_counter()
                self._engine = self._loader()
                log.info("models loaded from %s in %.1f s", self._engine.folder, time.perf_counter() - started)
            return self._engine


class LiveRun:
    """Both runs of one Generate, computed on a worker thread and read by the viewer."""

    def __init__(self, engine: Engine, prompt: str, settings: GenerationSettings, run_id: str | None = None,
                 edit: EditInput | None = None, pool: WorkerPool | None = None,
                 starts: tuple[dict, dict] | None = None):
        self.id = run_id or uuid.uuid4().hex[:12]
        self.prompt = prompt
        self.settings = settings
        self.edit = edit  # the picture (and region) an edit starts from; None: generation from the prompt
        diffusion_kwargs, ar_kwargs = sampler_kwargs(settings, edit, engine.grid)
        if starts is not None:  # a branch: where each sampler starts (branching.BranchPoint.sampler_kwargs)
            diffusion_kwargs, ar_kwargs = {**diffusion_kwargs, **starts[0]}, {**ar_kwargs, **starts[1]}
        # (A generator runs no code before its first step: making both costs nothing.)
        self.diffusion = Track("diffusion", engine.diffusion_progressive(prompt, **diffusion_kwargs))
        self.autoregressive = Track("autoregressive", engine.autoregressive_progressive(prompt, **ar_kwargs))
        # start() hands each sampler to its own worker process when two are free (embedded models only).
        embedded = all(engine.model_name(kind, model) == EMBEDDED for kind, model in
                       (("diffusion", settings.diffusion_model), ("autoregressive", settings.autoregressive_model)))
        self._pool = pool if embedded and pool is not None and pool.serves(settings) else None
        self._jobs = {"diffusion": (diffusion_kwargs, engine.diffusion.autoencoder),
                      "autoregressive": (ar_kwargs, engine.autoregressive.autoencoder)}  # kind -> kwargs, decoder
        self._workers: dict[str, SamplerWorker | None] = {}  # kind -> the worker computing it (None once ended)
        self._workers_lock = threading.Lock()
        self.stop = threading.Event()  # set by Stop (or a closed connection): compute halts after this step
        self.done = threading.Event()  # the worker has exited
        self.changed = threading.Condition()  # a new frame, the end, or a stop request
        self.error: BaseException | None = None
        self.started = time.perf_counter()  # reset when the worker starts
        self.stop_requested_at: float | None = None
        self.ended_at: float | None = None  # when the worker exited
        self.downloads: list[str] | None = None  # written once, after the run
        self.downloads_lock = threading.Lock()

    @property
    def tracks(self) -> tuple[Track, Track]:
        return (self.diffusion, self.autoregressive)

    @property
    def complete(self) -> bool:
        return all(t.finished for t in self.tracks)

    @property
    def key(self) -> str:
        """What the scrub slider needs to find this run again, or recompute it."""
        key = {"id": self.id, "prompt": self.prompt, "settings": self.settings.as_dict()}
        if self.edit is not None:
            key["edit"] = self.edit.as_dict()  # the picture itself (a few kB), to compute the edit again
        return json.dumps(key)

    # -- the worker

    def start(self, min_seconds: float | None = None) -> "LiveRun":
        """Compute on a worker thread; each run paced to last at least min_seconds (MIN_RUN_SECONDS)."""
        min_seconds = MIN_RUN_SECONDS if min_seconds is None else min_seconds
        workers = self._pool.acquire(2) if self._pool is not None else None
        if workers:
            with self._workers_lock:
                for track, worker in zip(self.tracks, workers):
                    track.close()  # never started: the worker computes it instead
                    track.generator = None
                    self._workers[track.kind] = worker
                    if self.stop.is_set():  # stopped before it started
                        worker.stop.set()
            self.started = time.perf_counter()
            readers = [threading.Thread(target=self._receive, args=(track, min_seconds), daemon=True,
                                        name=f"run-{self.id}-{track.kind}") for track in self.tracks]
            for reader in readers:
                reader.start()
            threading.Thread(target=self._finish_after, args=(readers,), daemon=True, name=f"run-{self.id}").start()
        else:
            threading.Thread(target=self.compute, args=(min_seconds,), name=f"run-{self.id}", daemon=True).start()
        return self

    @property
    def in_workers(self) -> bool:
        """The samplers run in worker processes (else on this process's worker thread)."""
        return bool(self._workers)

    def _receive(self, track: Track, min_seconds: float) -> None:
        """Reader thread of a track computed by a worker process: its frames, as they come."""
        worker = self._workers[track.kind]
        kwargs, decoder = self._jobs[track.kind]
        try:
            for frame, compute_ms, compute_cpu_s in worker.run(track.kind, self.prompt, kwargs, min_seconds):
                track.receive(restored(frame, decoder), compute_ms, compute_cpu_s)  # this process's decoder
                with self.changed:
                    self.changed.notify_all()
        except BaseException as exc:  # reported to the viewer, which turns it into a message
            self.error = exc
            self.request_stop()  # the other sampler too
        finally:
            with self._workers_lock:  # from now on a Stop of this run no longer reaches the worker
                self._workers[track.kind] = None
            self._pool.release(worker)

    def _finish_after(self, readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        self.ended_at = time.perf_counter()
        self.done.set()
        with self.changed:
            self.changed.notify_all()

    def request_stop(self) -> None:
        """Stop the compute after the current step (Stop, or the page went away)."""
        if not self.stop.is_set():
            self.stop_requested_at = time.perf_counter()
        self.stop.set()
        with self._workers_lock:
            for worker in self._workers.values():
                if worker is not None:
                    worker.stop.set()
        with self.changed:
            self.changed.notify_all()

    def compute(self, min_seconds: float = 0.0) -> None:
        """Advance both runs, by time share, until both are finished or stop is set. Each run
        is paced to last at least min_seconds (0: as fast as the engine goes)."""
        self.started = time.perf_counter()
        try:
            while not self.stop.is_set() and not self.complete:
                track, wait = self._next_track(min_seconds)
                if track is None:
                    with self.changed:
                        self.changed.wait(timeout=wait)  # request_stop() wakes it early
                    continue
                track.advance()
                with self.changed:
                    self.changed.notify_all()
        except BaseException as exc:  # reported to the viewer, which turns it into a message
            self.error = exc
        finally:
            for track in self.tracks:
                track.close()
            self.ended_at = time.perf_counter()
            self.done.set()
            with self.changed:
                self.changed.notify_all()

    def _next_track(self, min_seconds: float) -> tuple[Track | None, float]:
        """The run to advance (the one that has used less compute time), or None and how long
        to wait until one is due."""
        elapsed = time.perf_counter() - self.started
        unfinished = [t for t in self.tracks if not t.finished]
        due_in = {t.kind: t.due_in(elapsed, min_seconds) for t in unfinished}
        ready = [t for t in unfinished if due_in[t.kind] <= 0]
        if ready:
            return min(ready, key=lambda t: t.total_compute_ms), 0.0
        return None, min(due_in.values(), default=0.0)

    # -- the viewer

    @property
    def compute_cpu_s(self) -> float:
        """CPU time spent in the samplers so far (in this process or in worker processes)."""
        return sum(t.compute_cpu_s for t in self.tracks)

    @property
    def local_compute_cpu_s(self) -> float:
        """The part of compute_cpu_s spent in this process."""
        return sum(t.compute_cpu_s for t in self.tracks if not t.remote)

    @property
    def queued(self) -> tuple[int, float] | None:
        """(place in line, about how many seconds) while a batch worker has no room for this run yet."""
        with self._workers_lock:
            places = [w.queued for w in self._workers.values() if w is not None and w.queued]
        return max(places) if places else None

    def frames_to_show(self, pacer: Pacer) -> Iterator[list[tuple[Track, object]]]:
        """Yield [(track, its newest frame)] whenever the pacer says the page is due an update,
        and [] when the run's place in a batch worker's line changes. Ends when the worker has
        exited and the last frames were handed out."""
        told = None
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.done.is_set() or any(t.unshown for t in self.tracks), timeout=0.1)
            if self.error is not None:
                raise self.error
            if (queued := self.queued) != told and not any(t.frames for t in self.tracks):
                told = queued
                yield []
                continue
            due, wait = pacer.due(self)
            if due:
                for t in due:
                    t.shown_step = t.latest.step
                    t.shown.append(t.latest)
                yield [(t, t.latest) for t in due]
            elif wait:
                time.sleep(wait)
            elif self.done.is_set():
                return

