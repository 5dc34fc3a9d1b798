"""The any-order model: its pure order functions, and its sampler on tiny random weights."""

import numpy as np
import pytest
import torch

from playground.autoregressive.masked_model import (MASKED_ORDERS, cells_per_step, mask_ratio, masked_inputs, most_confident,
                                                    random_order, training_mask)
from playground.frames import UNWRITTEN, mark_partial_grid


def test_the_settings_name_the_orders_the_models_write():
    from playground.autoregressive.masked_model import ORDERS
    from playground.settings import AR_ORDERS  # kept apart: settings must not import the models

    assert AR_ORDERS == ORDERS and ORDERS[0] == "raster"


def test_mask_ratio_runs_from_all_to_none():
    assert mask_ratio(0.0) == pytest.approx(1.0)
    assert mask_ratio(1.0) == pytest.approx(0.0, abs=1e-12)
    r = mask_ratio(np.linspace(0, 1, 9))
    assert np.all(np.diff(r) < 0)


@pytest.mark.parametrize("steps", [1, 2, 8, 12, 32, 256])
@pytest.mark.parametrize("order", MASKED_ORDERS)
def test_cells_per_step_writes_every_cell_once(order, steps):
    counts = cells_per_step(order, 256, steps)
    assert len(counts) == steps and sum(counts) == 256 and min(counts) >= 1


def test_confidence_first_writes_few_cells_first_and_many_last():
    counts = cells_per_step("confidence", 256, 12)
    assert counts[0] < counts[-1]
    assert counts[0] <= 10 and counts[-1] >= 30
    assert cells_per_step("random", 256, 12) == [22] * 4 + [21] * 8


def test_cells_per_step_refuses_bad_input():
    with pytest.raises(ValueError, match="order"):
        cells_per_step("raster", 256, 12)
    with pytest.raises(ValueError, match="steps"):
        cells_per_step("random", 256, 0)
    with pytest.raises(ValueError, match="steps"):
        cells_per_step("confidence", 10, 11)


def test_random_order_is_a_seeded_permutation():
    a = random_order(256, torch.Generator().manual_seed(3))
    b = random_order(256, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(256))
    assert not torch.equal(a, torch.arange(256))


def test_most_confident_never_picks_a_written_cell():
    confidence = torch.tensor([9.0, 1.0, 5.0, 7.0])
    masked = torch.tensor([False, True, True, True])
    assert most_confident(confidence, masked, 2).tolist() == [3, 2]


def test_training_mask_hides_at_least_one_cell_per_example():
    mask = training_mask(64, 256, torch.Generator().manual_seed(0))
    assert mask.shape == (64, 256) and mask.sum(1).min() >= 1
    # The cosine-distributed ratio: on average more than half hidden (E[cos(pi u / 2)] = 2 / pi).
    assert 0.5 < mask.float().mean() < 0.75


def test_masked_inputs_put_mask_where_hidden():
    class Config:
        mask_token_id, image_token_offset = 34, 35

    ids = torch.zeros(1, 3, dtype=torch.long)
    codes = torch.tensor([[4, 5]])
    out = masked_inputs(ids, codes, torch.tensor([[True, False]]), Config)
    assert out.tolist() == [[0, 0, 0, 34, 40]]


def test_a_step_that_writes_several_cells_boxes_each():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    written = np.zeros((4, 4), dtype=bool)
    written[0, 0] = written[3, 3] = True
    out = mark_partial_grid(image, written, (0, 15))
    magenta = (out == [255, 0, 255]).all(-1)
    assert magenta[0, 0] and magenta[63, 63] and not magenta[20, 20]


# ----------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("order", MASKED_ORDERS)
def test_sampler_writes_every_cell_in_its_steps(tiny_engine, order):
    frames = list(tiny_engine.autoregressive_progressive("a red circle", order=order, num_inference_steps=8, seed=1))
    assert [f.step for f in frames] == list(range(1, 9)) and frames[-1].done
    assert [f.network_evaluations for f in frames] == list(range(1, 9))
    written = [int((f.codes != UNWRITTEN).sum()) for f in frames]
    assert written == list(np.cumsum(cells_per_step(order, 256, 8)))
    for before, after in zip(frames, frames[1:]):  # a written cell keeps its code
        kept = before.codes != UNWRITTEN
        assert torch.equal(before.codes[kept], after.codes[kept])
        assert set(after.written_now) == set(torch.nonzero((after.codes != UNWRITTEN) & ~kept).flatten().tolist())
    assert frames[-1].image().shape == (64, 64, 3) and frames[-1].order == order


def test_sampler_is_deterministic_per_seed(tiny_engine):
    def codes(seed):
        frames = list(tiny_engine.autoregressive_progressive("a blue star", order="confidence", seed=seed))
        return frames[-1].codes

    assert len(list(tiny_engine.autoregressive_progressive("a blue star", order="confidence"))) == 12
    assert torch.equal(codes(5), codes(5)) and not torch.equal(codes(5), codes(6))


def test_sampler_keeps_given_cells(tiny_engine):
    start = torch.full((256,), UNWRITTEN)
    start[:100] = 7
    frames = list(tiny_engine.autoregressive_progressive("a red circle", order="random", num_inference_steps=4, start_codes=start))
    assert frames[-1].kept == 100 and (frames[-1].codes[:100] == 7).all() and (frames[-1].codes != UNWRITTEN).all()
    assert sum(len(f.written_now) for f in frames) == 156


def test_sampler_edits_a_picture_keeping_its_cells(tiny_engine):
    picture = np.full((64, 64, 3), 90, dtype=np.uint8)
    keep = np.zeros((16, 16), dtype=bool)
    keep[:8] = True
    frames = list(tiny_engine.autoregressive_progressive("a red circle", order="confidence", image=picture, keep=keep))
    ae = tiny_engine.masked.autoencoder
    expected = ae.latents_to_codes(ae.encode(picture[None]))[0]
    assert torch.equal(frames[-1].codes[:128], expected[:128].long()) and frames[-1].kept == 128
    assert frames[0].region is not None and frames[0].region[8:].all() and not frames[0].region[:8].any()


def test_any_order_needs_the_embedded_model(tiny_engine):
    from playground.errors import ModelNotFoundError, SettingsError
    from playground.engine import Engine

    bare = Engine(tiny_engine.diffusion, tiny_engine.autoregressive, tiny_engine.folder)
    bare.hub["autoregressive"]["tiny/janus"] = object()  # a real model: it writes in raster order only
    with pytest.raises(SettingsError, match="raster"):
        bare.autoregressive_progressive("a red circle", order="random", model="tiny/janus")
    del bare.hub["autoregressive"]["tiny/janus"]
    with pytest.raises(ModelNotFoundError, match="--stage masked"):
        bare.autoregressive_progressive("a red circle", order="confidence")


def _tiny_assets_with(folder, tiny_assets, part: str, codebook_size: int):
    """A copy of the tiny assets whose `part` (vqvae or masked) comes from tiny assets of another codebook size."""
    import shutil

    from playground.engine import build_random_assets

    other = build_random_assets(folder.with_name(folder.name + "-other"), codebook_size=codebook_size)
    shutil.copytree(tiny_assets, folder)
    shutil.rmtree(folder / part)
    shutil.copytree(other / part, folder / part)
    return folder


def test_token_models_of_another_autoencoder_are_refused_with_a_message(tmp_path, tiny_assets):
    from playground.engine import load_engine
    from playground.errors import ModelNotFoundError

    # the raster model is needed: a clear error, not wrong pictures or an index error mid-sampling
    other_autoencoder = _tiny_assets_with(tmp_path / "ae", tiny_assets, "vqvae", 16)
    with pytest.raises(ModelNotFoundError, match=r"writes 32 codes, but the autoencoder .* has 16"):
        load_engine(other_autoencoder)

    # the any-order model is optional: left out, with the reason among the engine's problems
    engine = load_engine(_tiny_assets_with(tmp_path / "masked", tiny_assets, "masked", 64))
    assert engine.masked is None
    assert len(engine.problems) == 1 and "writes 64 codes, but the autoencoder has 32" in engine.problems[0]
    with pytest.raises(ModelNotFoundError, match="--stage masked"):
        engine.autoregressive_progressive("a red circle", order="confidence")
