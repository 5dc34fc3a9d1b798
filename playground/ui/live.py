"""The logic behind the playground page (app.py holds only the layout and the wiring).

One press of Generate is a `LiveRun`: each sampler computes in its own worker process
(`workers.py`) when two are free, else both run on one thread, interleaved by time share (the
one that has used less compute time takes the next step), so the two pictures grow together
and neither waits for the other to finish. The browser side is `Playground.generate`,
a gradio generator: when the `Pacer` says so (at most MAX_UPDATES_PER_SECOND times a second,
and within a CPU budget), it decodes the newest frame of each run and yields it. Frames that
are never shown are never decoded (frames decode lazily).

    Playground        the event handlers app.py wires to its components (one per app, shared)
    LiveRun / Track   one Generate: the two runs, their frames and compute times, the stop flag
    Pacer             when to update the page
    *_view, filmstrip the pictures and status lines shown for a frame
    RunStore          the last few runs by id, for the scrub slider and the downloads

A very fast engine (such as the tiny test models) would finish before anyone saw it, so a run
is never faster than MIN_RUN_SECONDS: the worker waits when a run is ahead of that schedule.
The embedded models take longer than that on a CPU, and are never held back.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import gradio as gr
import numpy as np
import torch
from gradio.data_classes import FileData
from PIL import Image

from playground.editing import EditInput, load_edit, load_picture, open_image, sampler_kwargs, strength_timeline
from playground.engine import Engine, load_engine
from playground.errors import EditInputError, ModelNotFoundError, SettingsError
from playground.frames import upscale
from playground.outputs import comparison_strip, frame_at, pick, preview_image, save_gif, save_mp4
from playground.runtime.workers import SamplerWorker, Track, WorkerPool
from playground.settings import (
    EMBEDDED,
    MAX_SEED,
    EditSettings,
    GenerationSettings,
    suggested_diffusion_settings,
    validate_prompt,
)
from playground.world.shapes import normalize_prompt, unknown_words
from playground.world.text import MAX_PROMPT_CHARS

log = logging.getLogger(__name__)

MAX_UPDATES_PER_SECOND = 20  # page updates (both panels): more is wasted on a projector
DISPLAY_SHARE = 0.2  # CPU for showing frames, at most this share of the samplers' CPU
MIN_FRAMES = 12  # ... but every run shows at least this many frames, whatever they cost
MIN_RUN_SECONDS = 1.0  # a run is never faster than this, so that it can be watched
PREVIEW_SCALE = 4  # 64x64 pictures shown at 256x256, nearest neighbour (crisp on a projector)
FILMSTRIP_FRAMES = 8
FILMSTRIP_SCALE = 2
GIF_FRAMES = 32
GENERATE_CONCURRENCY = 2  # Generate requests computed at the same time (one core each here)
DEFAULT_CONCURRENCY = 4  # every other event (scrub, stop, ...)
QUEUE_SIZE = 64  # requests waiting beyond this are refused with "queue full"
QUEUE_POLL_S = 0.01  # how often gradio's queue looks for an event to start (see calm_queue)
MAX_RUNS = 8  # finished runs kept for scrubbing and downloads (a few MB each)
MAX_SESSIONS = 1024

# The names of the outputs of Generate, in order (app.py builds its components in this order).
# The first two are the API's pictures: the diffusion picture and the autoregressive picture.
OUTPUTS = (
    "diffusion_image",
    "ar_image",
    "diffusion_noisy",
    "diffusion_status",
    "ar_status",
    "ar_candidates",
    "diffusion_filmstrip",
    "ar_filmstrip",
    "scrub",
    "run_key",
    "stats",
)
SCRUB_OUTPUTS = OUTPUTS[:6]  # what the slider changes: the two panels
# Cached examples show the downloads too (for a live run they are a separate, later event).
EXAMPLE_OUTPUTS = OUTPUTS + ("downloads",)


def ordered(values: dict, names: tuple[str, ...] = OUTPUTS) -> tuple:
    """A handler's return tuple from {output name: value}; outputs not named are left as they are."""
    unknown = set(values) - set(names)
    assert not unknown, f"not outputs: {unknown}"
    return tuple(values.get(name, gr.skip()) for name in names)


# ----------------------------------------------------------------------------- the engine


def calm_queue(demo: gr.Blocks, poll_s: float = QUEUE_POLL_S) -> None:
    """Let the queue of `demo` (after demo.queue()) look for events to start every `poll_s`.

    While it has nothing to start, gradio 6.31's queue sleeps 1 ms and looks again: about 850
    wake-ups a second on the 2-core machine, 7 % of a core in the server's event loop whether or
    not anyone uses the page, taken from the samplers during a run. Every 10 ms, an event waits
    at most 10 ms more to start (a run takes 1-2 s). `Queue.sleep_when_free` is gradio's own
    attribute, not an option of demo.queue(); where a gradio version lacks it, nothing changes."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and isinstance(getattr(queue, "sleep_when_free", None), (int, float)):
        queue.sleep_when_free = max(queue.sleep_when_free, poll_s)


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


# ----------------------------------------------------------------------------- runs


class LiveRun:
    """Both runs of one Generate, computed on a worker thread and read by the viewer."""

    def __init__(self, engine: Engine, prompt: str, settings: GenerationSettings, run_id: str | None = None,
                 edit: EditInput | None = None, pool: WorkerPool | None = None):
        self.id = run_id or uuid.uuid4().hex[:12]
        self.prompt = prompt
        self.settings = settings
        self.edit = edit  # the picture (and region) an edit starts from; None: generation from the prompt
        diffusion_kwargs, ar_kwargs = sampler_kwargs(settings, edit, engine.grid)
        # (A generator runs no code before its first step: making both costs nothing.)
        self.diffusion = Track("diffusion", engine.diffusion_progressive(prompt, **diffusion_kwargs))
        self.autoregressive = Track("autoregressive", engine.autoregressive_progressive(prompt, **ar_kwargs))
        # start() hands each sampler to its own worker process when two are free (embedded models only).
        embedded = all(engine.model_name(kind, model) == EMBEDDED for kind, model in
                       (("diffusion", settings.diffusion_model), ("autoregressive", settings.autoregressive_model)))
        self._pool = pool if embedded else None
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
                frame.autoencoder = decoder  # this process's copy of the same autoencoder
                track.receive(frame, compute_ms, compute_cpu_s)
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

    def frames_to_show(self, pacer: "Pacer") -> Iterator[list[tuple[Track, object]]]:
        """Yield [(track, its newest frame)] whenever the pacer says the page is due an update.
        Ends when the worker has exited and the last frames were handed out."""
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.done.is_set() or any(t.unshown for t in self.tracks), timeout=0.1)
            if self.error is not None:
                raise self.error
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


class Pacer:
    """When the page gets its next update (both panels at once: gradio's cost is per message).

    Showing a frame costs CPU: decoding it, encoding the PNG, gradio's work to send it. On two
    cores that CPU is taken from the samplers, so everything this process spends beyond the
    samplers' own CPU is kept under `share` of theirs, and under `max_per_second` updates.
    Whatever the cost, a run's first and last frames are shown, and a frame each time a run
    has gone 1/min_frames further, so that every run shows at least `min_frames` frames."""

    def __init__(self, max_per_second: float = MAX_UPDATES_PER_SECOND, share: float = DISPLAY_SHARE,
                 min_frames: int = MIN_FRAMES):
        self.interval = 1 / max_per_second
        self.share = share
        self.min_frames = min_frames
        self.last_update = float("-inf")
        self.process_cpu_at_start = time.process_time()

    def display_cpu_s(self, run: "LiveRun") -> float:
        return time.process_time() - self.process_cpu_at_start - run.local_compute_cpu_s

    def due(self, run: "LiveRun") -> tuple[list[Track], float]:
        """The runs to show now (those with new frames), or none and how long to wait (0: none new)."""
        waiting = [t for t in run.tracks if t.unshown]
        if not waiting:
            return [], 0.0
        now = time.perf_counter()
        if run.done.is_set() or any(t.shown_step == 0 or t.latest.done for t in waiting):
            return self._update(waiting, now)  # first frames, last frames, or the compute has stopped
        wait = self.last_update + self.interval - now
        if wait > 0:
            return [], wait
        behind = any((t.latest.step - t.shown_step) / t.latest.total >= 1 / self.min_frames for t in waiting)
        if behind or self.display_cpu_s(run) <= self.share * run.compute_cpu_s:
            return self._update(waiting, now)
        return [], self.interval  # over budget: look again later

    def _update(self, tracks: list[Track], now: float) -> tuple[list[Track], float]:
        self.last_update = now
        return tracks, 0.0


class RunStore:
    """The last MAX_RUNS runs by id (with their download files), oldest dropped first."""

    def __init__(self, max_runs: int = MAX_RUNS):
        self.max_runs = max_runs
        self._runs: OrderedDict[str, LiveRun] = OrderedDict()
        self._lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="playground-runs-"))
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)  # at exit at the latest

    def add(self, run: LiveRun) -> None:
        with self._lock:
            self._runs[run.id] = run
            while len(self._runs) > self.max_runs:
                old_id, _ = self._runs.popitem(last=False)
                shutil.rmtree(self.folder / old_id, ignore_errors=True)

    def get(self, run_id: str | None) -> LiveRun | None:
        with self._lock:
            return self._runs.get(run_id) if run_id else None

    def latest(self) -> LiveRun | None:
        with self._lock:
            return next(reversed(self._runs.values()), None)

    def folder_of(self, run: LiveRun) -> Path:
        """Where a run's picture files and downloads go (deleted when the run is dropped)."""
        folder = self.folder / run.id
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class PictureFiles:
    """Pictures handed to gradio as PNG files, each written once under its content's hash.

    Given a numpy picture, gradio 6 rewrites its cache file (truncate, then write) every time
    the same picture is sent again, and a browser still downloading it gets a truncated file.
    Files it copies into its cache atomically, and only once."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, picture: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="png", compress_level=1)
        data = buffer.getvalue()
        path = self.folder / f"{hashlib.sha1(data).hexdigest()}.png"
        if not path.exists():
            staging = path.with_suffix(f".{threading.get_ident()}.tmp")
            staging.write_bytes(data)
            os.replace(staging, path)
        return str(path)

    def convert(self, values: dict) -> dict:
        """The same outputs, with pictures (and galleries' pictures) as file paths."""
        def convert(value):
            if isinstance(value, np.ndarray):
                return self.path(value)
            if isinstance(value, list) and value and isinstance(value[0], tuple):
                return [(self.path(img), caption) for img, caption in value]
            return value

        return {name: convert(value) for name, value in values.items()}


# ----------------------------------------------------------------------------- what is shown


def diffusion_status(frame, compute_ms: float) -> str:
    rate = frame.step / max(compute_ms / 1000, 1e-9)
    edit = f" (edit: the first {frame.skipped} of {frame.skipped + frame.total} steps skipped)" if frame.skipped else ""
    if frame.region is not None:
        edit += " · repainting the outlined region only"
    return (
        f"step {frame.step}/{frame.total}{edit} · t={frame.timestep} · {compute_ms:.0f} ms · "
        f"{frame.network_evaluations} evaluations · {rate:.0f} steps/s{regional_note(frame)}"
    )


def ar_status(frame, compute_ms: float) -> str:
    row, col = frame.row_col
    rate = frame.step / max(compute_ms / 1000, 1e-9)
    kept = f" written, {frame.kept} kept from the picture (outside the outline)" if frame.kept else ""
    return (
        f"token {frame.step}/{frame.total}{kept} · row {row}, col {col} · {compute_ms:.0f} ms · "
        f"{frame.network_evaluations} evaluations · {rate:.0f} tokens/s{regional_note(frame)}"
    )


def regional_note(frame) -> str:
    """What a status adds when regional prompts steer the run (each object its half)."""
    if not frame.regional_prompts:
        return ""
    return " · regional prompts: " + " | ".join(f"*{p}*" for p in frame.regional_prompts)


def candidates_markdown(frame) -> str:
    """The codebook entries the AR model considered for the cell it just wrote."""
    row, col = frame.row_col
    codes = " | ".join(f"**{c}**" if c == frame.token else str(c) for c, _ in frame.candidates)
    probs = " | ".join(f"{p:.1%}" for _, p in frame.candidates)
    line = "---|" * len(frame.candidates)
    return (
        f"Cell row {row}, col {col}: wrote code **{frame.token}**. Top candidates:\n\n"
        f"| code | {codes} |\n|---|{line}\n| probability | {probs} |"
    )


def picture(frame, scale: int = PREVIEW_SCALE):
    """The main picture of a frame: diffusion's x0 guess (its final picture once done), the
    autoregressive partial grid."""
    return preview_image(frame, scale, view="noisy" if frame.done else "x0")


def with_note(status: str, frame, note: str) -> str:
    if note:
        return f"{note} {status}"
    return f"✓ done · {status}" if frame.done else status


def decode_diffusion_frame(frame) -> None:
    """Decode what a diffusion frame shows: the final picture alone once done, else the noisy
    state and the x0 guess in one batch."""
    if not frame.done:
        frame.decode_previews()


def diffusion_view(frame, compute_ms: float, note: str = "") -> dict:
    decode_diffusion_frame(frame)
    return {
        "diffusion_image": picture(frame),
        "diffusion_noisy": preview_image(frame, PREVIEW_SCALE, view="noisy"),
        "diffusion_status": with_note(diffusion_status(frame, compute_ms), frame, note),
    }


def ar_view(frame, compute_ms: float, note: str = "") -> dict:
    return {
        "ar_image": picture(frame),
        "ar_candidates": candidates_markdown(frame),
        "ar_status": with_note(ar_status(frame, compute_ms), frame, note),
    }


def track_view(track: Track, frame, note: str = "") -> dict:
    view = diffusion_view if track.kind == "diffusion" else ar_view
    return view(frame, track.compute_ms_at(frame), note)


def panels(run: LiveRun, fraction: float = 1.0, note: str = "") -> dict:
    """Both panels at a fraction of each run's progress (1.0: the newest frames)."""
    values = {}
    for track in run.tracks:
        frame = frame_at(track.frames, fraction)
        if frame is not None:
            values.update(track_view(track, frame, note))
    return values


def filmstrip(track: Track) -> list[tuple]:
    return [
        (picture(f, FILMSTRIP_SCALE), f"{'step' if track.kind == 'diffusion' else 'token'} {f.step}/{f.total}")
        for f in pick(track.keyframes, FILMSTRIP_FRAMES)
    ]


def write_downloads(run: LiveRun, folder: Path) -> list[str]:
    """Each run's GIF (and MP4 where imageio-ffmpeg is installed) and the comparison strip,
    made of the frames shown live (decoded already) where there are such."""
    paths = []
    for track in run.tracks:
        if track.frames:
            paths.append(save_gif(track.keyframes, folder / f"{track.kind}.gif", max_frames=GIF_FRAMES))
            paths.append(save_mp4(track.keyframes, folder / f"{track.kind}.mp4", max_frames=GIF_FRAMES))
    if run.diffusion.frames and run.autoregressive.frames:
        strip = comparison_strip(run.diffusion.keyframes, run.autoregressive.keyframes)
        Image.fromarray(strip).save(folder / "comparison.png")
        paths.append(folder / "comparison.png")
    return [str(p) for p in paths if p is not None]


# ----------------------------------------------------------------------------- prompt help


def prompt_feedback(prompt: str | None) -> str:
    """A line under the prompt box, updated as the user types (no model involved)."""
    prompt = prompt or ""
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"⚠️ The prompt is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS:,} are allowed."
    if not prompt.strip():
        return "Empty prompt: both models will draw without one (unconditional generation)."
    unknown = unknown_words(prompt)
    known = [w for w in normalize_prompt(prompt) if w not in unknown]
    if not known:
        return "⚠️ No known words: both models will draw without a prompt (unconditional generation)."
    if unknown:
        return "⚠️ Not in the vocabulary, will be ignored: " + ", ".join(f"~~{w}~~" for w in unknown)
    return "✓ Every word is known."


def start_warning(prompt: str, encoded) -> str | None:
    """Why a run will be unconditional, or None."""
    if not prompt.strip():
        return "The prompt is empty: both models draw without a prompt (unconditional generation)."
    if encoded.unconditional:
        return "The prompt has no known words: both models draw without a prompt (unconditional generation)."
    return None


def end_warning(encoded) -> str | None:
    """What was left out of a prompt that was used, or None."""
    if encoded.unconditional:
        return None  # said at the start
    return encoded.message() or None


# ----------------------------------------------------------------------------- the handlers


def parse_settings(prompt, seed, num_inference_steps, scheduler, guidance_scale, temperature, top_k, top_p, ar_guidance_scale,
                   diffusion_model="", autoregressive_model="", regional=GenerationSettings.regional,
                   ar_regional=GenerationSettings.ar_regional, **edit):
    """The prompt and validated settings (EditSettings when an edit's `strength`, `keep_rows`
    are given); gr.Error with the reason when they cannot be used."""
    try:
        prompt = validate_prompt(prompt)
        settings = (EditSettings if edit else GenerationSettings)(
            seed=seed,
            num_inference_steps=num_inference_steps,
            scheduler=scheduler,
            guidance_scale=guidance_scale,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            ar_guidance_scale=ar_guidance_scale,
            regional=regional,
            ar_regional=ar_regional,
            diffusion_model=diffusion_model,
            autoregressive_model=autoregressive_model,
            **edit,
        ).validated()
    except SettingsError as exc:
        raise gr.Error(str(exc), title="Cannot edit" if edit else "Cannot generate") from None
    return prompt, settings


def picture_editor(**kwargs) -> gr.ImageEditor:
    """A gr.ImageEditor whose pictures reach the handler as PIL images in their own mode (16-bit
    greyscale, palette, ...: editing.load_picture converts them), and whose unreadable or huge
    uploads get a clear message instead of gradio's generic error. (One editor's method is
    replaced: a subclass would make gradio write a .pyi file next to this one.)"""
    editor = gr.ImageEditor(type="pil", **kwargs)

    def open_upload(file, flatten_on_white: bool = False):
        if file is None:
            return None
        try:
            return open_image(file.path if isinstance(file, FileData) else io.BytesIO(file))
        except EditInputError as exc:
            raise gr.Error(str(exc), title="Cannot edit") from None

    editor.convert_and_format_image = open_upload
    return editor


def editor_picture(value):
    """The picture in an image editor's value (the background with what was drawn on it), or
    a picture given directly (a path or an array: API callers)."""
    if isinstance(value, dict):
        return value.get("composite") if value.get("composite") is not None else value.get("background")
    return value


def painted_layers(value) -> list[np.ndarray]:
    """An image editor's brush layers that hold paint, as RGBA arrays (H, W, 4)."""
    if not isinstance(value, dict):
        return []
    layers = [np.asarray(Image.open(x) if isinstance(x, str) else x) for x in value.get("layers") or [] if x is not None]
    return [a for a in layers if a.ndim == 3 and a.shape[2] == 4 and a[..., 3].any()]


def editor_mask(value):
    """The region painted in an image editor (its brush layers: painted wherever opaque) as a
    white-on-black picture; None when nothing is painted. A picture given directly is the mask."""
    if not isinstance(value, dict):
        return value
    layers = painted_layers(value)
    if not layers:
        return None
    if len({a.shape for a in layers}) > 1:
        raise EditInputError("the painted layers have different sizes: paint the region on one canvas")
    painted = np.any([a[..., 3] > 0 for a in layers], axis=0)  # (H, W)
    return Image.fromarray(painted.astype(np.uint8) * 255)


def parse_edit(picture, mask) -> EditInput:
    """The picture and region of an edit from the page or the API; gr.Error when unusable."""
    try:
        return load_edit(editor_picture(picture), editor_mask(mask))
    except SettingsError as exc:  # EditInputError is one
        raise gr.Error(str(exc), title="Cannot edit") from None


def mask_canvas(picture, mask=None):
    """The region editor's canvas: the picture as the models will see it (64 x 64, shown
    256 x 256), with the region already painted in `mask` (the region editor's value) kept on
    it, so that a new picture sent here does not wipe out a painted region. (In the browser a
    stroke on the picture canvas still clears the region in gradio's front end without calling
    this; see the session-5 note of issue 5.) None when there is no usable picture."""
    picture = editor_picture(picture)
    try:
        picture = None if picture is None else upscale(load_picture(picture)[0], PREVIEW_SCALE)
    except EditInputError:
        return None  # said when the picture was given
    if picture is None:
        return None
    return editor_canvas(picture, [a for a in painted_layers(mask) if a.shape[:2] == picture.shape[:2]])


def editor_canvas(picture: np.ndarray, layers: list[np.ndarray] = ()) -> dict:
    """An image editor's value: a picture (H, W, 3) with the brush layers (H, W, 4) over it."""
    composite = Image.fromarray(picture).convert("RGBA")
    for layer in layers:
        composite.alpha_composite(Image.fromarray(layer))
    return {"background": picture, "layers": list(layers), "composite": np.asarray(composite.convert("RGB"))}


def model_settings(model) -> tuple[int, float]:
    """(steps, guidance) for the Settings fields when the diffusion model menu changes: a turbo
    model paints in 2 steps without guidance, the embedded model in 12 at 3 (settings.suggested_diffusion_settings)."""
    suggested = suggested_diffusion_settings(model if isinstance(model, str) else "")
    return suggested["num_inference_steps"], suggested["guidance_scale"]


def edit_timeline(strength, num_inference_steps) -> str:
    """The line under the strength slider: where the edit enters the denoising schedule."""
    try:
        s = EditSettings(strength=strength, num_inference_steps=num_inference_steps).validated()
    except SettingsError as exc:
        return f"⚠️ {exc}"
    return strength_timeline(s.strength, s.num_inference_steps)


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


_DEFAULTS = GenerationSettings()
_EDIT_DEFAULTS = EditSettings()


class Playground:
    """The event handlers of one app: the shared engine, recent runs and each session's run."""

    def __init__(self, engine_loader: Callable[[], Engine] | None = None, workers: int = 0):
        self.engine = EngineHolder(engine_loader)
        self.workers = workers  # sampler worker processes (0: the samplers run on threads)
        self.pool: WorkerPool | None = None
        self.runs = RunStore()
        self._session_runs: OrderedDict[str, str] = OrderedDict()  # session -> its latest run id
        self._lock = threading.Lock()

    # -- engine and sessions

    def get_engine(self) -> Engine:
        try:
            engine = self.engine.get()
        except ModelNotFoundError as exc:
            raise gr.Error(str(exc), title="Models missing") from None
        if self.workers and self.pool is None:
            with self._lock:
                if self.pool is None:  # runs use threads until the workers have loaded the models
                    self.pool = WorkerPool(engine.folder, self.workers, threads=torch_threads()).start()
                    atexit.register(self.pool.close)
        return engine

    def warm_up(self) -> None:
        """Load the models and start the sampler workers now, not on the first click."""
        started = time.perf_counter()
        self.get_engine()
        if self.pool is not None:
            ready = self.pool.wait_ready()
            log.info("%d sampler workers %s in %.1f s", self.workers, "ready" if ready else "NOT ready (runs use threads)",
                     time.perf_counter() - started)

    @staticmethod
    def encode_prompt(engine: Engine, prompt: str, settings: GenerationSettings):
        """The prompt as the chosen models read it; gr.Error for a model that is not loaded."""
        try:
            return engine.encode_prompt(prompt, settings.diffusion_model, settings.autoregressive_model)
        except SettingsError as exc:
            raise gr.Error(str(exc), title="Cannot generate") from None

    def _remember(self, session: str | None, run: LiveRun) -> None:
        if session is None:
            return
        with self._lock:
            self._session_runs[session] = run.id
            self._session_runs.move_to_end(session)
            while len(self._session_runs) > MAX_SESSIONS:
                self._session_runs.popitem(last=False)

    def session_run(self, request: gr.Request | None) -> LiveRun | None:
        with self._lock:
            run_id = self._session_runs.get(session_of(request))
        return self.runs.get(run_id)

    # -- Generate

    def generate(
        self,
        prompt: str = "",
        seed: float = _DEFAULTS.seed,
        num_inference_steps: float = _DEFAULTS.num_inference_steps,
        scheduler: str = _DEFAULTS.scheduler,
        guidance_scale: float = _DEFAULTS.guidance_scale,
        temperature: float = _DEFAULTS.temperature,
        top_k: float = _DEFAULTS.top_k,
        top_p: float = _DEFAULTS.top_p,
        ar_guidance_scale: float = _DEFAULTS.ar_guidance_scale,
        diffusion_model: str = _DEFAULTS.diffusion_model,
        autoregressive_model: str = _DEFAULTS.autoregressive_model,
        regional: float = _DEFAULTS.regional,
        ar_regional: float = _DEFAULTS.ar_regional,
        request: gr.Request = None,
    ):
        """Stream both runs to the page: the streaming event, API endpoint /generate."""
        started = time.perf_counter()
        prompt, settings = parse_settings(
            prompt, seed, num_inference_steps, scheduler, guidance_scale, temperature, top_k, top_p, ar_guidance_scale,
            diffusion_model, autoregressive_model, regional, ar_regional,
        )
        yield from self.stream(prompt, settings, started, request)

    # (The handlers spell out their parameters: gradio takes the API's parameter names and
    # defaults from these signatures.)
    def edit(
        self,
        picture=None,
        prompt: str = "",
        mask=None,
        seed: float = _DEFAULTS.seed,
        strength: float = _EDIT_DEFAULTS.strength,
        keep_rows: float = _EDIT_DEFAULTS.keep_rows,
        num_inference_steps: float = _DEFAULTS.num_inference_steps,
        scheduler: str = _DEFAULTS.scheduler,
        guidance_scale: float = _DEFAULTS.guidance_scale,
        temperature: float = _DEFAULTS.temperature,
        top_k: float = _DEFAULTS.top_k,
        top_p: float = _DEFAULTS.top_p,
        ar_guidance_scale: float = _DEFAULTS.ar_guidance_scale,
        regional: float = _DEFAULTS.regional,
        ar_regional: float = _DEFAULTS.ar_regional,
        request: gr.Request = None,
    ):
        """Stream an edit of a picture (and painted region) by both models: API endpoint /edit.
        The same outputs as /generate."""
        started = time.perf_counter()
        prompt, settings = parse_settings(
            prompt, seed, num_inference_steps, scheduler, guidance_scale, temperature, top_k, top_p, ar_guidance_scale,
            EMBEDDED, EMBEDDED, regional, ar_regional, strength=strength, keep_rows=keep_rows,  # edits: the embedded models' samplers
        )
        edit = parse_edit(picture, mask)
        for note in edit.notes:
            gr.Info(f"Your picture was converted: {note}.")
        yield from self.stream(prompt, settings, started, request, edit)

    def stream(self, prompt: str, settings: GenerationSettings, started: float, request: gr.Request | None,
               edit: EditInput | None = None):
        """Start a run and stream its frames to the page (generate and edit)."""
        engine = self.get_engine()
        encoded = self.encode_prompt(engine, prompt, settings)
        if warning := start_warning(prompt, encoded):
            gr.Warning(warning)
        run = LiveRun(engine, prompt, settings, edit=edit, pool=self.pool)
        self.runs.add(run)
        self._remember(session_of(request), run)
        stats = RunStats(started)
        files = self.files(run)
        run.start()
        try:
            # Outputs a frame does not change are sent again as they stand, not skipped: gradio
            # handles a skip (an empty update) by rebuilding the component and its API schema,
            # 3.7 ms for a Gallery, about 100 ms a run in all. Only the slider is skipped.
            steady = {"diffusion_filmstrip": [], "ar_filmstrip": [], "run_key": run.key, "stats": None,
                      "diffusion_status": "starting …", "ar_status": "starting …"}  # not the last run's
            first = {"scrub": gr.update(interactive=False)}
            pacer = Pacer()
            for due in run.frames_to_show(pacer):
                values, first = {**steady, **first}, {}
                for track, frame in due:
                    values.update(files.convert(track_view(track, frame)))
                    stats.shown(track.kind, frame.done)
                steady.update((k, v) for k, v in values.items() if k != "scrub")
                yield ordered(values)
            stats.finished(run, pacer)
            if warning := end_warning(encoded):
                gr.Warning(warning[0].upper() + warning[1:])
            yield ordered(files.convert(self.final_outputs(run, stats)))
        except Exception as exc:
            log.exception("run %s failed", run.id)
            raise gr.Error(f"Generation failed: {type(exc).__name__}: {exc}") from None
        finally:
            run.request_stop()  # also when the page goes away or Stop cancels this generator

    def files(self, run: LiveRun) -> PictureFiles:
        return PictureFiles(self.runs.folder_of(run))

    def final_outputs(self, run: LiveRun, stats: "RunStats | None" = None) -> dict:
        """Both panels at their newest frames, the filmstrips and the slider."""
        note = "stopped at" if not run.complete else ""
        values = panels(run, 1.0, note)
        values.update(
            diffusion_filmstrip=filmstrip(run.diffusion),
            ar_filmstrip=filmstrip(run.autoregressive),
            scrub=gr.update(value=1.0, interactive=True),
            run_key=run.key,
        )
        if stats is not None:
            values["stats"] = stats.as_dict()
        return values

    def generate_example(self, prompt: str, seed: float):
        """Everything an example shows, downloads included (for caching: computed without streaming)."""
        prompt, settings = parse_settings(prompt, seed, **{k: v for k, v in _DEFAULTS.as_dict().items() if k != "seed"})
        run = LiveRun(self.get_engine(), prompt, settings, pool=self.pool)
        run.start(min_seconds=0).done.wait()  # in worker processes when free: the page stays responsive
        self.runs.add(run)
        values = {**self.final_outputs(run), "downloads": self.run_downloads(run)}
        return ordered(self.files(run).convert(values), EXAMPLE_OUTPUTS)

    def downloads(self, run_key: str) -> list[str] | None:
        """The GIFs (MP4s) and comparison strip of a run: API endpoint /downloads."""
        run = self.find_run(run_key)
        return self.run_downloads(run) if run is not None else None

    def run_downloads(self, run: LiveRun) -> list[str] | None:
        run.done.wait(timeout=2)  # a stopped run finishes its current step
        with run.downloads_lock:  # written once per run
            if run.downloads is None:
                run.downloads = write_downloads(run, self.runs.folder_of(run))
        return run.downloads or None

    # -- Stop

    def stop(self, request: gr.Request = None) -> None:
        """Stop this session's run: the compute halts after the current step."""
        run = self.session_run(request)
        if run is not None:
            run.request_stop()

    def finish_stopped(self, request: gr.Request = None):
        """After Stop: the stopped runs' last frames, filmstrips and slider."""
        run = self.session_run(request)
        if run is None or run.complete:
            return ordered({})  # nothing was running (or it had finished): leave the page as it is
        run.done.wait(timeout=2)
        return ordered(self.files(run).convert(self.final_outputs(run)))

    # -- after a run

    def scrub(self, fraction: float, run_key: str):
        """Both panels at the same fraction of their progress."""
        run = self.find_run(run_key)
        if run is None:
            return ordered({}, SCRUB_OUTPUTS)
        return ordered(self.files(run).convert(panels(run, float(fraction))), SCRUB_OUTPUTS)

    def find_run(self, run_key: str | None) -> LiveRun | None:
        """The run a key names: kept in memory, or computed again (same settings, same pictures)."""
        if not run_key:
            return None
        try:
            key = json.loads(run_key)
            run = self.runs.get(key["id"])
            edit = EditInput.from_dict(key["edit"]) if "edit" in key else None
            settings = (GenerationSettings if edit is None else EditSettings)(**key["settings"]).validated()
            prompt = validate_prompt(key["prompt"])
        except (ValueError, KeyError, TypeError, OSError) as exc:  # SettingsError is a ValueError
            raise gr.Error(f"Cannot find that run: {exc}") from None
        if run is None:
            run = LiveRun(self.get_engine(), prompt, settings, run_id=key["id"], edit=edit, pool=self.pool)
            run.start(min_seconds=0).done.wait()
            self.runs.add(run)
        return run

    def edit_this(self, kind: str, run_key: str | None):
        """"Edit this": a run's final picture (diffusion or autoregressive) as the picture to
        edit, on both editors' canvases, and the Edit tab opened."""
        run = self.find_run(run_key)
        track = None if run is None else {"diffusion": run.diffusion, "autoregressive": run.autoregressive}[kind]
        if track is None or not track.frames:
            raise gr.Error("Generate (or edit) a picture first, then press “Edit this” under it.", title="Nothing to edit")
        canvas = editor_canvas(upscale(track.frames[-1].image(), PREVIEW_SCALE))  # (256, 256, 3) to paint on
        return canvas, canvas, gr.Tabs(selected="edit")

    @staticmethod
    def random_seed() -> int:
        return random.randint(0, MAX_SEED)


@dataclass
class RunStats:
    """Server-side timings of one Generate (shown in the page's timing box and read by bench_app)."""

    started: float
    first_frame_ms: dict = field(default_factory=dict)
    updates: dict = field(default_factory=lambda: {"diffusion": 0, "autoregressive": 0})
    last_frame_ms: dict = field(default_factory=dict)
    both_finished_ms: float | None = None
    compute_ms: dict = field(default_factory=dict)
    cpu_ms: dict = field(default_factory=dict)
    computed_in: str = ""  # "worker processes" | "a thread"

    def _now_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def shown(self, kind: str, done: bool) -> None:
        self.first_frame_ms.setdefault(kind, self._now_ms())
        self.updates[kind] += 1
        if done:
            self.last_frame_ms[kind] = self._now_ms()

    def finished(self, run: LiveRun, pacer: Pacer) -> None:
        self.both_finished_ms = self._now_ms()
        self.compute_ms = {t.kind: round(t.total_compute_ms, 1) for t in run.tracks}
        # CPU, not wall time: what showing the runs cost, whatever else the machine was doing.
        self.cpu_ms = {"samplers": round(run.compute_cpu_s * 1000, 1),
                       "everything_else": round(pacer.display_cpu_s(run) * 1000, 1)}
        self.computed_in = "worker processes" if run.in_workers else "a thread"

    def as_dict(self) -> dict:
        rounded = lambda d: {k: round(v, 1) for k, v in d.items()}  # noqa: E731
        return {
            "first_frame_ms": rounded(self.first_frame_ms),
            "last_frame_ms": rounded(self.last_frame_ms),
            "both_finished_ms": round(self.both_finished_ms or 0, 1),
            "compute_ms": self.compute_ms,
            "cpu_ms": self.cpu_ms,
            "updates": self.updates,
            "computed_in": self.computed_in,
        }


def edit_examples(folder: str | Path) -> list[list[str]]:
    """The Edit tab's examples, [picture file, new prompt] each: teaching.EDIT_EXAMPLES's
    pictures drawn by the shapes world's renderer into `folder` (PNG, 64 x 64)."""
    from playground.ui.teaching import EDIT_EXAMPLES
    from playground.world.shapes import render, scene_from_prompt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (before, after, _) in enumerate(EDIT_EXAMPLES):
        path = folder / f"edit-example-{i}.png"
        Image.fromarray(render(scene_from_prompt(before))).save(path)
        rows.append([str(path), after])
    return rows


def edit_example_value(sample: list) -> tuple[dict, dict, str]:
    """An Edit example chosen ([picture file, new prompt]) -> the picture on both editors'
    canvases (as "Edit this" puts it there) and the prompt."""
    path, prompt = sample
    canvas = editor_canvas(upscale(np.asarray(Image.open(path).convert("RGB")), PREVIEW_SCALE))  # (256, 256, 3)
    return canvas, canvas, prompt


def examples_cache_dir() -> str:
    """A fresh folder for gradio's cached examples: gradio reuses a cache folder that exists,
    even when the models have changed, so each app process caches its examples anew."""
    folder = tempfile.mkdtemp(prefix="playground-examples-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
