"""What the page and the API hand the handlers, read: the inputs of /generate and /edit by
name, the settings validated, and the picture and painted region of an edit's image editors.

The settings' names come from the dataclasses in playground/settings.py, once, here:
GENERATE_INPUTS and EDIT_INPUTS are the parameters of /generate and /edit, in order; app.py
builds its inputs lists from them, and `takes_inputs` gives each handler that signature.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

import gradio as gr
import numpy as np
from PIL import Image

from playground.editing import EditInput, load_edit, load_picture, strength_timeline
from playground.errors import EditInputError, SettingsError
from playground.frames import upscale
from playground.settings import (
    EMBEDDED,
    MODEL_FIELDS,
    EditSettings,
    GenerationSettings,
    suggested_diffusion_settings,
    validate_prompt,
)
from playground.ui.views import PREVIEW_SCALE

_GENERATION_FIELDS = tuple(f.name for f in fields(GenerationSettings))
# The API lists the regional settings last, after the model menus: callers that pass values by
# position rely on that order.
_LAST = ("regional", "ar_regional", "ar_order", "ar_steps")
GENERATE_SETTINGS = tuple(n for n in _GENERATION_FIELDS if n not in _LAST) + _LAST
EDIT_ONLY_SETTINGS = tuple(f.name for f in fields(EditSettings) if f.name not in _GENERATION_FIELDS)
# An edit runs on the embedded models (no model menus), and its own settings follow the seed.
EDIT_SETTINGS = ("seed", *EDIT_ONLY_SETTINGS,
                 *(n for n in GENERATE_SETTINGS if n not in ("seed", *MODEL_FIELDS)))

GENERATE_INPUTS = ("prompt", *GENERATE_SETTINGS)  # the parameters of /generate, in order
EDIT_INPUTS = ("picture", "prompt", "mask", *EDIT_SETTINGS)  # the parameters of /edit, in order
INPUT_DEFAULTS = {"prompt": "", "picture": None, "mask": None, **EditSettings().as_dict()}


def takes_inputs(names: tuple[str, ...]):
    """Decorate a streaming handler `fn(self, values, request)` so that it is called as
    `handler(self, <one parameter per name>, request=None)`, positionally or by keyword, and
    gets {name: value}. Gradio reads the API's parameter names and defaults from that
    signature (`__signature__`), and passes the gr.Request where the annotation says."""
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter("self", keyword)]
        + [inspect.Parameter(name, keyword, default=INPUT_DEFAULTS[name]) for name in names]
        + [inspect.Parameter("request", keyword, default=None, annotation=gr.Request)]
    )

    def decorate(fn):
        assert inspect.isgeneratorfunction(fn), "gradio streams a handler only if it is a generator function"

        def handler(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            self, request = values.pop("self"), values.pop("request")
            yield from fn(self, values, request)

        handler.__name__, handler.__qualname__, handler.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        handler.__module__ = fn.__module__
        handler.__signature__ = signature
        handler.__annotations__ = {"request": gr.Request}  # what gradio's type-hint check reads
        return handler

    return decorate


def parse_settings(prompt, settings: dict, edit: bool = False) -> tuple[str, GenerationSettings]:
    """The prompt and validated settings (EditSettings for an edit, whose models are the
    embedded ones); gr.Error with the reason when they cannot be used."""
    try:
        prompt = validate_prompt(prompt)
        if edit:
            settings = EditSettings(**{**settings, **dict.fromkeys(MODEL_FIELDS, EMBEDDED)}).validated()
        else:
            settings = GenerationSettings(**settings).validated()
    except SettingsError as exc:
        raise gr.Error(str(exc), title="Cannot edit" if edit else "Cannot generate") from None
    return prompt, settings


def editor_picture(value):
    """The picture in an image editor's value (the background with what was drawn on it), or
    a picture given directly (a path or an array: API callers)."""
    if isinstance(value, dict):
        return value.get("composite") if value.get("composite") is not None else value.get("background")
    return value


def painted_layers(value) -> list[np.ndarray]:
    """An image editor's brush layers that hold paint, as RGBA arrays (H, W, 4)."""
    if not isinstance(value, dict):
        return []
    layers = [np.asarray(Image.open(x) if isinstance(x, str) else x) for x in value.get("layers") or [] if x is not None]
    return [a for a in layers if a.ndim == 3 and a.shape[2] == 4 and a[..., 3].any()]


def editor_mask(value):
    """The region painted in an image editor (its brush layers: painted wherever opaque) as a
    white-on-black picture; None when nothing is painted. A picture given directly is the mask."""
    if not isinstance(value, dict):
        return value
    layers = painted_layers(value)
    if not layers:
        return None
    if len({a.shape for a in layers}) > 1:
        raise EditInputError("the painted layers have different sizes: paint the region on one canvas")
    painted = np.any([a[..., 3] > 0 for a in layers], axis=0)  # (H, W)
    return Image.fromarray(painted.astype(np.uint8) * 255)


def parse_edit(picture, mask) -> EditInput:
    """The picture and region of an edit from the page or the API; gr.Error when unusable."""
    try:
        return load_edit(editor_picture(picture), editor_mask(mask))
    except SettingsError as exc:  # EditInputError is one
        raise gr.Error(str(exc), title="Cannot edit") from None


def mask_canvas(picture, mask=None):
    """The region editor's canvas: the picture as the models will see it (64 x 64, shown
    256 x 256), with the region already painted in `mask` (the region editor's value) kept on
    it, so that a new picture sent here does not wipe out a painted region. (In the browser a
    stroke on the picture canvas still clears the region in gradio's front end without calling
    this.) None when there is no usable picture."""
    picture = editor_picture(picture)
    try:
        picture = None if picture is None else upscale(load_picture(picture)[0], PREVIEW_SCALE)
    except EditInputError:
        return None  # said when the picture was given
    if picture is None:
        return None
    return editor_canvas(picture, [a for a in painted_layers(mask) if a.shape[:2] == picture.shape[:2]])


def editor_canvas(picture: np.ndarray, layers: list[np.ndarray] = ()) -> dict:
    """An image editor's value: a picture (H, W, 3) with the brush layers (H, W, 4) over it."""
    composite = Image.fromarray(picture).convert("RGBA")
    for layer in layers:
        composite.alpha_composite(Image.fromarray(layer))
    return {"background": picture, "layers": list(layers), "composite": np.asarray(composite.convert("RGB"))}

def model_settings(model) -> tuple[int, float]:
    """(steps, guidance) for the Settings fields when the diffusion model menu changes: a turbo
    model paints in 2 steps without guidance, the embedded model at its defaults
    (settings.suggested_diffusion_settings)."""
    suggested = suggested_diffusion_settings(model if isinstance(model, str) else "")
    return suggested["num_inference_steps"], suggested["guidance_scale"]


def edit_timeline(strength, num_inference_steps) -> str:
    """The line under the strength slider: where the edit enters the denoising schedule."""
    try:
        s = EditSettings(strength=strength, num_inference_steps=num_inference_steps).validated()
    except SettingsError as exc:
        return f"⚠️ {exc}"
    return strength_timeline(s.strength, s.num_inference_steps)

