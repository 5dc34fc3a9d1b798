"""The class experiment: one prompt, many seeds, both paradigms; how often does the picture match?

`experiment_progressive(engine, prompt, seeds, settings)` is a generator: it paints the prompt
once per seed with each paradigm (diffusion, then autoregressive, seed after seed, so that the
two grids fill together) and yields an `ExperimentPicture` as each picture is finished, judged
by the shapes-world checker part by part (world/verdict.py). `summarize()` turns them into the
share that match per paradigm with its 95 % Wilson interval, the share right of each part
(colour, shape, size, place, background), and the time (median) and network evaluations per picture.
The experiment always runs the embedded models: the checker knows only their world.

    python -m playground experiment "a small blue star at the top on a yellow background" --seeds 16 --out out/
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from playground.errors import SettingsError
from playground.settings import EMBEDDED, MAX_SEED, GenerationSettings, validate_prompt
from playground.world.verdict import PARTS, Verdict, verdict

PARADIGMS = ("diffusion", "autoregressive")
DEFAULT_SEEDS = 8
MAX_SEEDS = 32  # 32 pictures a paradigm: about a minute of compute on a laptop's CPU
Z_95 = 1.959964  # the normal quantile of a two-sided 95 % interval


@dataclass(frozen=True)
class ExperimentPicture:
    """One finished picture of the experiment and its verdict."""

    paradigm: str  # "diffusion" | "autoregressive"
    index: int  # which of the seeds, from 0
    seed: int
    image: np.ndarray  # (64, 64, 3) uint8
    verdict: Verdict
    seconds: float  # to paint it, the final decode included (not the check)
    network_evaluations: int

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def caption(self) -> str:
        wrong = sorted({p.part for p in self.verdict.parts if not p.ok}, key=PARTS.index)
        return f"seed {self.seed} " + ("✓" if self.ok else "✗ " + ", ".join(wrong)).rstrip()


@dataclass(frozen=True)
class ParadigmSummary:
    paradigm: str
    n: int
    matches: int
    share: float
    low: float  # the 95 % Wilson interval of the share
    high: float
    parts: dict  # {part: share of pictures with that part right}, the parts the prompt names
    seconds_per_picture: float  # the median: one slow picture (the first, or a busy machine) does not hide the rest
    evaluations_per_picture: float

    def line(self) -> str:
        return (f"{self.paradigm}: {self.matches} of {self.n} match ({self.share:.0%}, 95 % interval "
                f"{self.low:.0%}–{self.high:.0%}) · {self.seconds_per_picture:.2f} s (median) and "
                f"{self.evaluations_per_picture:.0f} network evaluations per picture")


def wilson_interval(matches: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a share `matches / n`: unlike the share ± 2 standard errors,
    it stays inside 0..1 and is not zero wide at 0 of n or n of n (few seeds, so it matters)."""
    if n <= 0:
        return 0.0, 1.0
    p = matches / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def validate_experiment(prompt, seeds) -> tuple[str, int]:
    """The prompt and number of seeds; SettingsError with a one-line reason when the prompt
    names nothing the checker can judge or the number of seeds is out of range."""
    prompt = validate_prompt(prompt)
    if not prompt.strip():
        raise SettingsError("the experiment needs a prompt: the checker has nothing to judge an empty one by")
    if not verdict(np.zeros((64, 64, 3), np.uint8), prompt).checkable:
        raise SettingsError("the prompt names no shape or background the checker knows "
                            "(try: a small blue star at the top on a yellow background)")
    try:
        number = float(seeds)
    except (TypeError, ValueError):
        raise SettingsError(f"seeds must be a whole number, not {seeds!r}") from None
    if number != number or number != int(number) or not 1 <= number <= MAX_SEEDS:
        raise SettingsError(f"seeds must be a whole number from 1 to {MAX_SEEDS}, not {seeds!r}")
    return prompt, int(number)


def experiment_seeds(first: int, n: int) -> list[int]:
    """n seeds from `first` on (wrapping round below MAX_SEED)."""
    return [(first + i) % (MAX_SEED + 1) for i in range(n)]


def experiment_progressive(engine, prompt: str, seeds: list[int], settings: GenerationSettings
                           ) -> Iterator[ExperimentPicture]:
    """Paint `prompt` once per seed with each paradigm, yielding each picture as it is done."""
    settings = dataclasses.replace(settings, diffusion_model=EMBEDDED, autoregressive_model=EMBEDDED)
    for index, seed in enumerate(seeds):
        seeded = dataclasses.replace(settings, seed=seed)
        for paradigm in PARADIGMS:
            if paradigm == "diffusion":
                run, kwargs = engine.diffusion_progressive, seeded.diffusion_kwargs()
            else:
                run, kwargs = engine.autoregressive_progressive, seeded.autoregressive_kwargs()
            started = time.perf_counter()
            frame = None
            for frame in run(prompt, **kwargs):
                pass
            image = frame.image()
            seconds = time.perf_counter() - started
            yield ExperimentPicture(paradigm, index, seed, image, verdict(image, prompt), seconds,
                                    int(frame.network_evaluations))


def summarize(pictures: list[ExperimentPicture]) -> dict[str, ParadigmSummary]:
    """Per paradigm (those with pictures): the share that match, its interval, parts, costs."""
    out = {}
    for paradigm in PARADIGMS:
        mine = [p for p in pictures if p.paradigm == paradigm]
        if not mine:
            continue
        matches = sum(p.ok for p in mine)
        low, high = wilson_interval(matches, len(mine))
        by_part: dict[str, list[bool]] = {}
        for p in mine:
            for part in p.verdict.parts:
                by_part.setdefault(part.part, []).append(part.ok)
        parts = {k: float(np.mean(by_part[k])) for k in PARTS if k in by_part}
        out[paradigm] = ParadigmSummary(
            paradigm, len(mine), matches, matches / len(mine), low, high, parts,
            float(np.median([p.seconds for p in mine])), float(np.mean([p.network_evaluations for p in mine])))
    return out


def summary_markdown(summaries: dict[str, ParadigmSummary], seeds: int) -> str:
    """A table of the summaries: one row per paradigm, share, interval, parts, costs."""
    if not summaries:
        return "starting …"
    parts = [k for k in PARTS if any(k in s.parts for s in summaries.values())]
    head = "| | pictures | match | 95 % interval | " + " | ".join(f"{k} right" for k in parts) + " | s / picture (median) | evaluations / picture |"
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for s in summaries.values():
        cells = [s.paradigm, f"{s.n} of {seeds}", f"{s.matches} ({s.share:.0%})", f"{s.low:.0%}–{s.high:.0%}",
                 *(f"{s.parts.get(k, 0):.0%}" for k in parts), f"{s.seconds_per_picture:.2f}",
                 f"{s.evaluations_per_picture:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def grid_image(pictures: list[ExperimentPicture], columns: int = 8, scale: int = 2, border: int = 3) -> np.ndarray:
    """One paradigm's pictures in a grid, in seed order, each framed green (matches) or red."""
    cell = 64 * scale + 2 * border
    rows = max(1, math.ceil(len(pictures) / columns))
    grid = Image.new("RGB", (min(columns, max(len(pictures), 1)) * cell, rows * cell), "white")
    draw = ImageDraw.Draw(grid)
    for i, p in enumerate(sorted(pictures, key=lambda p: p.index)):
        x, y = (i % columns) * cell, (i // columns) * cell
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(60, 170, 75) if p.ok else (220, 50, 47))
        grid.paste(Image.fromarray(p.image).resize((64 * scale, 64 * scale), Image.Resampling.NEAREST),
                   (x + border, y + border))
    return np.asarray(grid)


def experiment_report(prompt: str, settings: GenerationSettings, pictures: list[ExperimentPicture]) -> dict:
    """What the command line writes to report.json: the settings, the summaries, each picture."""
    return {"prompt": prompt, "settings": dataclasses.asdict(settings),
            "seeds": list(dict.fromkeys(p.seed for p in pictures)),
            "summary": {k: dataclasses.asdict(s) for k, s in summarize(pictures).items()},
            "pictures": [{"paradigm": p.paradigm, "seed": p.seed, "matches": p.ok, "reasons": p.verdict.reasons,
                          "wrong_parts": [q.part for q in p.verdict.parts if not q.ok],
                          "seconds": round(p.seconds, 4), "network_evaluations": p.network_evaluations}
                         for p in pictures]}
