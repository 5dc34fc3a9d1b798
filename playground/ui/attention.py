"""Attention maps on the page: the chip row of prompt words, the word each session has chosen,
each run's maps (computed on demand in this process, from what the frames carry, and cached),
and the overlays on both panels' main pictures, streaming and scrubbing alike.

Only a session that has chosen a word pays for maps. A diffusion map is one more UNet call at
the frame's latent (diffusion/attention.py; a real Stable Diffusion pipeline's too,
hub/attention.py); the autoregressive maps are one pass over the run's tokens in all, fed as
they are written (autoregressive/attention.py). While a run streams its maps keep to LIVE_SHARE
of its compute time: past it a diffusion frame shows the newest map made before, and says from
which step. The finished run, the slider and /attention give every frame its own map.

    python app.py      # choose a word under the prompt, then Generate
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import gradio as gr
import numpy as np

from playground.attention_overlay import overlay
from playground.hub.attention import attention_reader
from playground.settings import EMBEDDED
from playground.ui import teaching
from playground.world.shapes import normalize_prompt, unknown_words

log = logging.getLogger(__name__)

# While a run streams, its maps cost at most this share of its compute time so far; the final
# frames' own maps come on top: 15 % of a picture's time in all (python -m playground.evaluation.attention_cost).
LIVE_SHARE = 0.1
MAX_RUNS = 16  # runs whose maps are kept (a diffusion run's: one stack per step shown)
MAX_SESSIONS = 1024
# Words offered as chips: the content words (every word of the prompt is accepted by name).
FILLER_WORDS = frozenset({"a", "an", "and", "on", "the", "at", "in"})
# What /attention (and the chip row) returns: both pictures with their maps, both status lines.
ATTENTION_OUTPUTS = ("diffusion_image", "ar_image", "diffusion_status", "ar_status")
PICTURE = {"diffusion": "diffusion_image", "autoregressive": "ar_image"}
STATUS = {"diffusion": "diffusion_status", "autoregressive": "ar_status"}
# The newest map's cost per panel, in any run: a new run's first guess of what a map costs.
recent_cost_s = {"diffusion": 0.0, "autoregressive": 0.0}


def chip_words(prompt: str | None, model: str = "") -> list[str]:
    """The prompt's content words, once each, in order: the chip row's choices. The embedded
    models' known words only, unless a real diffusion model (`model`) is chosen: it reads any."""
    unknown = set(unknown_words(prompt or "")) if model in ("", EMBEDDED) else set()
    words = [w for w in normalize_prompt(prompt or "") if w not in unknown and w not in FILLER_WORDS]
    return list(dict.fromkeys(words))


def word_chips(prompt: str | None, chosen: str | None = None, model: str = ""):
    """The chip row for a prompt: "off", then its words; the chosen one kept while the prompt
    still has it."""
    words = chip_words(prompt, model or "")
    return gr.update(choices=[("off", "")] + words, value=chosen if chosen in words else "")


class RunAttention:
    """One run's maps: the models' readers, made on first use, each diffusion step's maps, and
    the time spent on them, per panel (`spent_s`)."""

    def __init__(self, engine, run):
        self.engine, self.run = engine, run
        self.lock = threading.Lock()  # the stream and the page's events may ask at once
        self.readers: dict[str, object] = {}
        self.diffusion_maps: dict[int, np.ndarray] = {}  # step -> (T, g, g)
        self.spent_s = {"diffusion": 0.0, "autoregressive": 0.0}  # computing and drawing maps, per panel
        self.last_cost_s = dict(recent_cost_s)  # the newest map's: what the next may cost

    def reader(self, kind: str):
        if kind not in self.readers:
            settings = self.run.settings
            model = settings.diffusion_model if kind == "diffusion" else settings.autoregressive_model
            self.readers[kind] = attention_reader(self.engine, kind, model, self.run.prompt, settings.scheduler,
                                                  settings.ar_order)
        return self.readers[kind]

    def word_map(self, kind: str, frame, word: str, allowed_s: float | None = None) -> tuple[np.ndarray | None, int]:
        """The (g, g) map of `word` at a frame of this run, and the step it was computed at;
        ValueError with a one-line reason. `allowed_s`, while streaming: the time the maps may
        have cost by now; where the next would go past it, a diffusion frame gets the newest map
        computed before (None before the first), an autoregressive one the cells known already
        (a last frame: always its own). None: the frame's own map, whatever it costs."""
        with self.lock:
            reader = self.reader(kind)
            positions = reader.positions(word)
            fresh = allowed_s is None or frame.done or self.spent_s[kind] + self.last_cost_s[kind] <= allowed_s
            started, computed = time.perf_counter(), fresh
            step = frame.step
            if kind == "diffusion":
                computed = fresh and step not in self.diffusion_maps
                if step not in self.diffusion_maps:
                    if fresh:
                        self.diffusion_maps[step] = reader.maps(frame)
                    elif not self.diffusion_maps:  # the first map waits for the budget too
                        return None, 0
                    else:
                        step = max((s for s in self.diffusion_maps if s <= frame.step), default=min(self.diffusion_maps))
                maps = self.diffusion_maps[step]
            else:
                maps = reader.maps(frame, feed=fresh)
            if computed:
                self.last_cost_s[kind] = recent_cost_s[kind] = time.perf_counter() - started
            self.spent_s[kind] += time.perf_counter() - started
            return maps[positions].mean(axis=0), step


class AttentionMaps:
    """The word each session shows, and the recent runs' maps."""

    def __init__(self):
        self._runs: OrderedDict[str, RunAttention] = OrderedDict()
        self._words: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def choose(self, session: str | None, word: str | None) -> None:
        if session is None:
            return
        with self._lock:
            self._words[session] = word or ""
            self._words.move_to_end(session)
            while len(self._words) > MAX_SESSIONS:
                self._words.popitem(last=False)

    def word(self, session: str | None) -> str:
        with self._lock:
            return self._words.get(session, "") if session is not None else ""

    def of_run(self, engine, run) -> RunAttention:
        with self._lock:
            if run.id not in self._runs or self._runs[run.id].run is not run:
                self._runs[run.id] = RunAttention(engine, run)
            self._runs.move_to_end(run.id)
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)
            return self._runs[run.id]

    def decorator(self, engine, run, word: str | None, live: bool = False):
        """A function (track, frame, view) -> view with `word`'s overlay on the panel's picture
        and a note in its status line; None when no word is chosen (the views are left alone).
        `live`: while the run streams, the maps keep to LIVE_SHARE of its compute time."""
        if not word:
            return None
        maps = self.of_run(engine, run)

        def decorate(track, frame, view: dict) -> dict:
            kind = track.kind
            allowed = LIVE_SHARE / 2 * sum(t.total_compute_ms for t in run.tracks) / 1000 if live else None  # half each
            try:
                attention, step = maps.word_map(kind, frame, word, allowed)
            except ValueError as exc:  # a word not in the prompt, a model without maps: one line
                note = f" · ⚠️ {exc}"
            except Exception as exc:  # never lose the picture for a map
                log.exception("attention map failed")
                note = f" · ⚠️ attention map failed: {type(exc).__name__}"
            else:
                if attention is None:
                    note = f" · attention to “{word}”: its first map comes in a few steps"
                    return {**view, STATUS[kind]: view[STATUS[kind]] + note} if STATUS[kind] in view else view
                started = time.perf_counter()
                view = {**view, PICTURE[kind]: overlay(view[PICTURE[kind]], attention)}
                with maps.lock:
                    maps.spent_s[kind] += time.perf_counter() - started  # drawing counts against the budget too
                older = f" (from step {step})" if step != frame.step and kind == "diffusion" else ""
                note = f" · attention to “{word}” shown{older}"
            if STATUS[kind] in view:
                view[STATUS[kind]] = view[STATUS[kind]] + note
            return view

        return decorate


def attention_chips() -> gr.Radio:
    """The chip row under the prompt: its words, one to choose ("off": none), and what the
    maps show (in a closed accordion)."""
    chips = gr.Radio([("off", "")], value="", label="Where is this word attended? (overlaid on both pictures)",
                     elem_id="attention-word")
    with gr.Accordion("What the attention maps show", open=False, elem_id="attention-help"):
        gr.Markdown(teaching.ATTENTION_TEXT)
    return chips


def wire_attention(pg, chips: gr.Radio, prompt: gr.Textbox, out: dict, on_gpu, model: gr.Dropdown) -> None:
    """The chips follow the prompt; choosing one overlays its maps now and on every frame after.
    /attention (run_key, word, fraction) is the API's way in: a hidden box, since the chips
    accept only the page prompt's words."""
    outputs = [out[name] for name in ATTENTION_OUTPUTS]
    for source in (prompt, model):  # the diffusion model's menu: a real model reads every word
        source.change(word_chips, [prompt, chips, model], chips, queue=False, show_progress="hidden",
                      api_visibility="private")
    chips.change(on_gpu(pg.attention), [out["run_key"], chips, out["scrub"]], outputs, show_progress="hidden",
                 trigger_mode="always_last", api_name="attention_chips", api_visibility="private")
    word = gr.Textbox(visible=False, elem_id="attention-api-word")
    word.submit(on_gpu(pg.attention), [out["run_key"], word, out["scrub"]], outputs, api_name="attention",
                show_progress="hidden")
