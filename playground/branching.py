""""What if" branching: a finished run continued from one of its steps with a new seed (and
optionally a new prompt or temperature), to be shown beside the original.

    diffusion        the run's x0 prediction after step k is noised again, with the new seed's
                     noise, to step k's level, and the rest of the schedule runs from there
                     (`DiffusionRun(start_latent=..., start_at=k)`; why re-noise: see there)
    autoregressive   the first k tokens written are kept as they are and the model samples from
                     token k on with its new seed (`AutoregressiveRun(start_codes=...)`)

What it shows: diffusion settles the layout in its first steps (a branch at step 2 differs a
lot, at step 10 barely), while every autoregressive token fixes the picture so far for good.

Pure logic only (no model, no gradio): where a branch starts, checked, and the samplers' extra
keyword arguments for it (tensors only: picklable, so batch workers can run branches too).

    python -m playground generate "a large red circle" --seed 3 --branch-step 5 --branch-seed 7 --out out/
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from playground.errors import SettingsError
from playground.settings import GenerationSettings, validate_prompt


@dataclass(frozen=True)
class BranchPoint:
    """Where a branch leaves its run: the frame after `step` diffusion steps and the frame after
    `token` tokens (each counted in its own run: `total` steps, `tokens` tokens written)."""

    diffusion: object  # DiffusionFrame
    autoregressive: object  # AutoregressiveFrame

    @property
    def step(self) -> int:
        return self.diffusion.step

    @property
    def token(self) -> int:
        return self.autoregressive.step

    def note(self) -> str:
        """Where the two runs split, in words."""
        d, a = self.diffusion, self.autoregressive
        return f"branched at step {d.step} of {d.total} / {ar_unit(a)} {a.step} of {a.total}"

    def sampler_kwargs(self) -> tuple[dict, dict]:
        """The samplers' extra keyword arguments that start a run here: (diffusion, autoregressive)."""
        d, a = self.diffusion, self.autoregressive
        diffusion = {"start_latent": d.pred_x0.detach().clone(), "start_at": d.skipped + d.step}
        if a.order != "raster":  # an any-order run: the cells written so far kept, the rest in its remaining steps
            return diffusion, {"start_codes": a.codes.clone(), "num_inference_steps": a.total - a.step}
        return diffusion, {"start_codes": a.codes.clone()}


def ar_unit(frame) -> str:
    """What an autoregressive run counts: tokens in raster order, steps of several cells in any other."""
    return "token" if frame.order == "raster" else "AR step"


def check_step(step, total: int, what: str) -> int:
    """A step (or token) to branch at as an int; SettingsError unless 1 <= step < total."""
    try:
        value = float(step)
    except (TypeError, ValueError):
        raise SettingsError(f"the {what} to branch at must be a number, not {step!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise SettingsError(f"the {what} to branch at must be a whole number, not {step!r}")
    if not 1 <= value < total:
        raise SettingsError(f"the {what} to branch at must be between 1 and {total - 1} "
                            f"(the run has {total}), not {int(value)}")
    return int(value)


def point_at_steps(diffusion_frames: list, ar_frames: list, step, token=None) -> BranchPoint:
    """The branch point after `step` diffusion steps and `token` tokens (None: the same fraction
    of the tokens as `step` is of the steps, at least 1 and short of the last)."""
    if not diffusion_frames or not ar_frames:
        raise SettingsError("generate a picture first, then branch from one of its steps")
    steps, tokens = diffusion_frames[-1].total, ar_frames[-1].total
    step = check_step(step, steps, "diffusion step")
    if token is None:
        token = min(tokens - 1, max(1, round(step / steps * tokens)))
    token = check_step(token, tokens, "token")
    found = []
    for frames, k, what in ((diffusion_frames, step, "diffusion step"), (ar_frames, token, "token")):
        if frames[-1].step < k:
            raise SettingsError(f"the run was stopped before {what} {k}: branch from an earlier one")
        frame = next((f for f in frames if f.step == k), None)  # a batched run under load keeps only some
        if frame is None:
            raise SettingsError(f"the run kept no frame at {what} {k}: branch from the slider instead")
        found.append(frame)
    return BranchPoint(*found)


def point_at_fraction(diffusion_frames: list, ar_frames: list, fraction) -> BranchPoint:
    """The branch point at a fraction of each run's progress (the scrub slider's value), as the
    slider shows it; SettingsError at the very start or end (nothing before or after to keep)."""
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise SettingsError(f"the fraction to branch at must be a number, not {fraction!r}") from None
    if not 0 < fraction < 1:
        raise SettingsError(f"move the slider between the start and the end (0 and 1) to branch, not {fraction:g}")
    if not diffusion_frames or not ar_frames:
        raise SettingsError("generate a picture first, then branch from one of its steps")
    pick = lambda frames: frames[int(round(fraction * (len(frames) - 1)))]  # noqa: E731  (outputs.frame_at)
    d, a = pick(diffusion_frames), pick(ar_frames)
    if d.step >= d.total or a.step >= a.total:
        raise SettingsError("that is the end of the run: move the slider back to branch from an earlier step")
    return BranchPoint(d, a)


def branch_settings(settings: GenerationSettings, seed, temperature=None) -> GenerationSettings:
    """The original run's settings with the branch's seed (and temperature, None: the run's own),
    validated (SettingsError)."""
    changes = {"seed": seed}
    if temperature is not None and str(temperature).strip() != "":
        changes["temperature"] = temperature
    return replace(settings, **changes).validated()


def branch_prompt(original: str, prompt) -> str:
    """The branch's prompt: the new one where given (not blank), else the original's."""
    prompt = validate_prompt(prompt)
    return prompt if prompt.strip() else original

