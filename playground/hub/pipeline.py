"""A real diffusers text-to-image pipeline in the diffusion panel: Stable Diffusion 1.x / 2.x,
SD-Turbo, SDXL, SDXL-Turbo, by Hugging Face Hub id or local folder.

The pipeline runs itself (its own prompt encoding, guidance and conditioning), on a thread of
its own, one denoising step per request: `hub_diffusion_progressive()` yields the same
`DiffusionFrame`s as the embedded sampler. The step callback sees the noisy latent; the
scheduler's step is wrapped to keep its predicted clean latent (x0) too. Previews decode
through an `AutoencoderTiny` when one is configured, else through a linear latent-to-RGB map;
the final picture through the pipeline's full VAE.

    python -m playground generate "an astronaut riding a horse" --diffusion-model stabilityai/sd-turbo --steps 2 --guidance-scale 0
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from playground.autoencoder.model import tensor_to_images
from playground.diffusion.model import make_scheduler
from playground.diffusion.sample import predicted_x0
from playground.errors import ModelLoadError
from playground.frames import DISPLAY_SIZE, DiffusionFrame
from playground.hub.common import device_and_dtype, read_config

# Latent channel -> RGB weights, per VAE family (told apart by their scaling factors): a
# preview that costs one small matrix product (ComfyUI's published approximations).
LATENT_RGB = {
    0.18215: [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],  # SD 1.x / 2.x
    0.13025: [[0.3920, 0.4054, 0.4549], [-0.2634, -0.0196, 0.0653], [0.0568, 0.1687, -0.0755], [-0.3112, -0.2359, -0.2076]],  # SDXL
}
SUPPORTED = "UNet-based text-to-image pipelines (Stable Diffusion 1.x / 2.x, SD-Turbo, SDXL, SDXL-Turbo)"


@dataclass
class PreviewConfig:
    display_size_min: int = DISPLAY_SIZE  # pictures are shown at least 64 * scale pixels high
    display_fraction: int = 4  # ... and the full picture at the playground's scale 4 is shown 1:1


class PipelineDecoder:
    """The frames' `Decoder` for a diffusers pipeline: cheap previews, the full VAE at the end."""

    def __init__(self, pipeline, tiny_vae=None, cfg: PreviewConfig = PreviewConfig()):
        self.pipeline = pipeline
        self.vae = pipeline.vae
        self.tiny_vae = tiny_vae
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        height = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
        self.display_size = max(cfg.display_size_min, height // cfg.display_fraction)
        factors = LATENT_RGB.get(round(self.scaling_factor, 5))
        self.latent_rgb = torch.tensor(factors) if factors and self.vae.config.latent_channels == 4 else None

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> (B, H, W, 3) uint8 through the full VAE (and the pipeline's
        safety checker, where it has one)."""
        vae = self.vae
        images = vae.decode(latents.to(vae.device, vae.dtype) / self.scaling_factor + self.shift_factor).sample
        if getattr(self.pipeline, "safety_checker", None) is not None:
            images, _ = self.pipeline.run_safety_checker(images, vae.device, vae.dtype)
        return tensor_to_images(images)

    @torch.no_grad()
    def preview_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> (B, H', W', 3) uint8, cheaply: the tiny autoencoder, else the
        linear map (one pixel per latent cell), else the first three channels."""
        if self.tiny_vae is not None:
            tiny = self.tiny_vae
            return tensor_to_images(tiny.decode(latents.to(tiny.device, tiny.dtype) / tiny.config.scaling_factor).sample)
        x = latents.detach().float().cpu()  # (B, C, h, w)
        if self.latent_rgb is not None:
            rgb = torch.einsum("bchw,cr->brhw", x, self.latent_rgb)  # (B, 3, h, w), about [-1, 1]
        else:
            rgb = x[:, :3] / x[:, :3].abs().amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        return tensor_to_images(rgb)


@dataclass
class HubDiffusionModel:
    """A loaded pipeline and what its runs need."""

    name: str
    pipeline: object  # a diffusers DiffusionPipeline
    decoder: PipelineDecoder
    device: torch.device

    def progressive(self, prompt: str, **kwargs):
        return hub_diffusion_progressive(self, prompt, **kwargs)

    def pipeline_with(self, scheduler):
        """A pipeline sharing this one's components (no copies), with its own scheduler: runs
        side by side do not share state."""
        cls = type(self.pipeline)
        accepted = inspect.signature(cls.__init__).parameters
        options = {k: v for k, v in self.pipeline.config.items() if k in accepted and not k.startswith("_")}
        pipe = cls(**{**options, **self.pipeline.components, "scheduler": scheduler})
        pipe.set_progress_bar_config(disable=True)
        return pipe


def load_pipeline(model_id: str, preview_vae: str | None = None) -> HubDiffusionModel:
    """A text-to-image pipeline by hub id or folder (safetensors only), on the GPU in half
    precision when there is one; ModelLoadError when it is not one we can drive."""
    from diffusers import AutoencoderTiny, DiffusionPipeline

    index = read_config(model_id, "model_index.json", "a diffusers pipeline")
    kind = index.get("_class_name", "unknown pipeline")
    if "unet" not in index or "vae" not in index or "Img2Img" in kind or "Inpaint" in kind:
        raise ModelLoadError(f"{model_id}: a {kind}; the playground runs {SUPPORTED}")
    device, dtype = device_and_dtype()
    pipeline = DiffusionPipeline.from_pretrained(model_id, dtype=dtype, use_safetensors=True)
    pipeline.to(device)
    if dtype != torch.float32:
        pipeline.vae.to(torch.float32)  # the final decode in float32: SDXL's VAE overflows in float16
    pipeline.set_progress_bar_config(disable=True)
    tiny = None
    if preview_vae:
        read_config(preview_vae, "config.json", "an AutoencoderTiny")
        try:
            tiny = AutoencoderTiny.from_pretrained(preview_vae, dtype=dtype, use_safetensors=True).to(device).eval()
        except Exception as exc:
            raise ModelLoadError(f"{preview_vae}: could not be loaded as a preview autoencoder: {exc}") from exc
    return HubDiffusionModel(model_id, pipeline, PipelineDecoder(pipeline, tiny), device)


class Stopped(Exception):
    """Raised inside the pipeline's step callback to end a run that nobody reads any more."""


def lockstep(work):
    """Run `work(hand_over)` on a thread of its own, one step per `next()` of this generator:
    `work` calls `hand_over(item)` after each step, which yields `item` here and blocks until
    the next `next()`. Closing the generator (Stop) makes `hand_over` raise `Stopped`."""
    items: queue.Queue = queue.Queue(maxsize=1)
    turn = threading.Semaphore(0)
    stop = threading.Event()
    done = object()

    def hand_over(item):
        items.put(item)
        turn.acquire()
        if stop.is_set():
            raise Stopped

    def target():
        try:
            work(hand_over)
        except Stopped:
            return
        except BaseException as exc:  # raised again in the reader's thread
            items.put(exc)
            return
        items.put(done)

    thread = threading.Thread(target=target, name="pipeline", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
            turn.release()
    finally:
        stop.set()
        turn.release()
        thread.join(timeout=60)


def hub_diffusion_progressive(
    model: HubDiffusionModel,
    prompt: str,
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 3.0,
    scheduler: str = "ddim",
):
    """Generate one picture, yielding a `DiffusionFrame` after every denoising step."""
    start = time.perf_counter()
    # 1. A pipeline for this run alone: the model's components, a fresh scheduler of the chosen kind.
    sched = make_scheduler(scheduler, model.pipeline.scheduler.config)
    pipe = model.pipeline_with(sched)

    # 2. Keep each step's predicted clean latent (x0): reported by the scheduler, or computed.
    predicted = {}
    scheduler_step = sched.step

    def step(model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
        out = scheduler_step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        predicted["x0"] = predicted_x0(sched, sample, model_output, timestep, out)  # (B, C, h, w)
        return out if return_dict else out.to_tuple()

    sched.step = step

    # 3. The pipeline, on its own thread: after every step it hands over the latents and waits.
    def run(hand_over):
        def on_step_end(pipe, i, t, tensors):
            hand_over((i, t, tensors["latents"].detach().clone(), predicted["x0"].detach().clone()))
            return {}

        pipe(
            prompt=prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            generator=torch.Generator("cpu").manual_seed(int(seed)),  # the same noise on any device
            output_type="latent", callback_on_step_end=on_step_end,
        )

    for i, t, latents, x0 in lockstep(run):
        # 4. One frame per step: the noisy latent (1, C, h, w) and the predicted clean one.
        yield DiffusionFrame(
            step=i + 1,
            total=len(sched.timesteps),
            timestep=int(t),
            elapsed_ms=(time.perf_counter() - start) * 1000,
            network_evaluations=i + 2,  # the text encoder, then one UNet call (batch 2 with guidance) a step
            latents=latents,
            pred_x0=x0,
            autoencoder=model.decoder,
            unconditional=not prompt.strip(),
        )


def sample(model: HubDiffusionModel, prompt: str, **kwargs):
    """The final frame of `hub_diffusion_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in hub_diffusion_progressive(model, prompt, **kwargs):
        pass
    return frame
