"""The diffusion sampler: `diffusion_progressive()` is a generator that yields one
`DiffusionFrame` per denoising step (the denoising loop written out, numbered); `sample()`
drains it.

    python -m playground generate "a large red circle on the left" --out out/
"""

from __future__ import annotations

import time

import numpy as np
import torch

from playground.diffusion.model import DiffusionModel, make_scheduler, unet_input
from playground.editing import mask_to_grid, start_step
from playground.frames import DiffusionFrame
from playground.world.regions import conditional_streams
from playground.world.text import prompt_order


def predicted_x0(scheduler, latents: torch.Tensor, model_output: torch.Tensor, t, step_output) -> torch.Tensor:
    """The model's estimate of the clean latent at this step (x0). Schedulers that scale their
    latents (Euler) report it themselves; the fallback is for variance-preserving ones."""
    x0 = getattr(step_output, "pred_original_sample", None)
    if x0 is not None:
        return x0
    # Schedulers that do not report it (DPM-Solver), from the network's output.
    a = scheduler.alphas_cumprod[int(t)]
    if scheduler.config.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0
        return a.sqrt() * latents - (1 - a).sqrt() * model_output
    return (latents - (1 - a).sqrt() * model_output) / a.sqrt()


@torch.no_grad()
def diffusion_progressive(
    model: DiffusionModel,
    prompt: str,
    seed: int = 0,
    num_inference_steps: int = 12,
    guidance_scale: float = 3.0,
    scheduler: str = "ddim",
    image: np.ndarray | None = None,
    strength: float = 1.0,
    mask: np.ndarray | None = None,
    regional: float = 0.0,
):
    """Generate one picture, yielding a `DiffusionFrame` after every denoising step.

    `regional` (0 to 1): for a prompt with two objects at opposite places, how much of the
    conditional prediction comes from each object's own prompt on its half of the grid
    (`regions.regional_prompts`) rather than from the whole prompt everywhere.

    Editing: `image` (64, 64, 3) uint8 is encoded and noised to the level `strength` of the
    schedule (1: pure noise; 0.5: half way) and denoised from there (image-to-image); only
    `num_inference_steps * strength` steps run. With `mask` ((64, 64) or (g, g) bool, True
    where to repaint) only the region is repainted: after every step the latent outside it is
    replaced by the picture's latent noised to the next step's level (simple RePaint blending).
    """
    start = time.perf_counter()
    enc = model.prompt_encoder(prompt, order=prompt_order(model.text_encoder.config))
    sched = make_scheduler(scheduler, model.scheduler_config)
    ae = model.autoencoder

    # 1. Encode the prompt and the empty prompt (classifier-free guidance needs both). With
    #    regional prompts, each object's prompt as well, each weighted on its half of the grid.
    use_cfg = guidance_scale != 1.0 and not enc.unconditional
    texts, weights = conditional_streams(prompt, ae.grid, regional)  # S prompts, (S, g, g)
    weights = torch.from_numpy(weights)[:, None, None]  # (S, 1, 1, g, g): one per prediction (1, C, g, g)
    ids = [model.prompt_encoder(t, order=prompt_order(model.text_encoder.config)).input_ids for t in texts]
    uncond = model.prompt_encoder("").input_ids
    context, pooled = model.encode_prompts(([uncond] if use_cfg else []) + ids)  # (B, T, D), (B, D)
    evaluations = 1

    # 2. Start from seeded Gaussian noise in the autoencoder's latent space; when editing, from
    #    the picture's latent noised to the first step kept (strength 1: pure noise as well).
    sched.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(int(seed))
    shape = (1, ae.latent_channels, ae.grid, ae.grid)
    noise = torch.randn(shape, generator=generator)  # (1, C, g, g)
    timesteps, skipped = sched.timesteps, 0
    known = region = None
    if image is not None:
        known = ae.encode(image[None])  # (1, C, g, g) the picture's latent
        skipped = start_step(strength, num_inference_steps) if strength < 1 else 0
        timesteps = sched.timesteps[skipped * sched.order :]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(skipped * sched.order)
        if mask is not None:
            region = mask_to_grid(np.asarray(mask, dtype=bool), ae.grid)  # (g, g) cells to repaint
            keep_latent = torch.from_numpy(~region).float()[None, None]  # (1, 1, g, g) 1 outside
    if known is not None and skipped:
        latents = sched.add_noise(known, noise, timesteps[:1])  # (1, C, g, g)
    else:
        latents = noise * sched.init_noise_sigma  # (1, C, g, g)

    for i, t in enumerate(timesteps):
        # 3. Predict (the noise's velocity), for the prompt and (with guidance) for the empty prompt.
        x_in = torch.cat([latents] * context.shape[0])
        x_in = sched.scale_model_input(x_in, t)
        eps = model.unet(unet_input(model.unet, x_in), t, encoder_hidden_states=context, class_labels=pooled).sample  # (B, C, g, g)
        evaluations += 1
        # 4. Classifier-free guidance: push away from the unconditional prediction. The
        #    conditional prediction is the prompts' predictions, each where it counts.
        if use_cfg:
            eps_uncond, eps = eps[:1], eps[1:]
        eps_cond = sum(w * e for w, e in zip(weights, eps.split(1)))  # (1, C, g, g)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond) if use_cfg else eps_cond
        # 5. One scheduler step: the next, less noisy latent and the predicted clean one.
        out = sched.step(eps, t, latents, generator=generator)
        x0 = predicted_x0(sched, latents, eps, t, out)
        latents = out.prev_sample
        # 6. Inpainting: outside the region, the picture's latent at the next step's noise level.
        if region is not None:
            last = i == len(timesteps) - 1
            known_t = known if last else sched.add_noise(known, noise, timesteps[i + 1 : i + 2])
            latents = keep_latent * known_t + (1 - keep_latent) * latents
            x0 = keep_latent * known + (1 - keep_latent) * x0
        yield DiffusionFrame(
            step=i + 1,
            total=len(timesteps),
            timestep=int(t),
            elapsed_ms=(time.perf_counter() - start) * 1000,
            network_evaluations=evaluations,
            latents=latents,
            pred_x0=x0,
            autoencoder=ae,
            unknown_words=enc.unknown_words,
            unconditional=enc.unconditional,
            region=region,
            skipped=skipped,
            regional_prompts=tuple(texts[-2:]) if len(texts) > 1 else (),
        )


def sample(model: DiffusionModel, prompt: str, **kwargs):
    """The final frame of `diffusion_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in diffusion_progressive(model, prompt, **kwargs):
        pass
    return frame
