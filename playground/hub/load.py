"""Load one real Hugging Face model for a panel: the diffusers pipeline or the Janus model,
chosen by kind. Anything that stops it loading becomes one `ModelLoadError`."""

from __future__ import annotations

import functools

from playground.errors import ModelLoadError


def load_hub_model(kind: str, model_id: str, preview_vae: str | None = None):
    """A loaded real model of `kind` ("diffusion" | "autoregressive"), or ModelLoadError."""
    if kind == "diffusion":
        from playground.hub.pipeline import load_pipeline as load
        load = functools.partial(load, preview_vae=preview_vae)
    else:
        from playground.hub.janus import load_janus as load
    try:
        return load(model_id)
    except ModelLoadError:
        raise
    except Exception as exc:  # what the libraries raise varies; the reason is in the first line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{model_id}: could not be loaded: {reason}") from exc
