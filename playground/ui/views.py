"""What the page shows for a run: the outputs of Generate by name, each panel's picture and
status line at a frame, the filmstrips, and the lines that explain a prompt.

Views are plain values ({output name: picture array, markdown, ...}); the handlers turn
pictures into files (gradio_fixes.PictureFiles) and put the values in output order (`ordered`).
"""

from __future__ import annotations

import gradio as gr

from playground.outputs import frame_at, pick, preview_image
from playground.runtime.run import LiveRun
from playground.runtime.workers import Track
from playground.settings import EMBEDDED
from playground.world.shapes import normalize_prompt, unknown_words
from playground.world.text import MAX_PROMPT_CHARS
from playground.world.verdict import model_note, verdict, verdict_markdown

PREVIEW_SCALE = 4  # 64x64 pictures shown at 256x256, nearest neighbour (crisp on a projector)
# Diffusion frames while they stream go as 64x64 PNGs that the browser enlarges (app.py's CSS:
# pixelated): a 256x256 PNG costs the page 8 times the encoding, and a class streams hundreds.
STREAM_SCALE = 1
FILMSTRIP_FRAMES = 8
FILMSTRIP_SCALE = 2

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
    "diffusion_verdict",  # the checker's verdict under each final picture (added last: the API's order stays)
    "ar_verdict",
)
PANEL = {"diffusion": "diffusion", "autoregressive": "ar"}  # a track's kind -> its outputs' prefix
DONE_MARK = "✓ done"  # how a panel's status line starts once its picture is final
SCRUB_OUTPUTS = OUTPUTS[:6]  # what the slider changes: the two panels
# Cached examples show the downloads too (for a live run they are a separate, later event).
EXAMPLE_OUTPUTS = OUTPUTS + ("downloads",)


def ordered(values: dict, names: tuple[str, ...] = OUTPUTS) -> tuple:
    """A handler's return tuple from {output name: value}; outputs not named are left as they are."""
    unknown = set(values) - set(names)
    assert not unknown, f"not outputs: {unknown}"
    return tuple(values.get(name, gr.skip()) for name in names)


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
    rate = frame.step / max(compute_ms / 1000, 1e-9)
    kept = f" written, {frame.kept} kept from the picture (outside the outline)" if frame.kept else ""
    if frame.written_now:  # an any-order model: several cells a step, anywhere on the grid
        written = int((frame.codes >= 0).sum())
        return (
            f"step {frame.step}/{frame.total} · {frame.order} order · {len(frame.written_now)} cells this step, "
            f"{written}/{frame.grid ** 2} written{kept} · {compute_ms:.0f} ms · "
            f"{frame.network_evaluations} evaluations · {rate:.0f} steps/s"
        )
    row, col = frame.row_col
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
    several = f" (the first of the {len(frame.written_now)} cells this step wrote)" if len(frame.written_now) > 1 else ""
    return (
        f"Cell row {row}, col {col}{several}: wrote code **{frame.token}**. Top candidates:\n\n"
        f"| code | {codes} |\n|---|{line}\n| probability | {probs} |"
    )


def picture(frame, scale: int = PREVIEW_SCALE):
    """The main picture of a frame: diffusion's x0 guess (its final picture once done), the
    autoregressive partial grid."""
    return preview_image(frame, scale, view="noisy" if frame.done else "x0")


def with_note(status: str, frame, note: str) -> str:
    if note:
        return f"{note} {status}"
    return f"{DONE_MARK} · {status}" if frame.done else status


def decode_diffusion_frame(frame) -> None:
    """Decode what a diffusion frame shows: the final picture alone once done, else the noisy
    state and the x0 guess in one batch."""
    if not frame.done:
        frame.decode_previews()


def diffusion_view(frame, compute_ms: float, note: str = "", scale: int = PREVIEW_SCALE) -> dict:
    decode_diffusion_frame(frame)
    return {
        "diffusion_image": picture(frame, scale),
        "diffusion_noisy": preview_image(frame, scale, view="noisy"),
        "diffusion_status": with_note(diffusion_status(frame, compute_ms), frame, note),
    }


def ar_view(frame, compute_ms: float, note: str = "") -> dict:
    return {
        "ar_image": picture(frame),
        "ar_candidates": candidates_markdown(frame),
        "ar_status": with_note(ar_status(frame, compute_ms), frame, note),
    }


def track_view(track: Track, frame, note: str = "", streaming: bool = False) -> dict:
    """A panel at a frame; `streaming`: a frame on its way (not the last one a run shows), whose
    diffusion pictures may go small (STREAM_SCALE) unless they carry an edit's outline."""
    if track.kind == "autoregressive":  # its hatching and current-cell box are drawn at full size
        return ar_view(frame, track.compute_ms_at(frame), note)
    small = streaming and not frame.done and frame.region is None
    return diffusion_view(frame, track.compute_ms_at(frame), note, STREAM_SCALE if small else PREVIEW_SCALE)


def panels(run: LiveRun, fraction: float = 1.0, note: str = "", decorate=None) -> dict:
    """Both panels at a fraction of each run's progress (1.0: the newest frames); `decorate`
    (track, frame, view) -> view changes each panel's view (the attention overlays)."""
    values = {}
    for track in run.tracks:
        frame = frame_at(track.frames, fraction)
        if frame is not None:
            view = track_view(track, frame, note)
            values.update(decorate(track, frame, view) if decorate else view)
    return values


def verdict_view(run: LiveRun, track: Track, engine) -> str:
    """The checker's verdict under a track's final picture, for a run on `engine` (which tells
    the model the panel used). A stopped run's pictures get none."""
    frame = track.frames[-1] if track.frames else None
    model = engine.model_name(track.kind, getattr(run.settings, f"{track.kind}_model"))
    if model != EMBEDDED:
        return model_note(model)
    if frame is None or not frame.done:
        return "Stopped before the end: no verdict."
    return verdict_markdown(verdict(frame.image(), run.prompt), run.prompt)


def verdict_views(run: LiveRun, engine) -> dict:
    """Both panels' verdicts by output name."""
    return {f"{PANEL[t.kind]}_verdict": verdict_view(run, t, engine) for t in (run.diffusion, run.autoregressive)}


def track_finals(run: LiveRun, track: Track, engine) -> dict:
    """What a finished track adds to the last update of a run: its filmstrip and verdict."""
    return {f"{PANEL[track.kind]}_filmstrip": filmstrip(track),
            f"{PANEL[track.kind]}_verdict": verdict_view(run, track, engine)}


def filmstrip(track: Track) -> list[tuple]:
    return [
        (picture(f, FILMSTRIP_SCALE), f"{'step' if track.kind == 'diffusion' else 'token'} {f.step}/{f.total}")
        for f in pick(track.keyframes, FILMSTRIP_FRAMES)
    ]


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


def queue_status(queued: tuple[int, float] | None) -> dict:
    """Both status lines while a run waits for its place in the batch workers."""
    if queued is None:
        text = "starting …"
    else:
        place, seconds = queued
        text = f"⏳ you are number {place} in the queue, about {seconds:.0f} s"
    return {"diffusion_status": text, "ar_status": text}
