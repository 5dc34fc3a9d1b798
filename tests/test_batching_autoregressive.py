"""Cross-request batching of the embedded autoregressive model: the many-sequence KV cache
against the one-batch one, and many requests written together (joining at different times,
one leaving) against each written alone: the same codes, token for token."""

import numpy as np
import pytest
import torch

from playground.autoregressive.kv_cache import BatchedGPT2Decoding, GPT2Decoding
from playground.autoregressive.sample import AutoregressiveRun, autoregressive_progressive, write_together
from playground.editing import autoregressive_keep, mask_to_grid
from playground.world.shapes import Scene, SceneObject, render

PROMPT = "a large red circle on the left on a yellow background"
TWO_OBJECTS = "a large red circle on the left and a small blue star on the right on a yellow background"
PICTURE = render(Scene("yellow", (SceneObject("red", "circle", "large", "left"),)))  # (64, 64, 3)


def square_keep(grid: int = 16) -> np.ndarray:
    """Every cell kept but (4..7, 4..7): kept cells before the first written one and between rows."""
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:32, 16:32] = True
    return autoregressive_keep(grid, 0, mask_to_grid(mask, grid))


# Distinct prompts, seeds and settings; 1 to 4 streams each (guidance off or unconditional: 1;
# guidance: 2; regional: 3 or 4), an edit fed its kept cells in runs, and when each joins.
REQUESTS = [
    (0, dict(prompt=PROMPT, seed=0)),
    (0, dict(prompt="a purple star", seed=5, temperature=0.7, top_k=20, guidance_scale=5.0)),
    (3, dict(prompt=TWO_OBJECTS, seed=1, regional=0.5, top_p=0.9)),
    (3, dict(prompt="a small green triangle at the top", seed=2, image=PICTURE, keep=square_keep())),
    (10, dict(prompt="", seed=4)),
    (40, dict(prompt="a yellow circle at the bottom", seed=6, guidance_scale=1.0, temperature=0)),
    (41, dict(prompt=TWO_OBJECTS, seed=7, regional=1.0, temperature=1.3, top_k=50)),
]


def solo(model, request: dict) -> list:
    return list(autoregressive_progressive(model, **request))


def batched(model, requests, leave: dict | None = None, decoder=None):
    """Write the requests together, each joining at its tick; leave {index: tick} gives one up
    at that tick. Returns each request's frames, and the decoder."""
    decoder = decoder or BatchedGPT2Decoding(model.transformer, rows=4)
    runs, frames, tick, last_join = {}, {j: [] for j in range(len(requests))}, 0, max(t for t, _ in requests)
    while tick <= last_join or any(not r.done for r in runs.values()):
        for j, (join, request) in enumerate(requests):
            if join == tick:
                runs[j] = AutoregressiveRun(model, **request)
        for j, at in (leave or {}).items():
            if at == tick and j in runs:
                decoder.remove(runs.pop(j).rows)
        order = [j for j in sorted(runs) if not runs[j].done]
        for j, frame in zip(order, write_together(model, [runs[j] for j in order], decoder), strict=True):
            frames[j].append(frame)
        tick += 1
    return frames, decoder


def assert_same_writing(got: list, want: list):
    assert [f.token for f in got] == [f.token for f in want]
    assert [f.position for f in got] == [f.position for f in want]
    assert torch.equal(got[-1].codes, want[-1].codes)
    assert [f.candidates for f in got] == [f.candidates for f in want]  # the probabilities too, to the bit
    assert [f.network_evaluations for f in got] == [f.network_evaluations for f in want]
    assert [f.step for f in got] == [f.step for f in want] and got[-1].done


# ----------------------------------------------------------------------------- the decoder


def test_batched_decoder_gives_gpt2_decodings_logits(tiny_engine):
    lm = tiny_engine.autoregressive.transformer
    g = torch.Generator().manual_seed(0)
    tok = lambda b, n: torch.randint(0, lm.config.vocab_size, (b, n), generator=g)  # noqa: E731
    decoder = BatchedGPT2Decoding(lm, rows=2)  # grows as rows come
    solo_decoders, rows, diffs = {}, {}, []

    def check(name, got):
        want = solo_decoders[name].logits
        diffs.append(float((got - want).abs().max()))
        assert torch.allclose(got, want, atol=1e-6) and torch.equal(got, want), name

    def join(name, prefix):
        with torch.no_grad():
            solo_decoders[name] = GPT2Decoding(lm, prefix)
            rows[name] = decoder.add(prefix)
        check(name, decoder.logits)

    def feed(names, length=1):
        chunks = {name: tok(len(rows[name]), length) for name in names}
        with torch.no_grad():
            got = decoder.feed([r for name in names for r in rows[name]], torch.cat([chunks[n] for n in names]))
            for name in names:
                solo_decoders[name].feed(chunks[name])
        for part, name in zip(got.split([len(rows[n]) for n in names]), names):
            check(name, part)

    join("a", tok(2, 9))
    for _ in range(3):
        feed(["a"])
    join("b", tok(4, 9))
    feed(["b", "a"])  # rows at different positions, out of slot order
    feed(["b"], length=5)  # several tokens at once (an edit's kept cells)
    join("c", tok(3, 9))
    join("d", tok(1, 9))
    for _ in range(4):
        feed(["d", "a", "c", "b"])
    decoder.remove(rows.pop("b"))
    join("e", tok(2, 9))  # into the freed slots
    feed(["a", "c", "d", "e"])
    assert sorted(decoder.rows) == sorted(r for rs in rows.values() for r in rs)
    print(f"largest |batched - GPT2Decoding| logit difference: {max(diffs)}")
    with pytest.raises(ValueError):
        decoder.feed(rows["a"][:1] * 2, tok(2, 1))  # the same row twice


# ----------------------------------------------------------------------------- batched runs


@pytest.fixture(scope="module")
def solo_runs(tiny_engine):
    return [solo(tiny_engine.autoregressive, request) for _, request in REQUESTS]


def test_requests_written_together_write_their_solo_codes(tiny_engine, solo_runs):
    model = tiny_engine.autoregressive
    assert [len(run.prefix) for run in (AutoregressiveRun(model, **r) for _, r in REQUESTS)] == [2, 2, 4, 2, 1, 1, 3]
    frames, decoder = batched(model, REQUESTS)
    for j, want in enumerate(solo_runs):
        assert_same_writing(frames[j], want)
    assert decoder.rows == []  # every finished run gave its rows back


def test_a_step_is_one_forward_for_every_request(tiny_engine):
    model = tiny_engine.autoregressive
    runs = [AutoregressiveRun(model, **request) for _, request in REQUESTS if "keep" not in request]
    decoder = BatchedGPT2Decoding(model.transformer)
    write_together(model, runs, decoder)  # everyone joins: a prefix pass each
    sizes = []
    handle = model.transformer.get_input_embeddings().register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape))
    try:
        for _ in range(3):
            write_together(model, runs, decoder)
    finally:
        handle.remove()
    assert sizes == [(sum(len(r.prefix) for r in runs), 1)] * 3


def test_a_request_leaving_changes_no_other(tiny_engine, solo_runs):
    frames, decoder = batched(tiny_engine.autoregressive, REQUESTS, leave={1: 60})
    assert len(frames[1]) == 60  # given up on after 60 cells
    for j, want in enumerate(solo_runs):
        if j != 1:
            assert_same_writing(frames[j], want)
    assert decoder.rows == []


def test_batching_needs_the_kv_cache(tiny_engine):
    model = tiny_engine.autoregressive
    with pytest.raises(ValueError, match="KV cache"):
        write_together(model, [AutoregressiveRun(model, PROMPT, use_cache=False)], BatchedGPT2Decoding(model.transformer))


@pytest.mark.integration
def test_shipped_model_batched_writes_solo_codes(real_engine):
    model = real_engine.autoregressive
    requests = REQUESTS + [(5, dict(prompt="a large white heart on a black background", seed=9, top_k=100))]
    frames, _ = batched(model, requests, leave={0: 100})
    for j, (_, request) in enumerate(requests):
        if j != 0:
            assert_same_writing(frames[j], solo(model, request))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("packed", [True, False], ids=["onednn", "padded-addmm"])
def test_row_invariant_linear_gives_each_row_the_same_bits_however_many_rows(threads, packed):
    """Why one product can serve every request (kv_cache.RowInvariantLinear): a row's result
    does not depend on how many rows share the product, on either path."""
    from playground.autoregressive.kv_cache import RowInvariantLinear

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        for n_in, n_out in ((256, 768), (1024, 256)):
            linear = RowInvariantLinear(torch.randn(n_out, n_in, generator=g), torch.randn(n_out, generator=g))
            if packed and linear.packed is None:
                pytest.skip("no oneDNN in this torch build")
            if not packed:
                linear.packed = None
            x = torch.randn(64, n_in, generator=g)
            whole = linear(x)  # (64, out)
            assert torch.allclose(whole, x @ linear.weight.t() + linear.bias, atol=1e-4)
            for m in range(1, 10):
                assert torch.equal(linear(x[:m]), whole[:m]), (n_in, n_out, m)
    finally:
        torch.set_num_threads(before)
