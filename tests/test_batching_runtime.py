"""The batch worker's loop (runtime/batching.py) without processes: requests join, wait their
turn, stop, and each gets the frames it would get alone."""

from __future__ import annotations

import pytest

from playground.runtime.batching import BatchConfig, BatchLoop
from playground.settings import GenerationSettings

PROMPTS = ("a purple star", "a large red circle on the left on a yellow background", "a small green triangle at the top")


def kwargs_of(kind: str, seed: int) -> dict:
    s = GenerationSettings(seed=seed, num_inference_steps=4)
    return s.diffusion_kwargs() if kind == "diffusion" else s.autoregressive_kwargs()


def drain(loop: BatchLoop, stop_after: dict[int, int] | None = None) -> None:
    """Step until every request has ended; `stop_after` {job: step}: stop that job after that step."""
    stop_after = stop_after or {}
    steps = 0
    while loop.active or loop.waiting:
        loop.step()
        steps += 1
        for job, at in stop_after.items():
            if steps == at:
                loop.stop(job)
        assert steps < 2000


@pytest.mark.parametrize("kind", ["diffusion", "autoregressive"])
def test_requests_wait_their_turn_stop_and_match_their_solo_runs(tiny_engine, kind):
    messages = []
    loop = BatchLoop(tiny_engine, kind, BatchConfig(max_batch=2), lambda job, status, payload: messages.append((job, status, payload)))
    for job, prompt in enumerate(PROMPTS):
        loop.start(job, prompt, kwargs_of(kind, job), 0.0)
    loop.start(9, "a blue heart", kwargs_of(kind, 9), 0.0)
    assert set(loop.active) == {0, 1} and [w[0] for w in loop.waiting] == [2, 9]
    assert (2, "queued") == messages[-2][:2] and messages[-2][2][0] == 1  # first in line
    assert (9, "queued") == messages[-1][:2] and messages[-1][2][0] == 2
    drain(loop, stop_after={9: 1})  # 9 leaves the line before its turn
    ends = {job: payload for job, status, payload in messages if status == "end"}
    assert ends == {0: None, 1: None, 2: None, 9: None}
    progressive = tiny_engine.diffusion_progressive if kind == "diffusion" else tiny_engine.autoregressive_progressive
    for job, prompt in enumerate(PROMPTS):
        frames = [p[0] for j, status, p in messages if j == job and status == "frame"]
        solo = list(progressive(prompt, **kwargs_of(kind, job)))
        assert [f.step for f in frames] == [f.step for f in solo]
        last, own = frames[-1], solo[-1]
        if kind == "autoregressive":
            assert last.codes.tolist() == own.codes.tolist()
        else:
            assert (last.latents - own.latents).abs().max() < 1e-3
    assert not any(j == 9 and status == "frame" for j, status, _ in messages)
    if kind == "autoregressive":
        assert loop.decoder.rows == []  # every row of the shared cache given back


def test_a_bad_request_ends_alone(tiny_engine):
    messages = []
    loop = BatchLoop(tiny_engine, "diffusion", BatchConfig(), lambda *m: messages.append(m))
    loop.start(1, "a purple star", {**kwargs_of("diffusion", 0), "scheduler": "nope"}, 0.0)
    loop.start(2, "a purple star", kwargs_of("diffusion", 0), 0.0)
    drain(loop)
    ends = {job: payload for job, status, payload in messages if status == "end"}
    assert ends[2] is None and "nope" in ends[1]


def test_the_run_store_never_drops_a_run_in_progress(monkeypatch):
    """A class's runs are in progress at once: more than MAX_RUNS of them keep their folders."""
    import threading
    import time
    from types import SimpleNamespace

    from playground.runtime import store

    def run(i, done_ago=None):
        r = SimpleNamespace(id=f"r{i}", done=threading.Event(), ended_at=None)
        if done_ago is not None:
            r.done.set()
            r.ended_at = time.perf_counter() - done_ago
        return r

    runs = store.RunStore(max_runs=2)
    live = [run(i) for i in range(4)]
    for r in live:
        runs.add(r)
        runs.folder_of(r)
    assert all(runs.get(r.id) is r and (runs.folder / r.id).exists() for r in live)
    old = [run(10, done_ago=60), run(11, done_ago=60), run(12, done_ago=1)]
    for r in old:
        runs.add(r)
    # over the limit: only the runs finished long ago go, oldest first, and only as many as needed
    assert runs.get("r10") is None and runs.get("r11") is None
    assert runs.get("r12") is not None and all(runs.get(r.id) for r in live)


def test_a_class_streaming_at_once_shows_fewer_frames_each():
    from playground.runtime.pacing import MIN_FRAMES, MIN_FRAMES_UNDER_LOAD, min_frames_for

    assert [min_frames_for(n) for n in (1, 2, 4)] == [MIN_FRAMES] * 3
    assert MIN_FRAMES_UNDER_LOAD <= min_frames_for(6) < MIN_FRAMES
    assert min_frames_for(30) == min_frames_for(300) == MIN_FRAMES_UNDER_LOAD


def test_a_class_sends_the_page_some_token_frames_and_every_diffusion_step():
    from playground.runtime.batching import FRAMES_UNDER_LOAD, sends_frame

    assert all(sends_frame(s, 256, active=4) for s in range(1, 257))  # a few runs: every frame
    sent = [s for s in range(1, 257) if sends_frame(s, 256, active=30)]
    assert sent[0] == 1 and sent[-1] == 256 and len(sent) == FRAMES_UNDER_LOAD + 1  # first, every 8th, last
    assert all(sends_frame(s, 12, active=30) for s in range(1, 13))  # 12 steps: all of them
