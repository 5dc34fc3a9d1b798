"""The last few runs by id, for the scrub slider and the downloads, and each run's files.

`RunStore` keeps MAX_RUNS runs and a folder per run (its picture files and downloads), deleted
when the run is dropped; `write_downloads` makes a run's GIFs (MP4s) and comparison strip.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from playground.outputs import comparison_strip, save_gif, save_mp4
from playground.runtime.run import LiveRun

MAX_RUNS = 8  # finished runs kept for scrubbing and downloads (a few MB each)
SETTLE_S = 10.0  # a finished run is kept at least this long (its page reads its last files)
GIF_FRAMES = 32


class RunStore:
    """The last MAX_RUNS runs by id (with their download files), oldest dropped first."""

    def __init__(self, max_runs: int = MAX_RUNS, root: Path | None = None):
        """root: the folder the runs' folder goes in (default: the system's temporary folder)."""
        self.max_runs = max_runs
        self._runs: OrderedDict[str, LiveRun] = OrderedDict()
        self._lock = threading.Lock()
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="playground-runs-", dir=root))
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)  # at exit at the latest

    def add(self, run: LiveRun) -> None:
        with self._lock:
            self._runs[run.id] = run
            # A run still computing, or whose last pictures may still be on their way to the page,
            # is never dropped: with batching, a whole class's runs are in progress at once.
            now = time.perf_counter()
            settled = [rid for rid, r in self._runs.items()
                       if r.done.is_set() and now - (r.ended_at or now) > SETTLE_S]
            for old_id in settled[: max(0, len(self._runs) - self.max_runs)]:
                del self._runs[old_id]
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

