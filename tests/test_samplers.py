"""Both samplers on tiny seeded random models: frames, guidance, sampling options, seeds,
lazy decoding. Nothing here needs trained weights."""

from itertools import islice

import numpy as np
import pytest
import torch
from PIL import Image

from playground.autoencoder.model import native_bfloat16
from playground.autoregressive.kv_cache import CachedDecoding, GPT2Decoding, Recomputing, start_decoding
from playground.autoregressive.model import grow_depth, training_sequences
from playground.autoregressive.sample import NUM_CANDIDATES, filter_logits
from playground.autoregressive.sample import sample as autoregressive_sample
from playground.diffusion.model import (
    SCHEDULERS,
    coordinate_planes,
    make_scheduler,
    unet_input,
    with_coordinate_channels,
)
from playground.diffusion.sample import predicted_x0
from playground.diffusion.sample import sample as diffusion_sample
from playground.frames import UNWRITTEN, AutoregressiveFrame, DiffusionFrame
from playground.outputs import comparison_strip, save_gif
from playground.world.regions import conditional_streams, regional_prompts

PROMPT = "a large red circle on the left on a yellow background"


def take(gen, n):
    return list(islice(gen, n))


@pytest.fixture(scope="module")
def diff_run(tiny_engine):
    return list(tiny_engine.diffusion_progressive(PROMPT, seed=0, num_inference_steps=6))


@pytest.fixture(scope="module")
def ar_run(tiny_engine):
    return list(tiny_engine.autoregressive_progressive(PROMPT, seed=0))


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls(obj, name): wrap a method of one object, counting its calls."""

    def wrap(obj, name):
        calls = []
        original = getattr(obj, name)

        def counted(*args, **kwargs):
            calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, counted)
        return calls

    return wrap


def batch_sizes(module):
    """Record the batch size of every forward call of a torch module (remove the hook after).
    (The autoregressive model's passes are counted at its token embedding, which every way of
    decoding calls once a pass; decoding.py.)"""
    sizes = []

    def hook(mod, args, kwargs):
        x = args[0] if args else (kwargs.get("input_ids") if "input_ids" in kwargs else kwargs.get("sample"))
        sizes.append(x.shape[0])

    return sizes, module.register_forward_pre_hook(hook, with_kwargs=True)


# ----------------------------------------------------------------------------- diffusion


def test_diffusion_frames(diff_run, tiny_engine):
    ae = tiny_engine.diffusion.autoencoder
    latent_shape = (1, ae.latent_channels, ae.grid, ae.grid)
    assert len(diff_run) == 6
    assert all(isinstance(f, DiffusionFrame) and f.kind == "diffusion" for f in diff_run)
    assert [f.step for f in diff_run] == list(range(1, 7))
    assert all(f.total == 6 for f in diff_run)
    assert [f.done for f in diff_run] == [False] * 5 + [True]
    assert all(b.elapsed_ms >= a.elapsed_ms > 0 for a, b in zip(diff_run, diff_run[1:]))
    # One text-encoder pass, then one (batched) UNet pass per step.
    assert [f.network_evaluations for f in diff_run] == [s + 1 for s in range(1, 7)]
    timesteps = [f.timestep for f in diff_run]
    assert all(a > b for a, b in zip(timesteps, timesteps[1:]))
    for f in diff_run:
        assert tuple(f.latents.shape) == latent_shape and tuple(f.pred_x0.shape) == latent_shape
        assert torch.isfinite(f.latents).all() and torch.isfinite(f.pred_x0).all()
        assert f.unknown_words == [] and not f.unconditional
    for f in (diff_run[0], diff_run[-1]):
        for img in (f.noisy_image(), f.x0_image(), f.image()):
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert not torch.equal(diff_run[0].latents, diff_run[0].pred_x0)
    assert np.array_equal(diff_run[-1].image(), diff_run[-1].noisy_image())


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_samples(tiny_engine, name):
    frames = list(tiny_engine.diffusion_progressive(PROMPT, seed=1, num_inference_steps=3, scheduler=name))
    assert len(frames) == 3 and frames[-1].done and frames[-1].total == 3
    assert [f.step for f in frames] == [1, 2, 3]
    for f in frames:
        assert torch.isfinite(f.latents).all() and torch.isfinite(f.pred_x0).all()
    img = frames[-1].image()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8


def test_unknown_scheduler_refused(tiny_engine):
    with pytest.raises(ValueError, match="unknown scheduler"):
        list(tiny_engine.diffusion_progressive(PROMPT, scheduler="nope"))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_predicted_x0_fallback_formula(tiny_engine, prediction_type):
    config = {**tiny_engine.diffusion.scheduler_config, "prediction_type": prediction_type}
    sched = make_scheduler("dpm", config)
    sched.set_timesteps(5)
    t = sched.timesteps[2]
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    a = sched.alphas_cumprod[int(t)]
    x = a.sqrt() * x0 + (1 - a).sqrt() * eps  # the noisy latent made of x0 and eps
    output = a.sqrt() * eps - (1 - a).sqrt() * x0 if prediction_type == "v_prediction" else eps

    class NoX0:
        pred_original_sample = None

    # A perfect prediction gives back the clean latent it was made from.
    assert torch.allclose(predicted_x0(sched, x, output, t, NoX0()), x0, atol=1e-4)

    class WithX0:
        pred_original_sample = torch.ones(1)

    assert predicted_x0(sched, x, eps, t, WithX0()) is WithX0.pred_original_sample


@pytest.mark.parametrize(
    "prompt,guidance,batch",
    [(PROMPT, 1.0, 1), (PROMPT, 3.0, 2), ("", 3.0, 1), ("zorb", 5.0, 1)],
)
def test_diffusion_guidance_batches(tiny_engine, prompt, guidance, batch):
    sizes, handle = batch_sizes(tiny_engine.diffusion.unet)
    try:
        frames = list(tiny_engine.diffusion_progressive(prompt, num_inference_steps=4, guidance_scale=guidance))
    finally:
        handle.remove()
    assert sizes == [batch] * 4  # one UNet call a step; guidance batches both predictions
    assert frames[-1].network_evaluations == 4 + 1
    assert frames[-1].unconditional == (prompt in ("", "zorb"))


def test_diffusion_guidance_changes_the_result(tiny_engine):
    a = diffusion_sample(tiny_engine.diffusion, PROMPT, num_inference_steps=3, guidance_scale=1.0)
    b = diffusion_sample(tiny_engine.diffusion, PROMPT, num_inference_steps=3, guidance_scale=7.0)
    assert not torch.allclose(a.latents, b.latents)


def test_diffusion_seeds(tiny_engine, diff_run):
    again = list(tiny_engine.diffusion_progressive(PROMPT, seed=0, num_inference_steps=6))
    other = list(tiny_engine.diffusion_progressive(PROMPT, seed=1, num_inference_steps=6))
    assert torch.equal(again[-1].latents, diff_run[-1].latents)
    assert np.array_equal(again[-1].image(), diff_run[-1].image())
    assert not torch.allclose(other[-1].latents, diff_run[-1].latents)
    assert not np.array_equal(other[-1].x0_image(), diff_run[-1].x0_image()) or not np.array_equal(
        other[-1].noisy_image(), diff_run[-1].noisy_image()
    )


def test_diffusion_frames_report_unknown_words(tiny_engine):
    (f,) = take(tiny_engine.diffusion_progressive("a red zorb circle", num_inference_steps=2), 1)
    assert f.unknown_words == ["zorb"] and not f.unconditional


# ----------------------------------------------------------------------------- autoregressive


def test_autoregressive_frames(ar_run, tiny_engine):
    cfg = tiny_engine.autoregressive.transformer.config
    n, k = cfg.image_grid**2, cfg.codebook_size
    assert len(ar_run) == n == 256
    assert all(isinstance(f, AutoregressiveFrame) and f.kind == "autoregressive" for f in ar_run)
    assert [f.step for f in ar_run] == list(range(1, n + 1))
    assert [f.position for f in ar_run] == list(range(n))
    assert all(f.total == n for f in ar_run) and ar_run[-1].done and not ar_run[-2].done
    assert all(b.elapsed_ms >= a.elapsed_ms > 0 for a, b in zip(ar_run, ar_run[1:]))
    # The prefix pass, then one pass per token fed back.
    assert [f.network_evaluations for f in ar_run] == list(range(1, n + 1))
    final = ar_run[-1].codes
    assert ((final >= 0) & (final < k)).all()
    for f in ar_run[::7] + [ar_run[-1]]:
        p = f.position
        assert f.codes.shape == (n,)
        assert (f.codes[p + 1 :] == UNWRITTEN).all()
        assert torch.equal(f.codes[: p + 1], final[: p + 1])  # each frame holds its own copy
        assert int(f.codes[p]) == f.token
        assert f.row_col == divmod(p, cfg.image_grid)
        assert len(f.candidates) == NUM_CANDIDATES
        probs = [pr for _, pr in f.candidates]
        assert probs == sorted(probs, reverse=True) and all(0 <= pr <= 1 for pr in probs)
        assert sum(probs) <= 1 + 1e-5
        assert all(0 <= c < k for c, _ in f.candidates)
        assert len({c for c, _ in f.candidates}) == NUM_CANDIDATES
    img = ar_run[-1].image()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    mid = ar_run[100]
    assert mid.image().shape == (64, 64, 3) and mid.preview(4).shape == (256, 256, 3)


@pytest.mark.parametrize("prompt,guidance,batch", [(PROMPT, 1.0, 1), (PROMPT, 3.0, 2), ("", 3.0, 1)])
def test_autoregressive_guidance_batches(tiny_engine, prompt, guidance, batch):
    sizes, handle = batch_sizes(tiny_engine.autoregressive.transformer.get_input_embeddings())  # once a pass
    try:
        frames = take(tiny_engine.autoregressive_progressive(prompt, guidance_scale=guidance), 6)
    finally:
        handle.remove()
    assert sizes[:6] == [batch] * 6
    assert frames[-1].network_evaluations == 6


def test_temperature_zero_is_deterministic_greedy(tiny_engine):
    a = take(tiny_engine.autoregressive_progressive(PROMPT, seed=0, temperature=0), 48)
    b = take(tiny_engine.autoregressive_progressive(PROMPT, seed=99, temperature=0), 48)
    assert [f.token for f in a] == [f.token for f in b]
    assert all(f.token == f.candidates[0][0] for f in a)
    # top-k 1 at any temperature keeps only the most likely code: the same choices.
    c = take(tiny_engine.autoregressive_progressive(PROMPT, seed=5, temperature=1.5, top_k=1), 48)
    assert [f.token for f in c] == [f.token for f in a]


def test_sampling_is_not_greedy(ar_run):
    assert any(f.token != f.candidates[0][0] for f in ar_run)


def test_top_k_and_top_p_limit_the_choice(tiny_engine):
    for f in take(tiny_engine.autoregressive_progressive(PROMPT, seed=2, top_k=3), 40):
        assert all(p == 0 for _, p in f.candidates[3:])
        assert f.token in [c for c, _ in f.candidates[:3]]
    for f in take(tiny_engine.autoregressive_progressive(PROMPT, seed=2, top_p=0.01), 40):
        assert f.token == f.candidates[0][0] and f.candidates[0][1] == pytest.approx(1.0)


def test_kv_cache_gives_the_same_tokens(tiny_engine):
    cached = take(tiny_engine.autoregressive_progressive(PROMPT, seed=3, use_cache=True), 64)
    full = take(tiny_engine.autoregressive_progressive(PROMPT, seed=3, use_cache=False), 64)
    assert [f.token for f in cached] == [f.token for f in full]
    for a, b in zip(cached[::9], full[::9]):
        assert [c for c, _ in a.candidates] == [c for c, _ in b.candidates]
        assert np.allclose([p for _, p in a.candidates], [p for _, p in b.candidates], atol=1e-4)


def feed_in_steps(decoding, lm, prefix, chunks):
    """The logits a decoding class gives after the prefix and after each chunk of tokens."""
    decoder, logits = decoding(lm, prefix), []
    for chunk in [None, *chunks]:
        returned = decoder.feed(chunk) if chunk is not None else decoder.logits
        assert returned is decoder.logits  # what feed returns is what the sampler reads after
        logits.append(returned)
    return logits


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()


def with_activation(lm, activation: str):
    """The same GPT-2 with another GELU: older saved models (and GPT-2 checkpoints) have gelu_new, newer ones gelu_pytorch_tanh."""
    config = lm.config.__class__.from_dict({**lm.config.to_dict(), "activation_function": activation})
    other = lm.__class__(config).eval()
    other.load_state_dict(lm.state_dict())
    return other


@pytest.mark.parametrize("model", ["gpt2", "gpt2-gelu_new", "llama"])
def test_every_way_of_decoding_gives_transformers_logits(tiny_engine, model):
    lm = {"gpt2": lambda: tiny_engine.autoregressive.transformer, "llama": tiny_llama,
          "gpt2-gelu_new": lambda: with_activation(tiny_engine.autoregressive.transformer, "gelu_new")}[model]()
    if model.startswith("gpt2"):  # build_transformer's new models and the shipped one's activation
        assert lm.config.activation_function == ("gelu_new" if model == "gpt2-gelu_new" else "gelu_pytorch_tanh")
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 30, (2, 9), generator=g)  # (B, P)
    chunks = [torch.randint(0, 30, (2, n), generator=g) for n in (1, 1, 4, 1, 3)]  # one token, or several (editing)
    with torch.no_grad():
        whole = lm(input_ids=torch.cat([prefix, *chunks], 1)).logits  # (B, T, V) in one pass
        ends = np.cumsum([prefix.shape[1]] + [c.shape[1] for c in chunks]) - 1
        expected = [whole[:, e] for e in ends]
        ways = [CachedDecoding, Recomputing] + [GPT2Decoding] * (model != "llama")
        for decoding in ways:
            for got, want in zip(feed_in_steps(decoding, lm, prefix, chunks), expected, strict=True):
                assert torch.allclose(got, want, atol=1e-5), decoding.__name__
    assert GPT2Decoding.supports(lm) == (model != "llama")
    assert isinstance(start_decoding(lm, prefix), CachedDecoding if model == "llama" else GPT2Decoding)
    assert isinstance(start_decoding(lm, prefix, use_cache=False), Recomputing)


def test_autoregressive_seeds(tiny_engine, ar_run):
    again = list(tiny_engine.autoregressive_progressive(PROMPT, seed=0))
    other = list(tiny_engine.autoregressive_progressive(PROMPT, seed=1))
    assert torch.equal(again[-1].codes, ar_run[-1].codes)
    assert np.array_equal(again[-1].image(), ar_run[-1].image())
    assert not torch.equal(other[-1].codes, ar_run[-1].codes)


def test_autoregressive_frames_report_unknown_words(tiny_engine):
    (f,) = take(tiny_engine.autoregressive_progressive("a red zorb circle"), 1)
    assert f.unknown_words == ["zorb"] and not f.unconditional
    (f,) = take(tiny_engine.autoregressive_progressive(""), 1)
    assert f.unconditional


# ----------------------------------------------------------------------------- filter_logits


def test_filter_logits_top_k():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0], [0.5, -1.0, 7.0, 0.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.isinf(out).tolist() == [[True, False, True, False], [False, True, False, True]]
    assert torch.equal(out[~torch.isinf(out)], logits[~torch.isinf(out)])
    for k in (0, 4, 10):  # off
        assert torch.equal(filter_logits(logits, top_k=k), logits)


def test_filter_logits_top_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (2), 0.05 (0)
    logits = probs.log()[None]
    kept = lambda p: (~torch.isinf(filter_logits(logits, top_p=p)[0])).nonzero().view(-1).tolist()  # noqa: E731
    assert kept(1.0) == [0, 1, 2, 3]
    assert kept(0.01) == [1]
    assert kept(0.5) == [1]
    assert kept(0.6) == [1, 3]  # the code that crosses top-p is kept
    assert kept(0.8) == [1, 3]
    assert kept(0.81) == [1, 2, 3]
    assert kept(0.99) == [0, 1, 2, 3]
    # Row by row, and combined with top-k (top-k first).
    two = torch.stack([probs.log(), probs.flip(0).log()])
    out = filter_logits(two, top_k=3, top_p=0.6)
    assert (~torch.isinf(out)).tolist() == [[False, True, False, True], [True, False, True, False]]
    # The kept logits are unchanged, so the kept probabilities keep their ratios.
    renorm = filter_logits(logits, top_p=0.6).softmax(-1)[0]
    assert renorm[1] / renorm[3] == pytest.approx(0.5 / 0.3)


# ----------------------------------------------------------------------------- training sequences


def test_training_sequences_mask_the_prompt(tiny_engine):
    lm = tiny_engine.autoregressive.transformer
    cfg = lm.config
    pe = tiny_engine.prompt_encoder
    prompt_ids = torch.tensor([pe("a red circle").input_ids, pe("").input_ids])  # (2, 24)
    codes = torch.randint(0, cfg.codebook_size, (2, cfg.image_grid**2), generator=torch.Generator().manual_seed(0))
    input_ids, labels = training_sequences(prompt_ids, codes, cfg)
    p = prompt_ids.shape[1]
    assert input_ids.shape == labels.shape == (2, p + 1 + 256)
    assert torch.equal(input_ids[:, :p], prompt_ids)
    assert (input_ids[:, p] == cfg.boi_token_id).all()
    assert torch.equal(input_ids[:, p + 1 :], codes + cfg.image_token_offset)
    assert (labels[:, : p + 1] == -100).all()
    assert torch.equal(labels[:, p + 1 :], input_ids[:, p + 1 :])
    assert input_ids.max() < cfg.vocab_size
    loss = lm(input_ids=input_ids, labels=labels).loss
    assert torch.isfinite(loss) and loss > 0


# ----------------------------------------------------------------------------- lazy decoding


def test_grown_transformer_computes_the_same_and_then_learns(tiny_engine):
    lm = tiny_engine.autoregressive.transformer.eval()
    grown = grow_depth(lm, lm.config.n_layer * 2 + 1).eval()
    assert grown.config.n_layer == lm.config.n_layer * 2 + 1
    ids = torch.randint(0, lm.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(lm(input_ids=ids).logits, grown(input_ids=ids).logits, atol=1e-5)
    assert grow_depth(lm, lm.config.n_layer) is lm  # nothing to grow
    # The new blocks are not dead: their output projections get gradients.
    grown.train()
    grown(input_ids=ids, labels=ids).loss.backward()
    new = [b for b in grown.transformer.h if not b.attn.c_proj.weight.detach().any()]
    assert len(new) == lm.config.n_layer + 1
    assert all(b.attn.c_proj.weight.grad.abs().sum() > 0 and b.mlp.c_proj.weight.grad.abs().sum() > 0 for b in new)


def test_diffusion_frames_decode_only_when_asked(tiny_engine, count_calls):
    ae = tiny_engine.diffusion.autoencoder
    decodes, previews = count_calls(ae, "decode_latents"), count_calls(ae, "preview_latents")
    frames = list(tiny_engine.diffusion_progressive(PROMPT, num_inference_steps=5))
    assert decodes == previews == []  # nobody asked for a picture
    frames[2].x0_image(), frames[2].x0_image(), frames[2].image()
    assert len(previews) == 1 and decodes == []  # a step before the last: the preview decode
    frames[2].noisy_image()
    assert len(previews) == 2
    frames[-1].image(), frames[-1].image()
    assert len(decodes) == 1  # the finished picture: the model's own decode


def test_autoregressive_frames_decode_only_when_asked(tiny_engine, count_calls):
    ae = tiny_engine.autoregressive.autoencoder
    decodes, previews = count_calls(ae, "decode_codes"), count_calls(ae, "preview_codes")
    frames = take(tiny_engine.autoregressive_progressive(PROMPT), 30)
    assert decodes == previews == []
    frames[10].preview(4), frames[10].preview(4), frames[10].image(), frames[10].raw_image()
    assert len(previews) == 1 and decodes == []
    assert (previews[0][0] >= 0).all()  # unwritten cells are given a real code to decode


def test_gif_and_strip_decode_only_the_frames_they_show(tiny_engine, ar_run, diff_run, count_calls, tmp_path):
    fresh = list(tiny_engine.autoregressive_progressive(PROMPT, seed=4))
    ae = tiny_engine.autoregressive.autoencoder
    decodes, previews = count_calls(ae, "decode_codes"), count_calls(ae, "preview_codes")
    path = save_gif(fresh, tmp_path / "ar.gif", max_frames=12)
    assert len(previews) == 11 and len(decodes) == 1  # the last frame is the finished picture
    with Image.open(path) as gif:
        assert gif.is_animated and gif.n_frames == 12 and gif.size == (256, 256)
    strip = comparison_strip(diff_run, ar_run, n=6, scale=2)
    assert strip.dtype == np.uint8 and strip.shape == (18 + 2 * (128 + 4), 110 + 6 * (128 + 4), 3)


def test_previews_decode_cheaply_and_final_pictures_exactly(tiny_engine):
    """Previews may decode in bfloat16 (SharedAutoencoder.preview_*); a finished run's picture
    is always the full-precision decode."""
    ae = tiny_engine.autoregressive.autoencoder
    last = autoregressive_sample(tiny_engine.autoregressive, PROMPT, seed=2)
    assert np.array_equal(last.image(), ae.decode_codes(last.codes[None])[0])
    cheap, exact = ae.preview_codes(last.codes[None])[0], ae.decode_codes(last.codes[None])[0]
    assert cheap.shape == exact.shape and np.abs(cheap.astype(int) - exact.astype(int)).mean() < 3
    final = diffusion_sample(tiny_engine.diffusion, PROMPT, num_inference_steps=3)
    assert np.array_equal(final.image(), ae.decode_latents(final.latents)[0])
    cheap, exact = ae.preview_latents(final.latents)[0], ae.decode_latents(final.latents)[0]
    assert np.abs(cheap.astype(int) - exact.astype(int)).mean() < 3
    # The previews' bfloat16 weights are a copy: the model final pictures decode through keeps its own.
    assert all(p.dtype == torch.float32 for p in ae.vq.parameters())
    expected = torch.bfloat16 if native_bfloat16("cpu") else torch.float32
    assert ae._preview_decoder().conv_out.weight.dtype == expected


@pytest.mark.parametrize("rows", [16, 5, 1])
def test_the_preview_decoder_computes_what_the_vqmodel_does(rows):
    """PreviewDecoder is the VQModel decoder's arithmetic in functional calls: in float32 the
    same pictures as `vq.decode` (within a level of rounding), for whole grids and top rows."""
    from playground.autoencoder.model import AutoencoderConfig, build_autoencoder, tensor_to_images
    from playground.autoencoder.preview import PreviewDecoder

    torch.manual_seed(0)
    vq = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16, 16), norm_num_groups=4)).eval()
    for p in vq.parameters():  # random weights far from the freshly built ones (zero biases, unit norms)
        p.data.add_(0.1 * torch.randn_like(p))
    assert PreviewDecoder.supports(vq)
    quantised = torch.randn(2, 4, rows, 16)  # (B, C, rows, g)
    with torch.no_grad():
        exact = tensor_to_images(vq.decode(quantised, force_not_quantize=True).sample)
    fast = tensor_to_images(PreviewDecoder(vq, torch.float32)(quantised))
    assert fast.shape == exact.shape == (2, 4 * rows, 64, 3)
    assert np.abs(fast.astype(int) - exact.astype(int)).max() <= 1
    assert np.abs(fast.astype(int) - exact.astype(int)).mean() < 0.05
    cheap = tensor_to_images(PreviewDecoder(vq, torch.bfloat16)(quantised))
    assert np.abs(cheap.astype(int) - exact.astype(int)).mean() < 3


def test_a_decoder_the_preview_decoder_does_not_reproduce_previews_through_the_model():
    """A VQModel with attention in its middle block is not PreviewDecoder's: its previews are
    the model's own decode, exactly."""
    from playground.autoencoder.model import AutoencoderConfig, SharedAutoencoder, build_autoencoder
    from playground.autoencoder.preview import PreviewDecoder

    torch.manual_seed(0)
    vq = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, mid_block_add_attention=True))
    assert not PreviewDecoder.supports(vq)
    ae = SharedAutoencoder(vq)
    codes = torch.randint(0, ae.codebook_size, (1, 3 * ae.grid))
    assert np.array_equal(ae.preview_codes(codes), ae.decode_codes(codes))
    latents = torch.randn(1, ae.latent_channels, ae.grid, ae.grid)
    assert np.array_equal(ae.preview_latents(latents), ae.decode_latents(latents))


def test_the_autoregressive_sampler_orders_the_prompt_as_its_model_was_trained(tiny_engine, monkeypatch):
    """A model saved with prompt_order "place_first" (the current recipe) reads each object's
    place before it; one saved without the field reads the prompt as written."""
    import dataclasses

    from playground.autoregressive.model import PROMPT_ORDER
    from playground.autoregressive.sample import autoregressive_progressive
    from playground.world.text import prompt_order

    model = tiny_engine.autoregressive
    assert prompt_order(model.transformer.config) == PROMPT_ORDER == "place_first"
    orders = []

    def recording(prompt, order="as_written"):
        orders.append(order)
        return model.prompt_encoder(prompt, order=order)

    spy = dataclasses.replace(model, prompt_encoder=recording)
    take(autoregressive_progressive(spy, PROMPT, seed=0), 1)
    monkeypatch.delattr(model.transformer.config, "prompt_order")  # as a model from before the field
    assert prompt_order(model.transformer.config) == "as_written"
    take(autoregressive_progressive(spy, PROMPT, seed=0), 1)
    assert orders[0] == "place_first" and orders[-1] == "as_written"


def test_the_diffusion_sampler_orders_the_prompt_as_its_text_encoder_was_trained(tiny_engine, monkeypatch):
    import dataclasses

    from playground.diffusion.sample import diffusion_progressive

    model = tiny_engine.diffusion
    orders = []

    def recording(prompt, order="as_written"):
        orders.append(order)
        return model.prompt_encoder(prompt, order=order)

    spy = dataclasses.replace(model, prompt_encoder=recording)
    take(diffusion_progressive(spy, PROMPT, seed=0, num_inference_steps=2), 1)
    monkeypatch.setattr(model.text_encoder.config, "prompt_order", "place_first", raising=False)
    take(diffusion_progressive(spy, PROMPT, seed=0, num_inference_steps=2), 1)
    assert orders[0] == "as_written" and "place_first" in orders[1:]


def test_coordinate_planes():
    planes = coordinate_planes(3, 4)  # (B, 2, g, g): x, then y
    assert planes.shape == (3, 2, 4, 4)
    x, y = planes[0]
    assert x[0, 0] == -1 and x[0, -1] == 1 and y[0, 0] == -1 and y[-1, 0] == 1  # left/top is -1
    assert torch.equal(x, x[:1].expand(4, 4)) and torch.equal(y, y[:, :1].expand(4, 4))  # x varies across, y down
    assert torch.equal(planes[2], planes[0])


def test_a_unet_widened_for_coordinates_samples_as_before_until_trained(tiny_engine):
    """with_coordinate_channels gives a UNet that reads the latent and the coordinate planes
    (unet_input adds them), whose new weights start at zero: the sampler draws the same picture
    with it; once those weights move, where a cell is changes the prediction."""
    import dataclasses

    model = tiny_engine.diffusion
    wide = with_coordinate_channels(model.unet)
    assert wide.config.in_channels == model.unet.config.in_channels + 2
    assert with_coordinate_channels(wide) is wide
    latents = torch.randn(2, 4, 16, 16)
    assert unet_input(model.unet, latents) is latents
    assert torch.equal(unet_input(wide, latents)[:, 4:], coordinate_planes(2, 16))
    widened = dataclasses.replace(model, unet=wide)
    before = diffusion_sample(model, PROMPT, seed=0, num_inference_steps=3).image()
    same = diffusion_sample(widened, PROMPT, seed=0, num_inference_steps=3).image()
    np.testing.assert_array_equal(before, same)
    with torch.no_grad():
        wide.conv_in.weight[:, 4:] = 0.5
    changed = diffusion_sample(widened, PROMPT, seed=0, num_inference_steps=3).image()
    assert not np.array_equal(before, changed)
    with pytest.raises(ValueError, match="reads 6 channels"):
        unet_input(wide, torch.randn(1, 3, 16, 16))


# ----------------------------------------------------------------------------- regional prompts

TWO = "a large red circle on the left and a small blue star on the right on a yellow background"


def test_regional_prompts_split_two_placed_objects_into_halves():
    regions = regional_prompts(TWO, grid=16)
    assert [text for text, _ in regions] == [
        "a large red circle on the left on a yellow background",
        "a small blue star on the right on a yellow background",
    ]
    left, right = (mask for _, mask in regions)
    assert left.shape == (16, 16) and left[:, :8].all() and not left[:, 8:].any()
    assert (left ^ right).all()  # the halves cover the grid once
    bottom, top = (m for _, m in regional_prompts("a red star at the bottom and a blue heart at the top", grid=4))
    assert bottom[2:].all() and not bottom[:2].any() and (top ^ bottom).all()
    assert regional_prompts("a red star at the bottom and a blue heart at the top", grid=4)[0][0] == "a red star at the bottom"


def test_conditional_streams_share_every_cell():
    assert conditional_streams(TWO, 16, 0.0)[0] == [TWO]  # off: the prompt alone
    for regional, count in ((0.5, 3), (1.0, 2)):
        texts, weights = conditional_streams(TWO, 16, regional)
        assert len(texts) == weights.shape[0] == count and weights.shape[1:] == (16, 16)
        np.testing.assert_allclose(weights.sum(0), 1.0)  # every cell's prediction is a weighted mean
        assert texts[-2:] == [t for t, _ in regional_prompts(TWO, 16)]
    texts, weights = conditional_streams(TWO, 16, 0.25)
    assert texts[0] == TWO and weights[0, 0, 0] == 0.75 and weights[1, 0, 0] == 0.25 and weights[2, 0, 0] == 0
    assert conditional_streams(PROMPT, 16, 1.0)[0] == [PROMPT]  # one object: nothing to split


@pytest.mark.parametrize("prompt", [
    "",
    "a large red circle on the left on a yellow background",  # one object
    "a red circle and a blue star on a white background",  # no places
    "a red circle on the left and a blue star at the top",  # places that do not split the picture
    "a red circle on the left and a blue star on the left",
    "a red circle on the left and a blue star on the right and a green heart",  # three
])
def test_regional_prompts_only_for_two_objects_at_opposite_places(prompt):
    assert regional_prompts(prompt, grid=16) is None


def live_status(kind):
    from playground.ui import views

    return views.diffusion_status if kind == "diffusion" else views.ar_status


@pytest.mark.parametrize("kind", ["diffusion", "autoregressive"])
def test_regional_streams_are_batched_and_change_only_two_object_prompts(tiny_engine, kind):
    net = tiny_engine.diffusion.unet if kind == "diffusion" else tiny_engine.autoregressive.transformer.get_input_embeddings()
    run = tiny_engine.diffusion_progressive if kind == "diffusion" else tiny_engine.autoregressive_progressive
    kwargs = {"num_inference_steps": 3} if kind == "diffusion" else {}

    def last(prompt, n, **extra):
        sizes, handle = batch_sizes(net)
        try:
            frames = take(run(prompt, seed=0, **kwargs, **extra), n)
        finally:
            handle.remove()
        return sizes, frames[-1]

    sizes, plain = last(TWO, 3)
    assert sizes[:3] == [2] * 3  # guidance: the empty prompt and the prompt
    sizes, whole = last(TWO, 3, regional=1.0)
    assert sizes[:3] == [3] * 3  # the empty prompt and each object's
    sizes, mixed = last(TWO, 3, regional=0.5)
    assert sizes[:3] == [4] * 3  # the empty prompt, the prompt and each object's
    # what the step computed: the latent, or the chosen token's candidates and their probabilities
    state = (lambda f: f.latents) if kind == "diffusion" else (lambda f: torch.tensor(f.candidates))
    assert not torch.equal(state(plain), state(mixed)) and not torch.equal(state(plain), state(whole))
    sizes, one = last(PROMPT, 3, regional=1.0)  # one object: nothing to split, the same as without
    assert sizes[:3] == [2] * 3 and torch.equal(state(one), state(last(PROMPT, 3)[1]))
    assert mixed.regional_prompts == tuple(text for text, _ in regional_prompts(TWO, 16))  # said in the status
    assert plain.regional_prompts == one.regional_prompts == ()
    assert "regional prompts: *a large red circle on the left" in (live_status(kind))(mixed, 10.0)
    assert "regional" not in (live_status(kind))(plain, 10.0)
