"""Cross-request batching of the embedded diffusion model: `DiffusionRun` (one request's
state) and `denoise_together` (one UNet call a step for every active request, each at its own
step). A request stepped in a batch must end with the picture it gets alone; one leaving
mid-run must not change the others.

The batched UNet call does not give bit-identical latents (CPU kernels block a batch of 60
rows differently from one of 2; the final latents differ by about 1e-5), but the final picture
is decoded through the VQ autoencoder, which snaps every cell to its nearest codebook vector
first: the decoded uint8 pictures are exactly equal, on the tiny random models and on the
shipped weights, so the tests assert exact equality of the pictures."""

import numpy as np
import pytest
import torch

from playground.diffusion.sample import DiffusionRun, denoise_together, diffusion_progressive
from playground.diffusion.sample import sample as diffusion_sample
from playground.frames import DiffusionFrame
from playground.world.shapes import Scene, SceneObject, render

PICTURE = render(Scene("yellow", (SceneObject("red", "circle", "large", "left"),)))  # (64, 64, 3)
TWO_OBJECTS = "a large red circle on the left and a small blue star on the right"


def square_mask(top=20, left=24, size=16) -> np.ndarray:
    mask = np.zeros((64, 64), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# Distinct prompts, seeds, steps, schedulers and guidance; one masked edit, one regional prompt,
# one without guidance (a single UNet row).
REQUESTS = [
    ("a purple star", dict(seed=1, num_inference_steps=5, scheduler="ddim")),
    ("a small green triangle at the top", dict(seed=2, num_inference_steps=7, scheduler="euler", guidance_scale=5.0)),
    ("a large blue circle on the left on a yellow background",
     dict(seed=3, num_inference_steps=8, scheduler="ddpm", image=PICTURE, strength=0.6, mask=square_mask())),
    (TWO_OBJECTS, dict(seed=4, num_inference_steps=6, scheduler="dpm", regional=0.7)),
    ("a yellow circle at the bottom", dict(seed=5, num_inference_steps=4, scheduler="ddim", guidance_scale=1.0)),
]


def unet_batch_sizes(unet):
    """The batch size of every UNet call (remove the hook after)."""
    sizes = []

    def hook(module, args, kwargs):
        sizes.append((args[0] if args else kwargs["sample"]).shape[0])

    return sizes, unet.register_forward_pre_hook(hook, with_kwargs=True)


def step_in_batch(model, requests, join_at=2, first=2, stop=None):
    """Start `first` requests, step them, add the rest after `join_at` steps; stop the request
    `stop` = (index, after step) if given. Returns every request's frames (in request order)
    and the number of UNet rows each call took."""
    runs, frames, active = {}, {i: [] for i in range(len(requests))}, []

    def join(indices):
        for i in indices:
            prompt, kwargs = requests[i]
            runs[i] = DiffusionRun(model, prompt, **kwargs)
            active.append(i)

    join(range(first))
    sizes, handle = unet_batch_sizes(model.unet)
    try:
        call = 0
        while active or len(runs) < len(requests):
            if call == join_at:
                join(range(first, len(requests)))
            expected_rows = sum(runs[i].rows for i in active)
            for i, frame in zip(list(active), denoise_together(model, [runs[i] for i in active])):
                frames[i].append(frame)
                if frame.done or (stop and stop == (i, len(frames[i]))):
                    active.remove(i)
            assert sizes[-1] == expected_rows  # one UNet call over every active run's rows
            call += 1
    finally:
        handle.remove()
    return [frames[i] for i in range(len(requests))], sizes


def assert_same_picture(a: np.ndarray, b: np.ndarray) -> None:
    """The same picture up to float rounding: a batched UNet call sums in another order than a
    solo one, which can move a pixel by one level (the shipped weights: 1 pixel of 4,096)."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), int((diff > 0).sum()))


def assert_same_frames(batched, solo):
    """The frames' bookkeeping is a solo run's; the final picture is the solo one."""
    assert len(batched) == len(solo)
    for b, s in zip(batched, solo):
        assert (b.step, b.total, b.timestep, b.network_evaluations, b.skipped, b.regional_prompts) == (
            s.step, s.total, s.timestep, s.network_evaluations, s.skipped, s.regional_prompts)
        assert (b.unknown_words, b.unconditional) == (s.unknown_words, s.unconditional)
        assert (b.region is None) == (s.region is None)
        assert torch.allclose(b.latents, s.latents, atol=1e-3) and torch.allclose(b.pred_x0, s.pred_x0, atol=1e-3)
    assert batched[-1].done
    assert_same_picture(batched[-1].image(), solo[-1].image())


def check_batched_against_solo(model):
    frames, sizes = step_in_batch(model, REQUESTS)
    solo_rows = [DiffusionRun(model, p, **k).rows for p, k in REQUESTS]
    assert solo_rows == [2, 2, 2, 4, 1]  # the regional one: unconditional, whole prompt, each object's
    assert sizes[:2] == [4, 4] and sizes[2] == sum(solo_rows)  # two started, three joined mid-run
    for (prompt, kwargs), batched in zip(REQUESTS, frames):
        solo = list(diffusion_progressive(model, prompt, **kwargs))
        assert_same_frames(batched, solo)
        assert_same_picture(batched[-1].image(), diffusion_sample(model, prompt, **kwargs).image())
    return frames


# ----------------------------------------------------------------------------- tiny models


def test_batched_requests_match_solo(tiny_engine):
    frames = check_batched_against_solo(tiny_engine.diffusion)
    assert frames[2][-1].region is not None and frames[2][-1].skipped > 0  # the masked edit
    assert len(frames[3][-1].regional_prompts) == 2  # the regional prompt


def test_stopped_request_leaves_the_others_unchanged(tiny_engine):
    model = tiny_engine.diffusion
    full, _ = step_in_batch(model, REQUESTS)
    stopped, sizes = step_in_batch(model, REQUESTS, stop=(1, 3))  # request 1 leaves after 3 of its 7 steps
    assert len(stopped[1]) == 3 and not stopped[1][-1].done
    assert sizes[3] == sizes[2] - 2  # its two rows are gone from the next call
    for i in (0, 2, 3, 4):
        assert np.array_equal(stopped[i][-1].image(), full[i][-1].image())
        assert np.array_equal(stopped[i][-1].image(), diffusion_sample(model, REQUESTS[i][0], **REQUESTS[i][1]).image())


def test_solo_progressive_is_a_run_stepped_alone(tiny_engine):
    model = tiny_engine.diffusion
    prompt, kwargs = REQUESTS[2]
    run = DiffusionRun(model, prompt, **kwargs)
    alone = []
    while not run.done:
        alone.append(denoise_together(model, [run])[0])
    for a, b in zip(alone, diffusion_progressive(model, prompt, **kwargs), strict=True):
        assert torch.equal(a.latents, b.latents) and torch.equal(a.pred_x0, b.pred_x0)


def test_run_model_inputs_shapes_and_done(tiny_engine):
    model = tiny_engine.diffusion
    ae = model.autoencoder
    run = DiffusionRun(model, TWO_OBJECTS, seed=0, num_inference_steps=2, regional=1.0)
    assert run.rows == 3 and not run.done  # unconditional and each object's prompt (regional 1 leaves the whole one out)
    x_in, t, context, pooled = run.model_inputs()
    assert tuple(x_in.shape) == (3, ae.latent_channels, ae.grid, ae.grid)
    assert tuple(t.shape) == (3,) and (t == run.timesteps[0]).all()
    assert context.shape[0] == 3 and pooled is not None and pooled.shape[0] == 3
    frame = run.advance(model.unet(x_in, t, encoder_hidden_states=context, class_labels=pooled).sample)
    assert isinstance(frame, DiffusionFrame) and frame.step == 1 and frame.total == 2 and not frame.done
    assert frame.network_evaluations == 2 and frame.timestep == int(t[0])
    denoise_together(model, [run])
    assert run.done
    with pytest.raises(RuntimeError, match="every step"):
        run.model_inputs()
    assert denoise_together(model, []) == []


def test_unconditional_and_unguided_runs_take_one_row(tiny_engine):
    model = tiny_engine.diffusion
    assert DiffusionRun(model, "a purple star", guidance_scale=1.0).rows == 1
    assert DiffusionRun(model, "", guidance_scale=3.0).rows == 1
    assert DiffusionRun(model, "a purple star", guidance_scale=3.0).rows == 2


def test_runs_at_different_timesteps_share_a_call(tiny_engine):
    """Integer (DDIM) and float (Euler) timesteps, each run at its own step, in one call."""
    model = tiny_engine.diffusion
    ddim = DiffusionRun(model, "a purple star", seed=0, num_inference_steps=4, scheduler="ddim")
    denoise_together(model, [ddim])
    euler = DiffusionRun(model, "a purple star", seed=0, num_inference_steps=4, scheduler="euler")
    a, b = denoise_together(model, [ddim, euler])
    assert (a.step, b.step) == (2, 1) and a.timestep != b.timestep
    assert a.elapsed_ms > b.elapsed_ms > 0  # each run's own time since it started


def test_each_run_owns_its_generator(tiny_engine):
    """DDPM draws fresh noise at every step from the run's own generator: two identical requests
    stepped side by side end alike, and as the request alone does."""
    model = tiny_engine.diffusion
    kwargs = dict(seed=7, num_inference_steps=3, scheduler="ddpm")
    runs = [DiffusionRun(model, "a purple star", **kwargs) for _ in range(2)]
    while not runs[0].done:
        a, b = denoise_together(model, runs)
    assert torch.allclose(a.latents, b.latents, atol=1e-4)
    assert runs[0].generator is not runs[1].generator and runs[0].sched is not runs[1].sched
    assert np.array_equal(a.image(), diffusion_sample(model, "a purple star", **kwargs).image())


# ----------------------------------------------------------------------------- shipped weights


@pytest.mark.integration
def test_batched_requests_match_solo_real(real_engine):
    check_batched_against_solo(real_engine.diffusion)
