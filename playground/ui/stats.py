"""`RunStats`: the server-side timings of one Generate, shown in the page's timing box and
read by playground/evaluation/bench_app.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from playground.runtime.pacing import Pacer
from playground.runtime.run import LiveRun


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
