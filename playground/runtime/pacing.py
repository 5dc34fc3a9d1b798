"""When the page gets its next update: the `Pacer` and the limits it keeps to.

Showing a frame costs CPU (decoding it, encoding the PNG, gradio's work to send it) and, on two
cores, that CPU is taken from the samplers; the pacer keeps it to a share of theirs.
"""

from __future__ import annotations

import time

from playground.runtime.workers import Track

MAX_UPDATES_PER_SECOND = 20  # page updates (both panels): more is wasted on a projector
DISPLAY_SHARE = 0.2  # CPU for showing frames, at most this share of the samplers' CPU
MIN_FRAMES = 12  # ... but every run shows at least this many frames, whatever they cost
CALM_STREAMS = 4  # up to this many pages streaming at once, each gets MIN_FRAMES
MIN_FRAMES_UNDER_LOAD = 6  # with a whole class streaming, each run still shows this many


def min_frames_for(streams: int) -> int:
    """Frames every run shows at least, when `streams` pages are streaming runs at once. Each
    shown frame costs this process a preview decode and a PNG (about 20 ms for diffusion, 9 ms
    for the autoregressive grid on these CPUs), taken from the samplers on two cores: with a
    class of thirty at once, twelve frames each would cost more than the samplers themselves."""
    if streams <= CALM_STREAMS:
        return MIN_FRAMES
    return max(MIN_FRAMES_UNDER_LOAD, round(MIN_FRAMES * CALM_STREAMS / streams))


class Pacer:
    """When the page gets its next update (both panels at once: gradio's cost is per message).

    Showing a frame costs CPU: decoding it, encoding the PNG, gradio's work to send it. On two
    cores that CPU is taken from the samplers, so everything this process spends beyond the
    samplers' own CPU is kept under `share` of theirs, and under `max_per_second` updates.
    Whatever the cost, a run's first and last frames are shown, and a frame each time a run
    has gone 1/min_frames further, so that every run shows at least `min_frames` frames.

    `run` below is a LiveRun (runtime/run.py): its tracks, its done flag and its CPU times."""

    def __init__(self, max_per_second: float = MAX_UPDATES_PER_SECOND, share: float = DISPLAY_SHARE,
                 min_frames: int = MIN_FRAMES):
        self.interval = 1 / max_per_second
        self.share = share
        self.min_frames = min_frames
        self.last_update = float("-inf")
        self.process_cpu_at_start = time.process_time()

    def display_cpu_s(self, run) -> float:
        return time.process_time() - self.process_cpu_at_start - run.local_compute_cpu_s

    def due(self, run) -> tuple[list[Track], float]:
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
