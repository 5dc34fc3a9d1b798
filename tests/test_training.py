"""Smoke tests of the training utilities, without training a real model."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from playground.autoencoder.model import background_cells, object_cells, psnr
from playground.diffusion.model import DiffusionConfig, build_unet
from playground.training import autoencoder as autoencoder_training
from playground.training import loop, train
from playground.training.encode import load_encoded
from playground.training.plots import plot_loss_curve
from playground.world.data import build_dataset, scene_from_json, scene_to_json, training_captions
from playground.world.shapes import caption, parse_prompt, sample_scene


@pytest.fixture
def tmp_runs(tmp_path, monkeypatch):
    """loop.RUNS and loop.ASSETS, where every stage reads and writes, pointed at a temporary folder (never the real ones)."""
    monkeypatch.setattr(loop, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(loop, "ASSETS", tmp_path / "assets")
    return tmp_path


def test_lr_warmup_then_cosine():
    peak, total, warmup, floor = 1e-3, 1000, 100, 0.05
    lrs = [loop.lr_at(s, total, peak, warmup, floor) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(peak / warmup)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))  # linear warm-up
    assert lrs[warmup - 1] == pytest.approx(peak) and lrs[warmup] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))  # then only down
    middle = warmup + (total - warmup) // 2
    assert lrs[middle] == pytest.approx(peak * (floor + (1 - floor) * 0.5))
    assert lrs[total] == pytest.approx(floor * peak)
    assert min(lrs[warmup:]) >= floor * peak * (1 - 1e-9)
    assert loop.lr_at(5 * total, total, peak, warmup, floor) == pytest.approx(floor * peak)


def tiny_model(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def one_step(model, opt):
    x = torch.randn(16, 4)
    loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def test_checkpointer_save_resume_round_trip(tmp_runs):
    model, opt = tiny_model(0)
    ckpt = loop.Checkpointer("stage", {"net": model}, opt)
    assert ckpt.path.is_relative_to(tmp_runs)
    ckpt.resume()  # nothing saved yet: a fresh start
    assert ckpt.step == 0 and ckpt.losses == []
    for _ in range(3):
        ckpt.losses.append(one_step(model, opt))
    ckpt.step = 3
    ckpt.save()
    assert ckpt.path.is_file() and not ckpt.path.with_suffix(".tmp").exists()

    model2, opt2 = tiny_model(1)  # different weights
    assert not torch.equal(model2[0].weight, model[0].weight)
    restored = loop.Checkpointer("stage", {"net": model2}, opt2)
    restored.resume()
    assert restored.step == 3 and restored.losses == ckpt.losses
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"])
    # Both continue identically.
    torch.manual_seed(5)
    l1 = one_step(model, opt)
    torch.manual_seed(5)
    l2 = one_step(model2, opt2)
    assert l1 == l2

    # A run with a module the checkpoint lacks (new options on an old run) stops with a message.
    model3, opt3 = tiny_model(2)
    with pytest.raises(SystemExit, match="has no probes"):
        loop.Checkpointer("stage", {"net": model3, "probes": torch.nn.Linear(2, 2)}, opt3).resume()


def recording_step(model, opt, seen: list):
    """A step_fn for run_loop that trains `model` and records (step, learning rate) in `seen`."""
    def step_fn(step):
        seen.append((step, opt.param_groups[0]["lr"]))
        return one_step(model, opt)

    return step_fn


def test_run_loop_checkpoints_resumes_and_plots(tmp_runs):
    model, opt = tiny_model(0)
    seen = []
    step_fn = recording_step(model, opt, seen)
    ckpt = loop.Checkpointer("toy", {"net": model}, opt)
    loop.run_loop("toy", ckpt, total=6, peak_lr=0.01, step_fn=step_fn, every=4)
    assert [s for s, _ in seen] == list(range(6))
    assert [lr for _, lr in seen] == pytest.approx([loop.lr_at(s, 6, 0.01) for s in range(6)])
    assert ckpt.step == 6 and len(ckpt.losses) == 6
    assert (tmp_runs / "runs" / "toy" / "checkpoint.pt").is_file()
    assert (tmp_runs / "assets" / "toy-loss.png").is_file()

    # A restart with a longer run picks up where the saved checkpoint stopped.
    seen.clear()
    model2, opt2 = tiny_model(3)
    ckpt2 = loop.Checkpointer("toy", {"net": model2}, opt2)
    loop.run_loop("toy", ckpt2, total=9, peak_lr=0.01, step_fn=lambda s: seen.append(s) or 0.5, every=100)
    assert seen == [6, 7, 8]
    assert ckpt2.losses[:6] == ckpt.losses and ckpt2.losses[6:] == [0.5] * 3


def test_run_loop_stop_at_ends_early_on_the_full_runs_schedule_and_a_restart_goes_on(tmp_runs):
    model, opt = tiny_model(0)
    seen = []
    step_fn = recording_step(model, opt, seen)
    ckpt = loop.Checkpointer("toy", {"net": model}, opt)
    loop.run_loop("toy", ckpt, total=10, peak_lr=0.01, step_fn=step_fn, every=100, stop_at=4)
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert [lr for _, lr in seen] == pytest.approx([loop.lr_at(s, 10, 0.01) for s in range(4)])
    saved = torch.load(tmp_runs / "runs" / "toy" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 4 and len(saved["losses"]) == 4  # saved at the stop, though not a multiple of `every`

    seen.clear()
    model2, opt2 = tiny_model(3)
    loop.run_loop("toy", loop.Checkpointer("toy", {"net": model2}, opt2), total=10, peak_lr=0.01,
                   step_fn=lambda s: seen.append(s) or 0.5, every=100)
    assert seen == list(range(4, 10))


def test_ema_weights_average_every_step_and_resume_as_if_never_stopped(tmp_runs):
    """With ema_decay the shipped weights are w_avg <- d * w_avg + (1 - d) * w after each step
    (the first step's weights to begin with); a run stopped and resumed ends with the same
    average as one that ran through."""
    decay, weights = 0.9, []

    def train(stop_at=None, folder="once"):
        torch.manual_seed(0)
        model, opt = tiny_model(0)
        ckpt = loop.Checkpointer("toy", {"net": model}, opt, folder=tmp_runs / folder, ema_decay=decay)

        def step_fn(step):
            torch.manual_seed(100 + step)  # the same batch at each step, however the run is cut
            loss = one_step(model, opt)
            weights.append(model[0].weight.detach().clone())
            return loss

        loop.run_loop("toy", ckpt, total=8, peak_lr=0.01, step_fn=step_fn, every=100, stop_at=stop_at)
        return ckpt

    through = train()
    expected = weights[0]
    for w in weights[1:]:
        expected = decay * expected + (1 - decay) * w
    assert torch.allclose(through.final("net")[0].weight, expected, atol=1e-6)
    assert not torch.allclose(through.final("net")[0].weight, through.modules["net"][0].weight)

    train(stop_at=3, folder="cut")
    resumed = train(folder="cut")
    assert torch.allclose(resumed.final("net")[0].weight, through.final("net")[0].weight, atol=1e-6)
    plain = tiny_model(0)[0]
    assert loop.Checkpointer("toy", {"net": plain}, None).final("net") is plain  # no average: the model itself


def test_train_rejects_an_ema_decay_outside_0_1(capsys):
    from playground.training import train

    with pytest.raises(SystemExit):
        train.main(["--stage", "diffusion", "--ema-decay", "1"])
    assert "--ema-decay must be at least 0 and below 1, not 1.0" in capsys.readouterr().err


def test_plot_loss_curve_writes_a_png(tmp_path):
    losses = list(np.exp(-np.linspace(0, 3, 300)) + 0.01 * np.random.default_rng(0).random(300))
    path = plot_loss_curve(losses, tmp_path / "sub" / "loss.png", title="toy")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (640, 360)
        pixels = np.asarray(im.convert("RGB"))
    assert (pixels == (20, 60, 160)).all(-1).sum() > 100  # the moving average is drawn
    one = plot_loss_curve([0.3], tmp_path / "one.png")  # a single point does not crash
    assert one.is_file()


def test_dataset_cache_and_captions(tmp_path):
    images, scenes = build_dataset(6, seed=3, folder=tmp_path)
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    assert (tmp_path / "shapes-6-seed3.npz").is_file()
    again, scenes2 = build_dataset(6, seed=3, folder=tmp_path)  # from the cache
    assert np.array_equal(images, again) and scenes2 == scenes
    assert all(scene_from_json(scene_to_json(s)) == s for s in scenes)
    rng = np.random.default_rng(0)
    caps = training_captions(scenes * 100, rng)
    assert 0 < caps.count("") < len(caps) * 0.2
    for cap, scene in zip(caps, scenes * 100):
        if cap:
            assert [(o.color, o.shape) for o in parse_prompt(cap).objects] == [(o.color, o.shape) for o in scene.objects]
    full = [c for c in training_captions(scenes * 20, rng, drop=0.0) if c]  # nothing optional left out
    assert full and all(c in {caption(s) for s in scenes} for c in full)
    assert all(" background" in c for c in full)


def test_word_drop_leaves_out_colour_and_shape_words_and_nothing_else():
    scenes = [sample_scene(np.random.default_rng(i), held_out="exclude") for i in range(40)] * 50
    plain = training_captions(scenes, np.random.default_rng(7))
    dropped = training_captions(scenes, np.random.default_rng(7), word_drop=0.3, word_rng=np.random.default_rng(8))
    counts = {"color": [0, 0], "shape": [0, 0]}  # (kept, left out)
    for before, after, scene in zip(plain, dropped, scenes):
        if not before:  # the empty captions stay empty: the batch's other draws are unchanged
            assert after == ""
            continue
        for part_before, part_after, obj in zip(before.split(" and "), after.split(" and "), scene.objects):
            b, a = part_before.split(), part_after.split()
            j = b.index(obj.color, 1)  # the object's colour: after "a" (and its size), before its shape
            kept = a[j : len(a) - (len(b) - j - 2)]  # what is left where "colour shape" stood
            assert a[:j] == b[:j] and a[len(kept) + j :] == b[j + 2 :]  # every other word as it was
            assert kept in ([obj.color, obj.shape], [obj.color], [obj.shape], [])
            counts["color"][obj.color not in kept] += 1
            counts["shape"][obj.shape not in kept] += 1
    for kept, left_out in counts.values():
        assert abs(left_out / (kept + left_out) - 0.3) < 0.03
    with pytest.raises(ValueError, match="word_rng"):
        training_captions(scenes, np.random.default_rng(7), word_drop=0.3)


def test_train_rejects_out_of_range_word_drop_and_codebook_size(capsys):
    from playground.training import train

    with pytest.raises(SystemExit):
        train.main(["--stage", "autoregressive", "--word-drop", "1.5"])
    assert "--word-drop must lie between 0 and 1, not 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--stage", "autoencoder", "--ae-codes", "0"])
    assert "--ae-codes must be at least 2, not 0" in capsys.readouterr().err


def test_batch_sampler_uniform_or_with_a_share_of_two_object_scenes():
    scenes = [sample_scene(np.random.default_rng(i)) for i in range(200)]
    two = np.array([len(s.objects) == 2 for s in scenes])
    uniform = loop.batch_sampler(scenes)(np.random.default_rng(0), 4000)
    assert uniform.min() >= 0 and uniform.max() < len(scenes)
    assert abs(two[uniform].mean() - two.mean()) < 0.05  # as the data fall
    for share in (0.0, 0.8, 1.0):
        idx = loop.batch_sampler(scenes, share)(np.random.default_rng(1), 4000)
        assert abs(two[idx].mean() - share) < 0.03
        pool_size = {0.0: (~two).sum(), 1.0: two.sum()}.get(share, len(scenes))
        assert len(np.unique(idx)) > 0.5 * pool_size  # drawn across the pool, not a few scenes
    with pytest.raises(ValueError, match="two-object-share must lie between 0 and 1"):
        loop.batch_sampler(scenes, 1.5)
    only_one = [s for s in scenes if len(s.objects) == 1]
    assert len(loop.batch_sampler(only_one, 0.0)(np.random.default_rng(2), 8)) == 8
    with pytest.raises(ValueError, match="lacks one-object or two-object scenes"):
        loop.batch_sampler(only_one, 0.5)


def test_batch_sampler_with_a_share_of_star_scenes():
    scenes = [sample_scene(np.random.default_rng(i)) for i in range(300)]
    star = np.array([any(o.shape == "star" for o in s.objects) for s in scenes])
    two = np.array([len(s.objects) == 2 for s in scenes])
    base = star[loop.batch_sampler(scenes, 0.8)(np.random.default_rng(2), 4000)].mean()  # stars as drawn
    for share in (0.5, 1.0):
        idx = loop.batch_sampler(scenes, 0.8, share)(np.random.default_rng(1), 4000)
        assert abs(star[idx].mean() - (share + (1 - share) * base)) < 0.04  # replaced, else as drawn
        if share < 1:
            assert two[idx].mean() > two.mean() + 0.1  # the two-object share still applies
    with pytest.raises(ValueError, match="--star-share must lie between 0 and 1"):
        loop.batch_sampler(scenes, None, -0.1)
    with pytest.raises(ValueError, match="no scene with a star"):
        loop.batch_sampler([s for s, has in zip(scenes, star) if not has], None, 0.5)


def test_train_rejects_a_share_outside_0_1(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--stage", "diffusion", "--two-object-share", "2"])
    assert exit_info.value.code == 2 and "--two-object-share must lie between 0 and 1" in capsys.readouterr().err


def test_object_cells_mark_the_latent_cells_an_object_touches():
    from playground.world.shapes import Scene, SceneObject, render

    image = render(Scene("blue", (SceneObject("red", "square", "small", "left", (0, 0)),)))
    cells = object_cells(image[None], 16)  # (1, 1, 16, 16)
    assert cells.shape == (1, 1, 16, 16)
    on = torch.nonzero(cells[0, 0])
    # a 16 x 16 px square centred at (16, 32): pixels 8..23 x 24..39, cells 2..5 x 6..9 (one more at an anti-aliased edge)
    assert 16 <= len(on) <= 36
    assert on[:, 1].min() >= 1 and on[:, 1].max() <= 6 and on[:, 0].min() >= 5 and on[:, 0].max() <= 10
    assert not object_cells(render(Scene("blue", ()))[None], 16).any()
    # Background cells: neither an object's cells nor their neighbours.
    background = background_cells(image[None], 16)[0, 0].bool()  # (16, 16)
    near = torch.nn.functional.max_pool2d(cells[0], 3, stride=1, padding=1)[0].bool()
    assert torch.equal(background, ~near)
    assert len(torch.nonzero(~background)) > len(on) and background[0, 0] and background[15, 15]


def test_background_consistency_counts_background_cells_only():
    torch.manual_seed(0)
    h = torch.randn(2, 4, 16, 16)
    background = torch.ones(2, 1, 16, 16)
    background[:, :, 4:8, 4:8] = 0  # an object there
    assert autoencoder_training.background_consistency(h, h, background) == 0
    moved_object = h.clone()
    moved_object[:, :, 4:8, 4:8] += 5.0  # differs only where the object is: no penalty
    assert autoencoder_training.background_consistency(moved_object, h, background) == 0
    moved_background = h.clone()
    moved_background[:, :, 0, 0] += 5.0
    loss = autoencoder_training.background_consistency(moved_background, h, background)
    # 2 pictures x 4 channels x 25 over (2 x 240 background cells x 4 channels), over the latents' variance
    assert loss == pytest.approx(25 * 8 / (2 * 240 * 4) / moved_background.var().item(), rel=1e-4)


def test_autoencoder_report_on_a_tiny_autoencoder():
    from playground.autoencoder.model import AutoencoderConfig, SharedAutoencoder, build_autoencoder
    from playground.autoencoder.report import autoencoder_report

    torch.manual_seed(0)
    ae = SharedAutoencoder(build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16, 16), mid_block_add_attention=False)))
    report = autoencoder_report(ae, n=6)
    assert report["reconstructions_matching"] == 0.0  # an untrained decoder draws no shapes
    assert 0.0 <= report["background_code_agreement"] <= 1.0 and 1 <= report["codes_used"] <= 512
    assert report["psnr_db"] < 20
    by_shape = report["one_object_by_shape"]
    assert all(k.split()[0] in ("small", "large") and v["matching"] == 0.0 for k, v in by_shape.items())
    rng = np.random.default_rng(1000)  # the report's scenes
    one_object = sum(len(sample_scene(rng, held_out="include").objects) == 1 for _ in range(6))
    assert one_object > 0 and sum(v["n"] for v in by_shape.values()) == one_object


def test_encoded_sets_are_cached_per_encoder_and_a_larger_set_serves_a_smaller_one(tmp_runs, monkeypatch):
    """load_encoded encodes once; the first N scenes of a larger cached set (same seed, same
    encoder) are read, not encoded again; a cache made by another encoder is never used."""
    import argparse

    from playground.autoencoder.model import AutoencoderConfig, SharedAutoencoder, build_autoencoder

    monkeypatch.chdir(tmp_runs)  # build_dataset's data/ folder
    torch.manual_seed(0)
    vq = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16, 16), mid_block_add_attention=False))
    vq.save_pretrained(tmp_runs / "assets" / "vqvae")
    large = load_encoded(argparse.Namespace(dataset_size=12, seed=0))
    assert large[0].shape == (12, 4, 16, 16) and large[1].shape == (12, 256) and len(large[2]) == 12
    assert (tmp_runs / "runs" / "encoded-12-seed0.safetensors").is_file()

    encode = SharedAutoencoder.encode
    monkeypatch.setattr(SharedAutoencoder, "encode", lambda *a: pytest.fail("encoded again"))
    small = load_encoded(argparse.Namespace(dataset_size=5, seed=0))
    assert torch.equal(small[0], large[0][:5]) and torch.equal(small[1], large[1][:5]) and small[2] == large[2][:5]
    assert not (tmp_runs / "runs" / "encoded-5-seed0.safetensors").exists()
    same = load_encoded(argparse.Namespace(dataset_size=12, seed=0))  # the whole cached set, read as it is
    assert torch.equal(same[0], large[0]) and torch.equal(same[1], large[1])

    monkeypatch.setattr(SharedAutoencoder, "encode", encode)
    with torch.no_grad():
        vq.encoder.conv_in.weight.mul_(2.0)  # a retrained encoder
    vq.save_pretrained(tmp_runs / "assets" / "vqvae")
    fresh = load_encoded(argparse.Namespace(dataset_size=5, seed=0))
    assert (tmp_runs / "runs" / "encoded-5-seed0.safetensors").is_file()
    assert not torch.equal(fresh[0], small[0])
    other_seed = load_encoded(argparse.Namespace(dataset_size=5, seed=1))
    assert other_seed[2] != small[2] and (tmp_runs / "runs" / "encoded-5-seed1.safetensors").is_file()


def test_psnr():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    assert psnr(a, a) == pytest.approx(10 * math.log10(255**2 / 1e-10))
    b = a + 10
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))


def test_every_stage_runs_end_to_end_and_the_engine_loads_the_result(tmp_path, monkeypatch):
    """`python -m playground.training.train --stage all` from scratch, each stage two steps on a tiny dataset: every
    shipped folder is written and loads as the playground's engine."""
    from playground.engine import load_engine

    monkeypatch.chdir(tmp_path)  # data/, runs/ and assets/ are relative to the working folder
    tiny = ["--device", "cpu", "--threads", "1", "--dataset-size", "48", "--test-size", "16", "--ae-steps", "2", "--ae-batch", "4",
            "--decoder-steps", "2", "--decoder-batch", "4", "--diffusion-steps", "2", "--diffusion-batch", "4",
            "--ar-steps", "2", "--ar-batch", "2", "--ae-channels", "8", "16", "16", "--ae-codes", "64", "--ae-attention", "0", "--ae-background-weight", "1", "--diffusion-object-weight", "3", "--ar-object-weight", "3", "--caption-drop", "0.1"]
    # (as the autoregressive model was first trained; the generators ship their weights' moving average,
    # and the token models read captions with colour and shape words left out)
    train.main(tiny + ["--stage", "all", "--ar-prompt-order", "as_written", "--ema-decay", "0.5", "--word-drop", "0.5"])
    for folder in ("vqvae", "unet", "text_encoder", "scheduler", "transformer", "tokenizer"):
        assert any((tmp_path / "assets" / folder).iterdir()), folder
    assert not list((tmp_path / "assets").rglob("*.bin")), "weights are saved as safetensors only"
    for stage in ("autoencoder", "decoder", "diffusion", "autoregressive"):
        saved = torch.load(tmp_path / "runs" / stage / "checkpoint.pt", weights_only=True)
        assert saved["step"] == 2 and ("averages" in saved) == (stage in ("diffusion", "autoregressive"))
    train.main(tiny + ["--stage", "masked", "--masked-steps", "2", "--masked-batch", "2", "--word-drop", "0.5"])  # the any-order model, on the same codes
    assert torch.load(tmp_path / "runs" / "masked" / "checkpoint.pt", weights_only=True)["step"] == 2
    engine = load_engine(tmp_path / "assets")
    # a 64-code autoencoder: the token models' image vocabulary follows it
    codebook = engine.autoregressive.autoencoder.vq.config.num_vq_embeddings
    assert codebook == 64 == engine.autoregressive.transformer.config.codebook_size == engine.masked.transformer.config.codebook_size
    frames = list(engine.autoregressive_progressive("a red circle", order="confidence", num_inference_steps=2))
    assert engine.masked.transformer.config.model_type == "bert" and frames[-1].done and frames[-1].image().shape == (64, 64, 3)
    frame = None
    for frame in engine.diffusion_progressive("a red circle", seed=0, num_inference_steps=2):
        pass
    assert frame.done and frame.image().shape == (64, 64, 3)

    assert engine.diffusion.text_encoder.config.model_type == "clip_text_model"
    assert engine.autoregressive.transformer.config.prompt_order == "as_written"

    # Fine-tuning from a saved model folder: the run starts from those weights, not from a fresh
    # network; with --text-encoder siglip the causal CLIP text encoder becomes the bidirectional
    # one; the autoregressive model learns place-first prompts (how the shipped one was made),
    # with more two-object scenes in its batches.
    before = engine.diffusion.unet.state_dict()
    shutil.rmtree(tmp_path / "runs" / "diffusion")
    shutil.copytree(tmp_path / "assets", tmp_path / "init")
    shutil.rmtree(tmp_path / "runs" / "autoregressive")
    train.main(tiny + ["--stage", "diffusion", "--diffusion-init", str(tmp_path / "init"), "--diffusion-steps", "1", "--text-encoder", "siglip",
                       "--diffusion-prompt-order", "place_first", "--diffusion-coordinates", "1", "--diffusion-grounding", "0.1", "--diffusion-reading", "0.1",
                       "--diffusion-optimizer", "muon", "--diffusion-attributes", "0.5"])
    probes = torch.load(tmp_path / "runs" / "diffusion" / "checkpoint.pt", weights_only=True)["modules"]["probes"]
    assert probes["shape.weight"].shape == (6, build_unet(DiffusionConfig(), 4, 16).conv_norm_out.num_channels)
    # (with the losses that read where each object is: grounding on its attention, shape and colour probes)
    train.main(tiny + ["--stage", "autoregressive", "--ar-init", str(tmp_path / "init" / "transformer"), "--ar-steps", "1",
                       "--two-object-share", "0.75", "--ar-optimizer", "muon", "--ar-grounding", "0.1", "--ar-attributes", "0.5"])
    probes = torch.load(tmp_path / "runs" / "autoregressive" / "checkpoint.pt", weights_only=True)["modules"]["probes"]
    assert probes["shape.weight"].shape[0] == 6 and probes["colour.weight"].shape[0] == 9  # none + 5 shapes, none + 8 colours
    tuned = load_engine(tmp_path / "assets")
    assert tuned.diffusion.text_encoder.config.model_type == "siglip_text_model"
    assert tuned.diffusion.text_encoder.config.prompt_order == "place_first"
    assert tuned.autoregressive.transformer.config.prompt_order == "place_first"
    assert tuned.diffusion.unet.config.in_channels == 4 + 2  # widened to read the coordinate planes
    for frame in tuned.diffusion_progressive("a red circle", seed=0, num_inference_steps=2):
        pass
    assert frame.done and frame.image().shape == (64, 64, 3)
    after = tuned.diffusion.unet.state_dict()
    torch.manual_seed(123)  # a freshly initialised network, for scale
    fresh = build_unet(DiffusionConfig(), 4, 16).state_dict()
    k = "conv_in.weight"
    assert after[k][:, :4].shape == before[k].shape
    assert (after[k][:, :4] - before[k]).abs().max() < 0.01 < (fresh[k] - before[k]).abs().max()
    assert 0 < after[k][:, 4:].abs().max() < 0.01  # the coordinates' weights: from zero, one step of learning

    # The decoder fine-tune alone, on an autoencoder trained elsewhere (no runs/autoencoder/), as
    # the shipped decoder was refined further: only the decoder changes, and the report is written.
    from safetensors.torch import load_file

    vq_file = tmp_path / "assets" / "vqvae" / "diffusion_pytorch_model.safetensors"
    vq_before = load_file(vq_file)
    shutil.rmtree(tmp_path / "runs" / "autoencoder")
    shutil.rmtree(tmp_path / "runs" / "decoder")
    train.main(tiny + ["--stage", "decoder", "--decoder-steps", "1"])
    vq_after = load_file(vq_file)
    assert json.loads((tmp_path / "runs" / "autoencoder" / "report.json").read_text())["psnr_db_after_decoder_finetune"] > 0
    assert all(torch.equal(v, vq_after[k]) for k, v in vq_before.items() if not k.startswith(("decoder.", "post_quant_conv.")))
    assert any(not torch.equal(v, vq_after[k]) for k, v in vq_before.items() if k.startswith("decoder."))


def test_a_clip_text_encoder_carries_over_to_the_bidirectional_one(tmp_path):
    """Both text encoders load by their config's type, and a causal CLIP encoder's weights
    carry over to the bidirectional SigLIP one, in which a word also reads the words after it
    ("red" can learn that its object is "on the left")."""
    from transformers import CLIPTextConfig, CLIPTextModel, SiglipTextModel

    from playground.diffusion.model import bidirectional_from, encode_text, load_text_encoder

    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8, pad_token_id=0, bos_token_id=1, eos_token_id=1))
    clip.save_pretrained(tmp_path / "clip")
    clip = load_text_encoder(tmp_path / "clip")
    assert isinstance(clip, CLIPTextModel)
    siglip = bidirectional_from(clip)
    siglip.save_pretrained(tmp_path / "siglip")
    siglip = load_text_encoder(tmp_path / "siglip")
    assert isinstance(siglip, SiglipTextModel)
    shared = clip.state_dict()
    assert all(torch.equal(v, siglip.state_dict()[k]) for k, v in shared.items())

    class NoPooling:  # encode_text asks the UNet whether it wants a pooled prompt
        config = type("Config", (), {"class_embed_type": None})

    ids = torch.tensor([[0, 0, 3, 4, 5, 6]])  # left-padded
    changed = ids.clone()
    changed[0, -1] = 7  # only the last word differs
    for model, reads_ahead in ((clip, False), (siglip, True)):
        with torch.no_grad():
            a, b = encode_text(model, NoPooling, ids)[0], encode_text(model, NoPooling, changed)[0]  # (1, T, D)
        assert bool((a[0, 2] - b[0, 2]).abs().max() > 1e-4) == reads_ahead, type(model).__name__

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="bert"):
        load_text_encoder(tmp_path / "other")
