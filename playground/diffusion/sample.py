"""The diffusion sampler. One request's state is a `DiffusionRun` (its prompts, seed,
scheduler and latent); `denoise_together()` takes one denoising step of several runs with a
single UNet call over all their rows, each run at its own step (continuous batching: a request
may join at its step 0 while others are mid-run, and leave at any step). `diffusion_progressive()`
is a generator that yields one `DiffusionFrame` per denoising step of a run stepped alone, the
same code a batch runs; `sample()` drains it. The denoising loop is written out, numbered, in
`DiffusionRun`.

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


class DiffusionRun:
    """One request's denoising state: its encoded prompts, its own scheduler instance (the
    multistep ones keep past predictions) and random generator (DDPM draws noise at every step),
    its latent, and for an edit the picture's latent and the region to repaint.

    The step is split around the network so that many runs can share one UNet call:
    `model_inputs()` gives this run's rows (step 3's inputs), `advance(eps)` takes this run's rows
    of the UNet's output and finishes the step (steps 4-6), returning the frame.

    `regional` (0 to 1): for a prompt with two objects at opposite places, how much of the
    conditional prediction comes from each object's own prompt on its half of the grid
    (`regions.regional_prompts`) rather than from the whole prompt everywhere.

    Editing: `image` (64, 64, 3) uint8 is encoded and noised to the level `strength` of the
    schedule (1: pure noise; 0.5: half way) and denoised from there (image-to-image); only
    `num_inference_steps * strength` steps run. With `mask` ((64, 64) or (g, g) bool, True
    where to repaint) only the region is repainted: after every step the latent outside it is
    replaced by the picture's latent noised to the next step's level (simple RePaint blending).

    Branching ("what if"): `start_latent` (1, C, g, g), a clean-latent estimate (another run's
    x0 prediction after `start_at` of its steps), is noised with this run's seed's noise to
    the level of step `start_at` (counted from the schedule's start, an edit's skipped steps
    included) and the rest of the schedule is run from there. Why re-noise x0 rather than
    continue from the other run's noisy latent: DDIM and the ODE samplers are deterministic, so
    from the same latent every seed would paint the same picture. After step k DDIM's latent is
    exactly x0_k noised with the network's own noise estimate; a branch keeps x0_k and swaps
    that noise for fresh noise from its seed (what image-to-image does with a picture's latent).
    """

    @torch.no_grad()
    def __init__(
        self,
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
        start_latent: torch.Tensor | np.ndarray | None = None,
        start_at: int = 0,
    ):
        self.start = time.perf_counter()  # elapsed_ms is this run's own wall time since here
        self.model, self.guidance_scale = model, guidance_scale
        self.enc = model.prompt_encoder(prompt, order=prompt_order(model.text_encoder.config))
        self.sched = sched = make_scheduler(scheduler, model.scheduler_config)
        self.ae = ae = model.autoencoder
        self.step_index = 0  # timesteps taken so far

        # 1. Encode the prompt and the empty prompt (classifier-free guidance needs both). With
        #    regional prompts, each object's prompt as well, each weighted on its half of the grid.
        self.use_cfg = guidance_scale != 1.0 and not self.enc.unconditional
        self.texts, weights = conditional_streams(prompt, ae.grid, regional)  # S prompts, (S, g, g)
        self.weights = torch.from_numpy(weights)[:, None, None]  # (S, 1, 1, g, g): one per prediction (1, C, g, g)
        ids = [model.prompt_encoder(t, order=prompt_order(model.text_encoder.config)).input_ids for t in self.texts]
        uncond = model.prompt_encoder("").input_ids
        self.context, self.pooled = model.encode_prompts(([uncond] if self.use_cfg else []) + ids)  # (B_r, T, D), (B_r, D)
        self.evaluations = 1

        # 2. Start from seeded Gaussian noise in the autoencoder's latent space; when editing, from
        #    the picture's latent noised to the first step kept (strength 1: pure noise as well).
        sched.set_timesteps(num_inference_steps)
        self.generator = torch.Generator().manual_seed(int(seed))
        shape = (1, ae.latent_channels, ae.grid, ae.grid)
        self.noise = torch.randn(shape, generator=self.generator)  # (1, C, g, g)
        self.timesteps, self.skipped = sched.timesteps, 0
        self.known = self.region = self.keep_latent = None
        if image is not None:
            self.known = ae.encode(image[None])  # (1, C, g, g) the picture's latent
            self.skipped = start_step(strength, num_inference_steps) if strength < 1 else 0
            self.timesteps = sched.timesteps[self.skipped * sched.order :]
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(self.skipped * sched.order)
            if mask is not None:
                self.region = mask_to_grid(np.asarray(mask, dtype=bool), ae.grid)  # (g, g) cells to repaint
                self.keep_latent = torch.from_numpy(~self.region).float()[None, None]  # (1, 1, g, g) 1 outside
        if start_latent is not None:  # a branch: another run's x0 re-noised with this seed's noise
            if not 0 < int(start_at) < num_inference_steps:
                raise ValueError(f"a branch starts after 1 to {num_inference_steps - 1} steps, not {start_at}")
            self.skipped = int(start_at)
            self.timesteps = sched.timesteps[self.skipped * sched.order :]
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(self.skipped * sched.order)
            start = torch.as_tensor(np.asarray(start_latent), dtype=torch.float32).reshape(shape)  # (1, C, g, g)
            self.latents = sched.add_noise(start, self.noise, self.timesteps[:1])  # (1, C, g, g)
        elif self.known is not None and self.skipped:
            self.latents = sched.add_noise(self.known, self.noise, self.timesteps[:1])  # (1, C, g, g)
        else:
            self.latents = self.noise * sched.init_noise_sigma  # (1, C, g, g)

    @property
    def done(self) -> bool:
        """Every timestep taken."""
        return self.step_index >= len(self.timesteps)

    @property
    def rows(self) -> int:
        """The UNet rows a step of this run takes: (unconditional +) one per conditional prompt."""
        return self.context.shape[0]

    @torch.no_grad()
    def model_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Step 3's inputs for this run's rows: the scaled latent (B_r, C, g, g), the timestep
        (B_r,), the text states (B_r, T, D) and the pooled prompt (B_r, D) or None."""
        if self.done:
            raise RuntimeError("this run has taken every step")
        t = self.timesteps[self.step_index]
        # 3. Predict (the noise's velocity), for the prompt and (with guidance) for the empty prompt.
        x_in = torch.cat([self.latents] * self.rows)  # (B_r, C, g, g)
        x_in = self.sched.scale_model_input(x_in, t)  # (B_r, C, g, g)
        return x_in, t.expand(self.rows), self.context, self.pooled

    @torch.no_grad()
    def advance(self, eps: torch.Tensor) -> DiffusionFrame:
        """Finish this run's step with its rows of the UNet's output (B_r, C, g, g)."""
        sched, i, t = self.sched, self.step_index, self.timesteps[self.step_index]
        latents, timesteps, known = self.latents, self.timesteps, self.known
        self.evaluations += 1
        # 4. Classifier-free guidance: push away from the unconditional prediction. The
        #    conditional prediction is the prompts' predictions, each where it counts.
        if self.use_cfg:
            eps_uncond, eps = eps[:1], eps[1:]  # (1, C, g, g), (S, C, g, g)
        eps_cond = sum(w * e for w, e in zip(self.weights, eps.split(1)))  # (1, C, g, g)
        eps = eps_uncond + self.guidance_scale * (eps_cond - eps_uncond) if self.use_cfg else eps_cond
        # 5. One scheduler step: the next, less noisy latent and the predicted clean one.
        out = sched.step(eps, t, latents, generator=self.generator)
        x0 = predicted_x0(sched, latents, eps, t, out)  # (1, C, g, g)
        latents = out.prev_sample  # (1, C, g, g)
        # 6. Inpainting: outside the region, the picture's latent at the next step's noise level.
        if self.region is not None:
            last = i == len(timesteps) - 1
            known_t = known if last else sched.add_noise(known, self.noise, timesteps[i + 1 : i + 2])
            latents = self.keep_latent * known_t + (1 - self.keep_latent) * latents  # (1, C, g, g)
            x0 = self.keep_latent * known + (1 - self.keep_latent) * x0  # (1, C, g, g)
        self.latents, self.step_index = latents, i + 1
        return DiffusionFrame(
            step=i + 1,
            total=len(timesteps),
            timestep=int(t),
            elapsed_ms=(time.perf_counter() - self.start) * 1000,
            network_evaluations=self.evaluations,
            latents=latents,
            pred_x0=x0,
            autoencoder=self.ae,
            unknown_words=self.enc.unknown_words,
            unconditional=self.enc.unconditional,
            region=self.region,
            skipped=self.skipped,
            regional_prompts=tuple(self.texts[-2:]) if len(self.texts) > 1 else (),
        )


@torch.no_grad()
def denoise_together(model: DiffusionModel, runs: list[DiffusionRun]) -> list[DiffusionFrame]:
    """One UNet call over every run's rows (concatenated, each row at its run's own timestep),
    then each run advances with its own rows; one frame per run, in order. Every prompt is
    padded to the same number of tokens, so the runs' text states concatenate."""
    if not runs:
        return []
    inputs = [run.model_inputs() for run in runs]
    x_in = torch.cat([x for x, _, _, _ in inputs])  # (B, C, g, g)
    ts = [t for _, t, _, _ in inputs]
    if len({t.dtype for t in ts}) > 1:  # DDIM's timesteps are integers, Euler's floats
        ts = [t.float() for t in ts]
    t = torch.cat(ts)  # (B,)
    context = torch.cat([c for _, _, c, _ in inputs])  # (B, T, D)
    pooled = None if inputs[0][3] is None else torch.cat([p for _, _, _, p in inputs])  # (B, D)
    eps = model.unet(unet_input(model.unet, x_in), t, encoder_hidden_states=context, class_labels=pooled).sample  # (B, C, g, g)
    return [run.advance(e) for run, e in zip(runs, eps.split([run.rows for run in runs]))]


@torch.no_grad()
def diffusion_progressive(model: DiffusionModel, prompt: str, **kwargs):
    """Generate one picture, yielding a `DiffusionFrame` after every denoising step: a
    `DiffusionRun` (its arguments and their defaults are described there) stepped alone."""
    run = DiffusionRun(model, prompt, **kwargs)
    while not run.done:
        yield denoise_together(model, [run])[0]


def sample(model: DiffusionModel, prompt: str, **kwargs):
    """The final frame of `diffusion_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in diffusion_progressive(model, prompt, **kwargs):
        pass
    return frame
