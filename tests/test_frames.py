"""The pure preview functions and frame bookkeeping, without any model."""

import numpy as np
import pytest
import torch

from playground.frames import UNWRITTEN, AutoregressiveFrame, DiffusionFrame, decoded_rows, mark_partial_grid, upscale
from playground.outputs import frame_at, pick

MAGENTA = (255, 0, 255)


def random_image(h=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, h, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- mark_partial_grid


def test_mark_partial_grid_hatches_unwritten_keeps_written_and_boxes_position():
    g, cell = 16, 4
    image = random_image()
    before = image.copy()
    written = np.zeros((g, g), dtype=bool)
    written.flat[:37] = True  # rows 0-1 and 5 cells of row 2
    out = mark_partial_grid(image, written, position=36)

    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before), "the input must not be modified"
    for r in range(g):
        for c in range(g):
            block = out[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
            src = image[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
            if r * g + c == 36:
                continue
            if written[r, c]:
                assert np.array_equal(block, src), (r, c)
            else:  # grey stripes: all channels equal, two levels
                assert (block[..., 0] == block[..., 1]).all() and (block[..., 1] == block[..., 2]).all()
                assert set(np.unique(block[..., 0])) <= {150, 200}
    # The position's cell: a magenta outline around its untouched inside.
    r, c = divmod(36, g)
    box = out[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
    edge = np.ones((cell, cell), dtype=bool)
    edge[1:-1, 1:-1] = False
    assert (box[edge] == MAGENTA).all()
    assert np.array_equal(box[1:-1, 1:-1], image[r * cell + 1 : (r + 1) * cell - 1, c * cell + 1 : (c + 1) * cell - 1])
    # The hatching really is striped (both levels occur).
    assert set(np.unique(out[40:, :, 0][~np.kron(written, np.ones((4, 4), bool))[40:]])) == {150, 200}


def test_mark_partial_grid_without_position_and_when_all_written():
    image = random_image()
    written = np.ones((16, 16), dtype=bool)
    assert np.array_equal(mark_partial_grid(image, written, None), image)
    none_written = mark_partial_grid(image, ~written, None)
    assert not (none_written == MAGENTA).all(-1).any()
    assert (none_written[..., 0] == none_written[..., 2]).all()


def test_mark_partial_grid_on_an_upscaled_picture():
    image = upscale(random_image(), 4)  # 256 x 256: 16 px cells
    written = np.zeros((16, 16), dtype=bool)
    written[0, 0] = True
    out = mark_partial_grid(image, written, position=0)
    assert (out[0, :16] == MAGENTA).all() and (out[:16, 15] == MAGENTA).all()
    assert np.array_equal(out[1:15, 1:15], image[1:15, 1:15])
    assert not np.array_equal(out[16:32, 16:32], image[16:32, 16:32])


# ----------------------------------------------------------------------------- upscale


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_upscale_nearest_neighbour(factor):
    image = random_image(8)
    big = upscale(image, factor)
    assert big.shape == (8 * factor, 8 * factor, 3) and big.dtype == np.uint8
    for y in range(8):
        for x in range(8):
            block = big[y * factor : (y + 1) * factor, x * factor : (x + 1) * factor]
            assert (block == image[y, x]).all()
    assert np.array_equal(big[::factor, ::factor], image)


# ----------------------------------------------------------------------------- frames (fake decoder)


class CountingDecoder:
    """Stands in for the autoencoder: counts decodes and returns a fixed picture."""

    decodes_top_rows = True

    def __init__(self):
        self.calls = {"latents": 0, "codes": 0}
        self.picture = random_image(seed=3)

    def decode_latents(self, latents):
        self.calls["latents"] += 1
        return np.stack([self.picture] * len(latents))

    def decode_codes(self, codes):
        self.calls["codes"] += 1
        self.rows = codes.shape[1] // 16
        assert (codes >= 0).all(), "unwritten cells must be given a real code before decoding"
        return self.picture[None, : 4 * self.rows].copy()  # the top rows, as the autoencoder does


def ar_frame(decoder, position, total=256):
    codes = torch.full((256,), UNWRITTEN, dtype=torch.long)
    codes[: position + 1] = 7
    return AutoregressiveFrame(step=position + 1, total=total, elapsed_ms=1.0, network_evaluations=position + 1,
                               autoencoder=decoder, codes=codes, position=position, token=7)


def test_autoregressive_frame_decodes_lazily_and_once():
    dec = CountingDecoder()
    f = ar_frame(dec, position=20)
    assert dec.calls["codes"] == 0
    p1, p2 = f.preview(4), f.preview(4)
    assert p1 is p2 and p1.shape == (256, 256, 3)
    small = f.image()
    assert small.shape == (64, 64, 3)
    assert dec.calls["codes"] == 1  # raw decode shared by every preview size
    assert f.row_col == (1, 4) and not f.done and f.fraction == pytest.approx(21 / 256)
    # Written rows untouched, unwritten ones hatched, current cell boxed.
    assert np.array_equal(p1[:16], upscale(dec.picture, 4)[:16])
    assert (p1[16, 4 * 16 : 5 * 16] == MAGENTA).all()
    assert (p1[200:, :, 0] == p1[200:, :, 1]).all()


def test_decoded_rows_reach_one_row_past_the_last_written_cell():
    codes = torch.full((256,), UNWRITTEN, dtype=torch.long)
    assert decoded_rows(codes, 16, done=False) == 16  # nothing written: nothing to save
    codes[:5] = 3
    assert decoded_rows(codes, 16, done=False) == 2
    codes[:37] = 3  # rows 0-1 and part of row 2
    assert decoded_rows(codes, 16, done=False) == 4
    assert decoded_rows(codes, 16, done=True) == 16
    codes[250] = 3  # a kept cell in the last row (editing): the whole grid
    assert decoded_rows(codes, 16, done=False) == 16


def test_partial_frame_decodes_only_the_rows_it_shows():
    dec = CountingDecoder()
    f = ar_frame(dec, position=20)  # row 1: rows 0-2 decoded
    raw = f.raw_image()
    assert dec.rows == 3 and raw.shape == (64, 64, 3)
    assert np.array_equal(raw[:12], dec.picture[:12]) and (raw[12:] == 0).all()
    assert np.array_equal(f.preview(1)[:4], dec.picture[:4])  # the written rows are shown as decoded


def test_finished_autoregressive_frame_is_the_plain_picture():
    dec = CountingDecoder()
    f = ar_frame(dec, position=255)
    assert f.done
    assert np.array_equal(f.image(), dec.picture)
    assert not (f.preview(4) == MAGENTA).all(-1).any()  # no box once done


def test_diffusion_frame_decodes_each_view_once():
    dec = CountingDecoder()
    z = torch.zeros(1, 4, 16, 16)
    f = DiffusionFrame(step=3, total=10, elapsed_ms=1.0, network_evaluations=4, autoencoder=dec, latents=z, pred_x0=z)
    assert dec.calls["latents"] == 0
    f.x0_image(), f.x0_image(), f.image()  # not done: image() is the x0 guess
    assert dec.calls["latents"] == 1
    f.noisy_image(), f.noisy_image()
    assert dec.calls["latents"] == 2


def test_diffusion_frame_decodes_both_previews_in_one_batch():
    dec = CountingDecoder()
    z = torch.zeros(1, 4, 16, 16)
    f = DiffusionFrame(step=3, total=10, elapsed_ms=1.0, network_evaluations=4, autoencoder=dec, latents=z, pred_x0=z)
    f.decode_previews(), f.decode_previews()
    assert dec.calls["latents"] == 1
    assert f.noisy_image().shape == f.x0_image().shape == (64, 64, 3)
    assert dec.calls["latents"] == 1  # both came from the one batched decode


# ----------------------------------------------------------------------------- pick / frame_at


def test_pick_spreads_evenly_and_keeps_the_last():
    frames = list(range(100))
    for n in (2, 3, 7, 40, 100):
        chosen = pick(frames, n)
        assert len(chosen) == n
        assert chosen[0] == 0 and chosen[-1] == 99
        assert all(a < b for a, b in zip(chosen, chosen[1:]))
    assert pick(frames, 1) == [99]
    assert pick(frames, 0) == [99]
    assert pick(frames, 500) == frames
    assert pick([], 5) == []
    assert pick(["only"], 5) == ["only"]
    gaps = np.diff(pick(frames, 12))
    assert gaps.max() - gaps.min() <= 1


def test_frame_at_edges():
    frames = list(range(11))
    assert frame_at([], 0.5) is None
    assert frame_at(frames, 0.0) == 0
    assert frame_at(frames, 1.0) == 10
    assert frame_at(frames, 0.5) == 5
    assert frame_at(frames, 0.31) == 3
    assert frame_at(frames, -3) == 0
    assert frame_at(frames, 7) == 10
    assert frame_at(["only"], 0.3) == "only"
