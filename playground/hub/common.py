"""Real Hugging Face models in the playground's two panels: which ones, on which device, and
what went wrong when one cannot be used.

    --diffusion-model ID        any diffusers text-to-image pipeline (hub id or local folder):
                                 Stable Diffusion 1.x / 2.x, SD-Turbo, SDXL, SDXL-Turbo
    --autoregressive-model ID   a transformers Janus model (JanusForConditionalGeneration),
                                 e.g. deepseek-community/Janus-Pro-1B
    --preview-vae ID            an AutoencoderTiny for the diffusion previews (madebyollin/taesd)

(or PLAYGROUND_DIFFUSION_MODEL, PLAYGROUND_AUTOREGRESSIVE_MODEL, PLAYGROUND_PREVIEW_VAE; several
models: comma-separated). `load_hub_model()` loads one, safetensors only and never with remote
code, on CUDA in half precision when there is a GPU. Anything that stops a model loading becomes
one `ModelLoadError` naming the model and why; the engine then keeps the embedded models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from playground.errors import ModelLoadError
from playground.settings import EMBEDDED

ENV = {"diffusion": "PLAYGROUND_DIFFUSION_MODEL", "autoregressive": "PLAYGROUND_AUTOREGRESSIVE_MODEL",
       "preview_vae": "PLAYGROUND_PREVIEW_VAE"}
GPU_SECONDS = 120  # what a ZeroGPU Space grants one Generate


def configured_models(kind: str, given: str | list[str] | None = None) -> list[str]:
    """The model ids asked for: `given` (a flag, possibly repeated or comma-separated), else the
    environment variable; empty or "embedded" entries dropped."""
    if given is None:
        given = os.environ.get(ENV[kind], "")
    items = [given] if isinstance(given, str) else list(given)
    ids = [part.strip() for item in items for part in item.split(",")]
    return list(dict.fromkeys(i for i in ids if i and i != EMBEDDED))


def device_and_dtype(prefer_bfloat16: bool = False):
    """CUDA in half precision when there is a GPU (bfloat16 where asked and supported), else the
    CPU in float32."""
    import torch

    if torch.cuda.is_available():
        if prefer_bfloat16 and torch.cuda.is_bf16_supported():
            return torch.device("cuda"), torch.bfloat16
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def on_gpu(fn, duration: int = GPU_SECONDS):
    """`fn` under Hugging Face ZeroGPU's `spaces.GPU` where the `spaces` package is installed
    (a ZeroGPU Space lends a GPU only inside such calls); `fn` itself everywhere else."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def read_config(model_id: str, filename: str, what: str) -> dict:
    """A model's JSON config file from a local folder or the Hub (cached; offline when
    HF_HUB_OFFLINE=1), or ModelLoadError saying why not. `what` names the kind of model wanted."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        path = folder / filename
        if not path.is_file():
            raise ModelLoadError(f"{model_id}: the folder has no {filename}, so it is not {what}")
        return json.loads(path.read_text())
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return json.loads(Path(hf_hub_download(model_id, filename)).read_text())
    except HFValidationError:
        raise ModelLoadError(f"{model_id}: no such folder, and not a valid Hugging Face Hub model id") from None
    except GatedRepoError:
        raise ModelLoadError(
            f"{model_id}: a gated model; accept its licence on https://huggingface.co/{model_id} and log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"{model_id}: no such model on the Hugging Face Hub (or it is private: log in with `hf auth login`)"
        ) from None
    except LocalEntryNotFoundError:
        why = ("downloads are off (HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
               else "the Hugging Face Hub cannot be reached")
        raise ModelLoadError(f"{model_id}: not in the local cache, and {why}") from None
    except RemoteEntryNotFoundError:
        raise ModelLoadError(f"{model_id}: the model has no {filename}, so it is not {what}") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{model_id}: cannot read its {filename}: {exc}") from None
