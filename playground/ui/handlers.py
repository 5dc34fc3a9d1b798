"""The event handlers app.py wires to its components: `Playground`, one per app, shared by
every session.

One press of Generate (or Edit) is a `LiveRun` (runtime/run.py); `Playground.stream` is a
gradio generator that yields both panels whenever the `Pacer` (runtime/pacing.py) says the page
is due an update. Finished runs stay in a `RunStore` (runtime/store.py) for the scrub slider
and the downloads; each session's latest run is remembered for Stop.
"""

from __future__ import annotations

import atexit
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from typing import Callable

import gradio as gr

from playground.editing import EditInput
from playground.engine import Engine
from playground.errors import ModelNotFoundError, SettingsError
from playground.frames import upscale
from playground.runtime.batching import BatchConfig, BatchPool
from playground.runtime.pacing import Pacer, min_frames_for
from playground.runtime.run import GENERATE_CONCURRENCY, EngineHolder, LiveRun, torch_threads
from playground.runtime.store import RunStore, write_downloads
from playground.runtime.workers import WorkerPool
from playground.settings import MAX_SEED, EditSettings, GenerationSettings, validate_prompt
from playground.ui.attention import ATTENTION_OUTPUTS, AttentionMaps
from playground.ui.gradio_fixes import PictureFiles, Resend, cache_folder
from playground.ui.inputs import EDIT_INPUTS, GENERATE_INPUTS, editor_canvas, parse_edit, parse_settings, takes_inputs
from playground.ui.stats import RunStats
from playground.ui.views import (
    EXAMPLE_OUTPUTS,
    PREVIEW_SCALE,
    SCRUB_OUTPUTS,
    end_warning,
    ordered,
    panels,
    queue_status,
    start_warning,
    track_finals,
    track_view,
)

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4  # events other than Generate and Edit (scrub, stop, ...) handled at once
QUEUE_SIZE = 64  # requests waiting beyond this are refused with "queue full"
MAX_SESSIONS = 1024


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


class Playground:
    """The event handlers of one app: the shared engine, recent runs and each session's run."""

    def __init__(self, engine_loader: Callable[[], Engine] | None = None, workers: int = 0,
                 batch: BatchConfig | None = None, max_queue: int = QUEUE_SIZE):
        self.engine = EngineHolder(engine_loader)
        self.workers = workers  # sampler worker processes (0: the samplers run on threads)
        self.batch = batch  # run every request in two batch workers instead (runtime/batching.py)
        self.max_queue = max_queue
        self.pool: WorkerPool | BatchPool | None = None
        self.streams = 0  # pages streaming a run now (fewer frames each when a class is)
        self.runs = RunStore(root=cache_folder())  # files gradio serves without copying them
        self.attention_maps = AttentionMaps()  # the word each session's panels show, the runs' maps
        self._session_runs: OrderedDict[str, str] = OrderedDict()  # session -> its latest run id
        self._lock = threading.Lock()

    # -- engine and sessions

    def get_engine(self) -> Engine:
        try:
            engine = self.engine.get()
        except ModelNotFoundError as exc:
            raise gr.Error(str(exc), title="Models missing") from None
        if (self.workers or self.batch) and self.pool is None:
            with self._lock:
                if self.pool is None:  # runs use threads until the workers have loaded the models
                    if self.batch is not None:
                        self.pool = BatchPool(engine.folder, self.batch, max_queue=self.max_queue).start()
                    else:
                        self.pool = WorkerPool(engine.folder, self.workers, threads=torch_threads()).start()
                    atexit.register(self.pool.close)
        return engine

    def warm_up(self) -> None:
        """Load the models and start the sampler workers now, not on the first click."""
        started = time.perf_counter()
        self.get_engine()
        if self.pool is not None:
            ready = self.pool.wait_ready()
            log.info("%s %s in %.1f s", "batch workers" if self.batch else f"{self.workers} sampler workers",
                     "ready" if ready else "NOT ready (runs use threads)", time.perf_counter() - started)

    @property
    def generate_concurrency(self) -> int:
        """Generate requests the page serves at once: with batching, as many as the batch
        workers take in (they queue the rest themselves, and say so); else one per two workers."""
        return self.max_queue if self.batch is not None else GENERATE_CONCURRENCY

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

    @takes_inputs(GENERATE_INPUTS)
    def generate(self, values: dict, request: gr.Request | None):
        """Stream both runs to the page: the streaming event, API endpoint /generate."""
        started = time.perf_counter()
        prompt, settings = parse_settings(values.pop("prompt"), values)
        yield from self.stream(prompt, settings, started, request)

    @takes_inputs(EDIT_INPUTS)
    def edit(self, values: dict, request: gr.Request | None):
        """Stream an edit of a picture (and painted region) by both models: API endpoint /edit.
        The same outputs as /generate."""
        started = time.perf_counter()
        picture, mask = values.pop("picture"), values.pop("mask")
        prompt, settings = parse_settings(values.pop("prompt"), values, edit=True)
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
        with self._lock:
            self.streams += 1
            pacer = Pacer(min_frames=min_frames_for(self.streams))
        try:
            # Every update carries every output but the slider (see Resend), none of the last run's.
            resend = Resend(steady={"diffusion_filmstrip": [], "ar_filmstrip": [], "run_key": run.key, "stats": None,
                                    "diffusion_status": "starting …", "ar_status": "starting …",
                                    "diffusion_verdict": "", "ar_verdict": ""},
                            once={"scrub": gr.update(interactive=False)})
            finals: dict[str, dict] = {}  # kind -> a finished track's filmstrip and verdict, as files
            for due in run.frames_to_show(pacer):
                if not due:  # waiting for a place in the batch
                    yield ordered(resend(queue_status(run.queued)))
                    continue
                changed = {}
                word = self.attention_maps.word(session_of(request))  # at every update: a chip chosen mid-run counts
                decorate = self.attention_maps.decorator(engine, run, word, live=True)
                for track, frame in due:
                    view = track_view(track, frame, streaming=True)
                    changed.update(files.convert(decorate(track, frame, view) if decorate else view))
                    stats.shown(track.kind, frame.done)
                yield ordered(resend(changed))
                # A track done before the other: its last update's parts now, while the other
                # computes (with a class all finishing together, the last updates are the wait).
                for track, frame in due:
                    if frame.done and not run.complete and track.kind not in finals:
                        finals[track.kind] = files.convert(track_finals(run, track, engine))
            stats.finished(run, pacer)
            if warning := end_warning(encoded):
                gr.Warning(warning[0].upper() + warning[1:])
            word = self.attention_maps.word(session_of(request))
            yield ordered(files.convert(self.final_outputs(run, stats, word, finals)))
        except Exception as exc:
            log.exception("run %s failed", run.id)
            raise gr.Error(f"Generation failed: {type(exc).__name__}: {exc}") from None
        finally:
            run.request_stop()  # also when the page goes away or Stop cancels this generator
            with self._lock:
                self.streams -= 1

    def files(self, run: LiveRun) -> PictureFiles:
        return PictureFiles(self.runs.folder_of(run))

    def final_outputs(self, run: LiveRun, stats: RunStats | None = None, word: str = "",
                      finals: dict[str, dict] | None = None) -> dict:
        """Both panels at their newest frames, the filmstrips, verdicts and the slider; `finals`:
        a track's filmstrip and verdict made already (kind -> views.track_finals)."""
        note = "stopped at" if not run.complete else ""
        values = panels(run, 1.0, note, self.attention_maps.decorator(self.get_engine(), run, word))
        values.update(scrub=gr.update(value=1.0, interactive=True), run_key=run.key)
        for track in run.tracks:
            values.update((finals or {}).get(track.kind) or track_finals(run, track, self.get_engine()))
        if stats is not None:
            values["stats"] = stats.as_dict()
        return values

    def generate_example(self, prompt: str, seed: float):
        """Everything an example shows, downloads included (for caching: computed without streaming)."""
        prompt, settings = parse_settings(prompt, {**GenerationSettings().as_dict(), "seed": seed})
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
        return ordered(self.files(run).convert(self.final_outputs(run, word=self.attention_maps.word(session_of(request)))))

    # -- after a run

    def scrub(self, fraction: float, run_key: str, request: gr.Request = None):
        """Both panels at the same fraction of their progress (with the session's word's maps)."""
        run = self.find_run(run_key)
        if run is None:
            return ordered({}, SCRUB_OUTPUTS)
        decorate = self.attention_maps.decorator(self.get_engine(), run, self.attention_maps.word(session_of(request)))
        return ordered(self.files(run).convert(panels(run, float(fraction), decorate=decorate)), SCRUB_OUTPUTS)

    def attention(self, run_key: str, word: str | None, fraction: float = 1.0, request: gr.Request = None):
        """Where `word` is attended in both panels at a fraction of a run (API endpoint /attention;
        on the page, the chip row, whose word the session's panels then show, streaming too):
        the two pictures with the map over them, then the two status lines."""
        self.attention_maps.choose(session_of(request), word)
        run = self.find_run(run_key)
        if run is None:
            return ordered({}, ATTENTION_OUTPUTS)
        decorate = self.attention_maps.decorator(self.get_engine(), run, word)
        values = panels(run, 1.0 if fraction is None else float(fraction), decorate=decorate)
        return ordered(self.files(run).convert({k: values[k] for k in ATTENTION_OUTPUTS if k in values}), ATTENTION_OUTPUTS)

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

