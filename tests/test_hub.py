"""Real Hugging Face models in the two panels, on tiny random checkpoints built with the
libraries' own classes (tests/conftest.py: tiny_hub_models), loaded through the path users take:
frames stream with the right shapes, x0 previews exist, seeds are deterministic, Stop stops,
Janus matches the library's own greedy generation token for token, and a model that cannot be
loaded gives one clear message while the embedded model takes its place. No network."""

import json
import threading

import pytest
import torch

from playground import cli
from playground.engine import load_engine
from playground.errors import ModelLoadError
from playground.frames import UNWRITTEN
from playground.hub.common import configured_models
from playground.hub.janus import janus_inputs
from playground.hub.janus import sample as janus_sample
from playground.hub.load import load_hub_model
from playground.hub.pipeline import sample as hub_diffusion_sample
from playground.runtime.run import LiveRun
from playground.settings import EMBEDDED, GenerationSettings, suggested_diffusion_settings
from playground.ui.handlers import Playground
from playground.ui.inputs import model_settings
from playground.ui.views import OUTPUTS


def test_real_models_become_each_panels_default(hub_engine, tiny_hub_models):
    assert hub_engine.problems == []
    assert hub_engine.models("diffusion") == [tiny_hub_models["diffusion"], EMBEDDED]
    assert hub_engine.models("autoregressive") == [tiny_hub_models["autoregressive"], EMBEDDED]


def test_diffusion_frames_stream_with_x0_previews(hub_engine):
    frames = list(hub_engine.diffusion_progressive("a red dog", seed=0, num_inference_steps=4, guidance_scale=3.0))
    assert [f.step for f in frames] == [1, 2, 3, 4] and frames[-1].done
    for f in frames:
        assert f.latents.shape == f.pred_x0.shape == (1, 4, 8, 8)  # (1, C, h, w) of the tiny UNet
        assert f.x0_image().shape == (8, 8, 3)  # the linear preview: one pixel per latent cell
        assert not torch.equal(f.latents, f.pred_x0)
    assert frames[-1].image().shape == (16, 16, 3)  # the full VAE
    assert [f.network_evaluations for f in frames] == [2, 3, 4, 5]
    from playground.outputs import preview_image
    assert preview_image(frames[0], 4).shape == preview_image(frames[-1], 4).shape == (256, 256, 3)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm"])
def test_diffusion_seeds_are_deterministic(hub_engine, scheduler):
    model = hub_engine.hub["diffusion"][hub_engine.models("diffusion")[0]]

    def final(seed):
        return hub_diffusion_sample(model, "a dog", seed=seed, num_inference_steps=3, scheduler=scheduler).latents

    assert torch.equal(final(1), final(1))
    assert not torch.equal(final(1), final(2))


def test_diffusion_stop_ends_the_pipeline(hub_engine):
    unet = hub_engine.hub["diffusion"][hub_engine.models("diffusion")[0]].pipeline.unet
    calls = []
    handle = unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        run = hub_engine.diffusion_progressive("a dog", num_inference_steps=50)
        next(run), next(run)
        run.close()  # what Stop (LiveRun) does
        done = len(calls)
        assert done == 2
        assert not any(t.name == "pipeline" for t in threading.enumerate())
    finally:
        handle.remove()
    assert len(calls) == done


def test_janus_frames_stream_the_partial_grid(hub_engine):
    frames = list(hub_engine.autoregressive_progressive("a red dog", seed=0, temperature=1.0, top_k=8))
    assert len(frames) == 16 and frames[-1].done and frames[0].grid == 4
    assert (frames[0].codes == UNWRITTEN).sum() == 15 and (frames[-1].codes != UNWRITTEN).all()
    assert frames[5].preview(4).shape == (256, 256, 3)
    assert len(frames[5].candidates) == 5
    assert frames[-1].image().shape == (8, 8, 3)  # decoded through Janus's own VQ model
    janus = hub_engine.hub["autoregressive"][hub_engine.models("autoregressive")[0]]
    again = janus_sample(janus, "a red dog", seed=0, temperature=1.0, top_k=8)
    assert torch.equal(frames[-1].codes, again.codes)


@pytest.mark.parametrize("prompt,guidance", [("a red dog on the left", 5.0), ("the blue star", 2.0)])
def test_janus_greedy_matches_the_library_token_for_token(hub_engine, prompt, guidance):
    janus = hub_engine.hub["autoregressive"][hub_engine.models("autoregressive")[0]]
    *_, ours = hub_engine.autoregressive_progressive(prompt, temperature=0, guidance_scale=guidance)
    ids = janus_inputs(janus, prompt)
    theirs = janus.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                                  do_sample=False, guidance_scale=guidance)
    assert ours.codes.tolist() == theirs[0].tolist()
    assert len(set(ours.codes.tolist())) > 3  # a real test: the tokens vary


def test_stop_through_the_live_run(hub_engine, tiny_hub_models):
    run = LiveRun(hub_engine, "a dog", GenerationSettings(num_inference_steps=100).validated())
    run.start(min_seconds=0)
    while len(run.diffusion.frames) < 3:
        run.changed.acquire(); run.changed.wait(0.05); run.changed.release()
    run.request_stop()
    assert run.done.wait(10)
    assert len(run.diffusion.frames) < 100 and not run.complete


@pytest.mark.parametrize("model,reason", [
    ("no-such-org/no-such-model", "not in the local cache, and downloads are off (HF_HUB_OFFLINE=1)"),
    ("./no/such/folder", "no such folder, and not a valid Hugging Face Hub model id"),
])
def test_unknown_model_gives_one_clear_message(model, reason):
    with pytest.raises(ModelLoadError) as err:
        load_hub_model("diffusion", model)
    assert str(err.value) == f"{model}: {reason}"


def test_wrong_kind_of_model_is_named(tiny_hub_models):
    with pytest.raises(ModelLoadError, match="has no model_index.json, so it is not a diffusers pipeline"):
        load_hub_model("diffusion", tiny_hub_models["autoregressive"])
    with pytest.raises(ModelLoadError, match="has no config.json, so it is not a transformers model"):
        load_hub_model("autoregressive", tiny_hub_models["diffusion"])


def test_fallback_to_the_embedded_models(tiny_assets, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_DIFFUSION_MODEL", "no-such-org/no-such-model")
    engine = load_engine(tiny_assets)
    assert engine.models("diffusion") == [EMBEDDED]
    assert engine.problems == ["diffusion model no-such-org/no-such-model: not in the local cache, and downloads are "
                               "off (HF_HUB_OFFLINE=1); using the embedded diffusion model instead"]
    *_, last = engine.diffusion_progressive("a red circle", num_inference_steps=2)
    assert last.image().shape == (64, 64, 3)


def test_configured_models_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_AUTOREGRESSIVE_MODEL", "a/b, embedded,c/d")
    assert configured_models("autoregressive") == ["a/b", "c/d"]
    assert configured_models("autoregressive", ["x/y", "x/y,z"]) == ["x/y", "z"]


def test_cli_runs_real_models(tiny_assets, tiny_hub_models, tmp_path, capsys):
    code = cli.main(["generate", "a red dog", "--assets", str(tiny_assets), "--steps", "3", "--out", str(tmp_path),
                     "--diffusion-model", tiny_hub_models["diffusion"],
                     "--autoregressive-model", tiny_hub_models["autoregressive"]])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["diffusion"]["model"] == tiny_hub_models["diffusion"] and report["diffusion"]["steps"] == 3
    assert report["autoregressive"]["model"] == tiny_hub_models["autoregressive"] and report["autoregressive"]["steps"] == 16
    assert report["unknown_words"] == []
    for name in ("diffusion.png", "autoregressive.png", "diffusion.gif", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_cli_falls_back_with_a_warning(tiny_assets, tmp_path, capsys):
    code = cli.main(["generate", "a red circle", "--assets", str(tiny_assets), "--steps", "2", "--out", str(tmp_path),
                     "--autoregressive-model", "no-such-org/janus"])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: autoregressive model no-such-org/janus: not in the local cache" in err
    assert json.loads((tmp_path / "report.json").read_text())["autoregressive"]["model"] == EMBEDDED


def test_playground_streams_the_chosen_models(hub_engine, tiny_hub_models, monkeypatch):
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 0)
    pg = Playground(lambda: hub_engine)
    updates = list(pg.generate("a red dog", seed=0, num_inference_steps=3, diffusion_model=EMBEDDED,
                               autoregressive_model=tiny_hub_models["autoregressive"]))
    final = dict(zip(OUTPUTS, updates[-1]))
    assert final["diffusion_status"].startswith("✓ done · step 3/3")
    assert final["ar_status"].startswith("✓ done · token 16/16")
    with pytest.raises(Exception, match="diffusion model must be one of"):
        list(pg.generate("a dog", diffusion_model="not/loaded"))


def test_app_shows_model_menus_only_with_a_choice():
    import app

    demo = app.build_demo(engine_loader=lambda: None, cache_examples=False,
                          models={"diffusion": ["x/sd", EMBEDDED], "autoregressive": [EMBEDDED]},
                          problems=["autoregressive model y: not found; using the embedded model instead"])
    menus = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None) in ("diffusion-model", "autoregressive-model")}
    assert menus["diffusion-model"].visible and not menus["autoregressive-model"].visible
    assert any("not found" in str(getattr(b, "value", "")) for b in demo.blocks.values())
    notes = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "real-models-note"]
    assert len(notes) == 1 and "its own autoencoder" in notes[0].value
    embedded_only = app.build_demo(engine_loader=lambda: None, cache_examples=False,
                                   models={"diffusion": [EMBEDDED], "autoregressive": [EMBEDDED]})
    assert not any(getattr(b, "elem_id", None) == "real-models-note" for b in embedded_only.blocks.values())


def test_turbo_models_get_their_steps_and_guidance():
    import app

    assert suggested_diffusion_settings("stabilityai/SDXL-Turbo") == {"num_inference_steps": 2, "guidance_scale": 0.0}
    assert suggested_diffusion_settings("runwayml/stable-diffusion-v1-5") == {"num_inference_steps": 25, "guidance_scale": 7.5}
    d = GenerationSettings()
    for embedded in ("", EMBEDDED):
        assert suggested_diffusion_settings(embedded) == {"num_inference_steps": d.num_inference_steps,
                                                          "guidance_scale": d.guidance_scale}
    assert model_settings("stabilityai/sd-turbo") == (2, 0.0)
    assert model_settings(EMBEDDED) == (d.num_inference_steps, d.guidance_scale)
    # the Settings fields start at what suits the default (first) diffusion model
    for choices, expected in ((["x/sd-turbo", EMBEDDED], (2, 0.0)), ([EMBEDDED, "x/sd-turbo"], (d.num_inference_steps, d.guidance_scale))):
        demo = app.build_demo(engine_loader=lambda: None, cache_examples=False,
                              models={"diffusion": choices, "autoregressive": [EMBEDDED]})
        fields = {b.elem_id: b.value for b in demo.blocks.values()
                  if getattr(b, "elem_id", None) in ("num_inference_steps", "guidance_scale")}
        assert (fields["num_inference_steps"], fields["guidance_scale"]) == expected


def test_cli_uses_the_loaded_models_steps_unless_given(tiny_assets, tiny_hub_models, tmp_path, capsys):
    turbo = tmp_path / "tiny-sd-turbo"  # a turbo model, by its name
    turbo.symlink_to(tiny_hub_models["diffusion"], target_is_directory=True)
    for extra, steps, guidance in (([], 2, 0.0), (["--steps", "3", "--guidance-scale", "1.5"], 3, 1.5)):
        out = tmp_path / f"out{steps}"
        code = cli.main(["generate", "a red dog", "--assets", str(tiny_assets), "--out", str(out),
                         "--diffusion-model", str(turbo), *extra])
        assert code == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert report["diffusion"]["steps"] == steps and report["settings"]["guidance_scale"] == guidance
    # a turbo model that cannot load: the embedded model stands in, with its own settings
    code = cli.main(["generate", "a red circle", "--assets", str(tiny_assets), "--out", str(tmp_path / "fallback"),
                     "--diffusion-model", "no-such-org/sd-turbo"])
    assert code == 0
    report = json.loads((tmp_path / "fallback" / "report.json").read_text())
    assert report["diffusion"]["model"] == EMBEDDED and report["diffusion"]["steps"] == GenerationSettings().num_inference_steps


def test_a_configured_tiny_autoencoder_makes_the_previews(tiny_hub_models, tmp_path):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1), latent_channels=4).save_pretrained(tmp_path / "taesd")
    model = load_hub_model("diffusion", tiny_hub_models["diffusion"], preview_vae=str(tmp_path / "taesd"))
    *_, before_last, last = model.progressive("a dog", num_inference_steps=3)
    assert before_last.x0_image().shape == (16, 16, 3)  # the tiny autoencoder's 2x, not one pixel per cell
    assert last.image().shape == (16, 16, 3)
