"""Generation settings shared by the command line, the UI and the API, with their limits.

`GenerationSettings.validated()` turns out-of-range or malformed values into one clear
`SettingsError` message, so that every front end reports bad input the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from playground.errors import SettingsError
from playground.world.text import MAX_PROMPT_CHARS

MAX_SEED = 2**31 - 1
EMBEDDED = "embedded"  # the name of the embedded models in menus and settings
SCHEDULER_NAMES = ("ddim", "euler", "ddpm", "dpm")  # the diffusion samplers (diffusion.model.SCHEDULERS)
# The orders the autoregressive panel writes its codes in (autoregressive.masked_model.ORDERS):
# raster by the GPT-2, one cell a step; random and confidence-first by the any-order BERT.
AR_ORDERS = ("raster", "random", "confidence")


MODEL_FIELDS = ("diffusion_model", "autoregressive_model")

# name: (low, high) inclusive
LIMITS = {
    "seed": (0, MAX_SEED),
    "num_inference_steps": (1, 100),
    "guidance_scale": (0.0, 20.0),
    "temperature": (0.0, 5.0),
    "top_k": (0, 4096),
    "top_p": (0.01, 1.0),
    "ar_guidance_scale": (0.0, 20.0),
    "regional": (0.0, 1.0),
    "ar_regional": (0.0, 1.0),
    "ar_steps": (0, 256),  # the any-order model's steps; 0: its default for the order
    # editing
    "strength": (0.05, 1.0),
    "keep_rows": (0, 15),  # of the 16 token rows; at least one row is written
}


@dataclass
class GenerationSettings:
    seed: int = 0
    # diffusion. 12 DDIM steps keep the prompt adherence of 20 in 0.6 of the time.
    num_inference_steps: int = 12
    scheduler: str = "ddim"
    # guidance 4.0: the best adherence and edits of the values tried, at no extra cost (the
    # 2026-12-03 diffusion weights: held-out prompts 86.0 % against 85.0 % at 3.0, edits 82 %
    # against 79 %; on other cases guidance 6 and 8 gave 82 and 79 % against 79 %)
    guidance_scale: float = 4.0
    # autoregressive. Temperature 0.6 with guidance 1.5: the best adherence of the values tried
    # (lower temperatures draw two-object prompts worse)
    temperature: float = 0.6
    top_k: int = 0
    top_p: float = 1.0
    ar_guidance_scale: float = 1.5  # stronger guidance drives the token stream off the data
    # Regional prompts (world/regions.py; embedded models, two objects at opposite places): 0 off,
    # 1 each object's own prompt alone steers its half. Diffusion at 0.5: what puts two objects in
    # their places (far more two-object prompts right than at 0, 0.25 or 1).
    regional: float = 0.5
    # Off for the autoregressive model, which reads each object's place first: four token streams
    # instead of two cost a third more time a two-object picture, for a few points at most.
    ar_regional: float = 0.0
    # The order the autoregressive panel writes in, and the steps of the any-order model (0: 12
    # confidence-first, 32 random; raster always takes one step a cell).
    ar_order: str = "raster"
    ar_steps: int = 0
    # which model paints each panel ("": the engine's default; see Engine.models)
    diffusion_model: str = ""
    autoregressive_model: str = ""

    def validated(self) -> "GenerationSettings":
        """A copy with numbers converted to their types; SettingsError when out of range."""
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in MODEL_FIELDS:
                v = "" if v is None else str(v).strip()  # the engine knows which models there are
            elif f.name == "ar_order":
                v = str(v).lower()
                if v not in AR_ORDERS:
                    raise SettingsError(f"ar_order must be one of {', '.join(AR_ORDERS)}, not {v!r}")
            elif f.name == "scheduler":
                v = str(v).lower()
                if v not in SCHEDULER_NAMES:
                    raise SettingsError(f"scheduler must be one of {', '.join(SCHEDULER_NAMES)}, not {v!r}")
            else:
                kind = int if f.type in ("int", int) else float
                try:
                    num = float(v)
                except (TypeError, ValueError):
                    raise SettingsError(f"{f.name} must be a number, not {v!r}") from None
                if num != num or num in (float("inf"), float("-inf")):
                    raise SettingsError(f"{f.name} must be a finite number, not {v!r}")
                if kind is int and num != int(num):
                    raise SettingsError(f"{f.name} must be a whole number, not {v!r}")
                lo, hi = LIMITS[f.name]
                if not lo <= num <= hi:
                    raise SettingsError(f"{f.name} must be between {lo} and {hi}, not {v!r}")
                v = kind(num)
            values[f.name] = v
        return type(self)(**values)

    def diffusion_kwargs(self) -> dict:
        return dict(seed=self.seed, num_inference_steps=self.num_inference_steps,
                    guidance_scale=self.guidance_scale, scheduler=self.scheduler, regional=self.regional,
                    **({"model": self.diffusion_model} if self.diffusion_model else {}))

    def autoregressive_kwargs(self) -> dict:
        return dict(seed=self.seed, temperature=self.temperature, top_k=self.top_k,
                    top_p=self.top_p, guidance_scale=self.ar_guidance_scale, regional=self.ar_regional,
                    **({"model": self.autoregressive_model} if self.autoregressive_model else {}),
                    **({"order": self.ar_order, "num_inference_steps": self.ar_steps} if self.ar_order != "raster" else {}))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EditSettings(GenerationSettings):
    """Generation settings plus the two of an edit: how far diffusion noises the picture
    (`strength`, 1 = pure noise) and how many token rows the autoregressive model keeps
    (`keep_rows`, used when no region is painted)."""

    # Of the 12 default steps diffusers' rule denoises int(12 * strength): 0.95 runs the last 11,
    # the strongest that is still an edit (1.0 starts from pure noise and forgets the picture);
    # 0.9 runs 10 and succeeds less often (the shipped weights at 0.95: 89 % of one-attribute edits).
    strength: float = 0.95
    keep_rows: int = 8

    def diffusion_kwargs(self) -> dict:
        return {**super().diffusion_kwargs(), "strength": self.strength}


# Distilled "turbo" models are trained to paint in 1-4 steps with no guidance: 20 guided steps
# burn them out. Other hub pipelines use the guidance they were trained for (Stable Diffusion: 7.5).
TURBO_SETTINGS = {"num_inference_steps": 2, "guidance_scale": 0.0}
HUB_SETTINGS = {"num_inference_steps": 25, "guidance_scale": 7.5}


def suggested_diffusion_settings(model: str) -> dict:
    """The steps and guidance that suit a diffusion model, by its name ("" or "embedded": the
    embedded model): what the app's settings change to when the model menu does, and what the
    command line uses when --steps / --guidance-scale are not given."""
    name = (model or "").strip().lower()
    if not name or name == EMBEDDED:
        d = GenerationSettings()
        return {"num_inference_steps": d.num_inference_steps, "guidance_scale": d.guidance_scale}
    return dict(TURBO_SETTINGS if "turbo" in name else HUB_SETTINGS)


def validate_prompt(prompt) -> str:
    """The prompt as a string; SettingsError when it is not text or is too long."""
    if prompt is None:
        return ""
    if not isinstance(prompt, str):
        raise SettingsError(f"the prompt must be text, not {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SettingsError(f"the prompt is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS:,} are allowed")
    return prompt
