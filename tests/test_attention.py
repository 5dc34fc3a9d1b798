"""Attention maps: the pure overlay and word lookup, both models' maps on the tiny seeded models,
the command line's --attention-word, the /attention endpoint and the page's chip row."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from gradio_client import Client
from PIL import Image

from playground.attention_overlay import enlarge, heat_colours, mean_over, normalised, overlay, word_positions
from playground.autoregressive.attention import AttentionUnavailable, AutoregressiveAttention, PromptAttention
from playground.autoregressive.sample import autoregressive_progressive
from playground.diffusion.attention import DiffusionAttention, RecordingProcessor, install
from playground.diffusion.sample import diffusion_progressive
from playground.hub.attention import UNAVAILABLE, HubDiffusionAttention
from playground.ui.attention import chip_words

PROMPT = "a large red star on the left and a small blue circle on the right"


# ----------------------------------------------------------------------------- pure


def test_overlay_is_nearest_neighbour_and_leaves_nan_cells_alone():
    image = np.full((64, 64, 3), 100, dtype=np.uint8)
    attention = np.zeros((4, 4))
    attention[0, 0] = 1.0
    attention[3, 3] = np.nan
    out = overlay(image, attention, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[:16, :16] == out[0, 0]).all()  # one cell, one colour: 16x16 pixels alike
    assert (out[0, 0] == [178, 178, 178]).all()  # white heat at the top: (100 + 255) / 2
    assert (out[16:48, :48] == 50).all()  # no attention: black heat, half blended
    assert (out[48:, 48:] == 100).all()  # NaN: the picture as it was
    assert (image == 100).all()  # the input untouched


def test_overlay_fits_sizes_that_are_not_multiples():
    out = overlay(np.zeros((50, 70, 3), dtype=np.uint8), np.arange(9.0).reshape(3, 3))
    assert out.shape == (50, 70, 3)
    assert enlarge(np.arange(4).reshape(2, 2), 3, 5).tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [2, 2, 2, 3, 3]]


def test_normalised_and_heat_colours():
    m = normalised(np.array([[0.0, 0.5], [1.0, np.nan]]))
    assert m[1, 0] == 1.0 and m[0, 1] == 0.5 and np.isnan(m[1, 1])
    assert (normalised(np.zeros((2, 2))) == 0).all()  # a flat map: no division by zero
    assert heat_colours(np.array([0.0, 1.0])).tolist() == [[0, 0, 0], [255, 255, 255]]


def test_word_positions_and_mean():
    tokens = ["", "", "a", "red", "star", "and", "a", "star"]
    assert word_positions(tokens, "Star ") == [4, 7] and word_positions(tokens, "dog") == []
    maps = np.arange(8 * 4, dtype=float).reshape(8, 2, 2)
    assert np.allclose(mean_over(maps, [4, 7]), (maps[4] + maps[7]) / 2)


def test_chip_words_are_the_known_content_words():
    assert chip_words("A big red star, on the left and a dog") == ["big", "red", "star", "left"]
    assert chip_words("") == []
    assert chip_words("a red fox in the snow", model="stabilityai/sd-turbo") == ["red", "fox", "snow"]


# ----------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def diffusion_frames(tiny_engine):
    return list(diffusion_progressive(tiny_engine.diffusion, PROMPT, num_inference_steps=4))


@pytest.fixture(scope="module")
def ar_frames(tiny_engine):
    return list(autoregressive_progressive(tiny_engine.autoregressive, PROMPT, guidance_scale=1.5))


def test_diffusion_map_is_a_grid_that_changes_with_the_word(tiny_engine, diffusion_frames):
    reader = DiffusionAttention(tiny_engine.diffusion, PROMPT)
    star = reader.word_map(diffusion_frames[1], "star")
    circle = reader.word_map(diffusion_frames[1], "circle")
    assert star.shape == (16, 16) and (star >= 0).all() and np.isfinite(star).all()
    assert not np.allclose(star, circle)
    maps = reader.maps(diffusion_frames[1])  # every token's map: probabilities over the tokens
    assert np.allclose(maps.sum(0), 1.0, atol=1e-4)
    assert np.allclose(reader.word_map(diffusion_frames[1], "big"), reader.word_map(diffusion_frames[1], "large"))
    with pytest.raises(ValueError, match="not a word of this prompt"):
        reader.word_map(diffusion_frames[1], "dog")


@pytest.mark.parametrize("scheduler", ["euler", "dpm", "ddpm"])
def test_diffusion_map_for_every_scheduler(tiny_engine, scheduler):
    frames = list(diffusion_progressive(tiny_engine.diffusion, PROMPT, num_inference_steps=3, scheduler=scheduler))
    for frame in frames:
        m = DiffusionAttention(tiny_engine.diffusion, PROMPT, scheduler).word_map(frame, "red")
        assert m.shape == (16, 16) and np.isfinite(m).all()


def test_recording_leaves_the_sampler_unchanged(tiny_engine):
    kwargs = dict(seed=3, num_inference_steps=3)
    before = [f.latents.clone() for f in diffusion_progressive(tiny_engine.diffusion, PROMPT, **kwargs)]
    install(tiny_engine.diffusion.unet)
    assert all(isinstance(p, RecordingProcessor) for p in tiny_engine.diffusion.unet.attn_processors.values())
    after = [f.latents for f in diffusion_progressive(tiny_engine.diffusion, PROMPT, **kwargs)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_ar_map_covers_the_written_cells_and_changes_with_the_word(tiny_engine, ar_frames):
    reader = AutoregressiveAttention(tiny_engine.autoregressive, PROMPT)
    frame = ar_frames[40]
    star, circle = reader.word_map(frame, "star"), reader.word_map(frame, "circle")
    assert star.shape == (16, 16)
    written = np.isfinite(star).reshape(-1)
    assert written[: frame.position + 1].all() and not written[frame.position + 1 :].any()
    assert (star[np.isfinite(star)] >= 0).all()
    assert not np.allclose(np.nan_to_num(star), np.nan_to_num(circle))
    # Fed incrementally or all at once, scrubbing back or forward: the same rows.
    later = reader.word_map(ar_frames[-1], "star")
    earlier = reader.word_map(ar_frames[10], "star")
    fresh = AutoregressiveAttention(tiny_engine.autoregressive, PROMPT).word_map(ar_frames[-1], "star")
    assert np.allclose(later, fresh, atol=1e-6) and np.isfinite(later).all()
    assert np.allclose(earlier.reshape(-1)[:11], fresh.reshape(-1)[:11], atol=1e-6)


def test_ar_rows_match_transformers_attention(tiny_engine, ar_frames):
    """The functional arithmetic's weights are GPT-2's own (transformers, eager attention)."""
    lm = tiny_engine.autoregressive.transformer
    reader = AutoregressiveAttention(tiny_engine.autoregressive, PROMPT)
    frame = ar_frames[20]
    reader.maps(frame)
    codes = frame.codes[: frame.position] + lm.config.image_token_offset
    ids = torch.cat([torch.tensor(reader.encoded.input_ids + [lm.config.boi_token_id]), codes])[None]  # (1, T)
    previous = lm.config._attn_implementation
    lm.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            att = lm(ids, output_attentions=True).attentions  # layers x (1, H, T, T)
    finally:
        lm.config._attn_implementation = previous
    expected = torch.stack(att).mean((0, 2))[0, :, : reader.prompt_len]  # (T, P)
    assert torch.allclose(reader.reader.attention_rows()[: ids.shape[1]], expected, atol=1e-5)


def test_a_model_other_than_gpt2_says_so():
    lm = type("LM", (), {"config": type("C", (), {"model_type": "llama"})()})()
    with pytest.raises(AttentionUnavailable, match="not available"):
        PromptAttention(lm, torch.zeros((1, 3), dtype=torch.long), 2)


def test_hub_models_maps_or_one_line(hub_engine):
    """A Stable Diffusion pipeline's maps are read through its attention processors too; Janus
    gives none, and says so in its status line."""
    from playground.runtime.run import LiveRun
    from playground.settings import GenerationSettings
    from playground.ui.attention import AttentionMaps

    settings = GenerationSettings(num_inference_steps=2).validated()
    run = LiveRun(hub_engine, "a red star", settings)
    run.start(min_seconds=0).done.wait()
    decorate = AttentionMaps().decorator(hub_engine, run, "star")
    diffusion, ar = run.diffusion.frames[-1], run.autoregressive.frames[-1]
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    view = decorate(run.diffusion, diffusion, {"diffusion_image": picture, "diffusion_status": "s"})
    assert "attention to “star”" in view["diffusion_status"] and view["diffusion_image"].any()
    view = decorate(run.autoregressive, ar, {"ar_image": picture, "ar_status": "s"})
    assert UNAVAILABLE in view["ar_status"] and not view["ar_image"].any()
    reader = HubDiffusionAttention(hub_engine.hub["diffusion"][hub_engine.models("diffusion")[0]], "a red star")
    star, red = reader.word_map(diffusion, "star"), reader.word_map(diffusion, "red")
    assert star.ndim == 2 and star.shape[0] == star.shape[1] and (star >= 0).all() and not np.allclose(star, red)
    with pytest.raises(ValueError, match="not a word of this prompt"):
        reader.word_map(diffusion, "dog")


# ----------------------------------------------------------------------------- front ends


def test_cli_writes_the_overlays(tiny_assets, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "playground", "generate", "a small blue star at the top", "--attention-word", "star",
           "--assets", str(tiny_assets), "--steps", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("diffusion", "autoregressive"):
        assert Image.open(out / f"{name}_attention.png").size == (256, 256)
    assert json.loads((out / "report.json").read_text())["attention"]["word"] == "star"
    cmd[6] = "dog"
    missing = subprocess.run(cmd[:-1] + [str(tmp_path / "other")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 0 and "Traceback" not in missing.stderr
    assert "“dog” is not a word of this prompt" in missing.stderr


def test_attention_endpoint(playground_app):
    _, url = playground_app
    client = Client(url, verbose=False, analytics_enabled=False)
    result = client.predict(prompt=PROMPT, seed=1, num_inference_steps=3, api_name="/generate")
    run_key = next(v for v in result if isinstance(v, str) and v.startswith("{"))
    plain = np.asarray(Image.open(result[1]))
    d, a, d_status, a_status = client.predict(run_key=run_key, word="star", fraction=1.0, api_name="/attention")
    assert np.asarray(Image.open(d)).shape == np.asarray(Image.open(a)).shape == plain.shape
    assert not np.array_equal(np.asarray(Image.open(a)), plain)  # the map is over the picture
    assert "attention to “star”" in d_status and "attention to “star”" in a_status
    *_, d_status, a_status = client.predict(run_key=run_key, word="dog", fraction=0.5, api_name="/attention")
    assert "not a word of this prompt" in d_status and "not a word of this prompt" in a_status


def test_streaming_maps_keep_to_their_budget(tiny_engine, diffusion_frames, ar_frames):
    """Past its time budget a streaming diffusion frame shows the newest map computed before, an
    autoregressive one the cells known already; the last frames always get their own."""
    from types import SimpleNamespace

    from playground.settings import GenerationSettings
    from playground.ui.attention import RunAttention

    run = SimpleNamespace(id="r", prompt=PROMPT, settings=GenerationSettings(), tracks=[])
    maps = RunAttention(tiny_engine, run)
    maps.last_cost_s["diffusion"] = 1.0
    assert maps.word_map("diffusion", diffusion_frames[0], "star", allowed_s=0.5) == (None, 0)  # none yet
    first, step = maps.word_map("diffusion", diffusion_frames[0], "star", allowed_s=None)
    again, step = maps.word_map("diffusion", diffusion_frames[1], "star", allowed_s=0.0)
    assert step == 1 and np.array_equal(first, again)
    last, step = maps.word_map("diffusion", diffusion_frames[-1], "star", allowed_s=0.0)
    assert step == len(diffusion_frames)
    maps.word_map("autoregressive", ar_frames[9], "star", allowed_s=None)
    partial, _ = maps.word_map("autoregressive", ar_frames[50], "star", allowed_s=0.0)
    assert np.isfinite(partial).sum() == 10
    full, _ = maps.word_map("autoregressive", ar_frames[-1], "star", allowed_s=0.0)
    assert np.isfinite(full).all()
