"""Editing: the pure helpers (pictures, masks, grids, strength), both samplers' edits on
tiny seeded models, the command line, and /edit through gradio_client (an upload, an edit of a
previous result, a masked edit, bad input). The browser side is in test_browser.py."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from playground import cli
from playground.autoregressive.sample import sample as autoregressive_sample
from playground.diffusion.sample import sample as diffusion_sample
from playground.editing import (
    EditInput,
    autoregressive_keep,
    kept_rows_mask,
    load_edit,
    load_mask,
    load_picture,
    mask_to_grid,
    region_summary,
    sampler_kwargs,
    start_step,
    strength_timeline,
)
from playground.errors import EditInputError, SettingsError
from playground.evaluation.edits import VALIDATION_CASE_SEED, changed_attribute, edit_cases
from playground.frames import outline_cells
from playground.runtime.store import RunStore
from playground.settings import EditSettings
from playground.ui.examples import edit_example_value, edit_examples
from playground.ui.inputs import editor_mask, editor_picture, mask_canvas, parse_edit
from playground.ui.views import OUTPUTS
from playground.world.shapes import Scene, SceneObject, render

PICTURE = render(Scene("yellow", (SceneObject("red", "circle", "large", "left"),)))  # (64, 64, 3)
PROMPT = "a large blue circle on the left on a yellow background"


def square_mask(top=20, left=24, size=16) -> np.ndarray:
    mask = np.zeros((64, 64), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# ----------------------------------------------------------------------------- pure helpers


def test_mask_to_grid_marks_every_touched_cell():
    mask = np.zeros((64, 64), dtype=bool)
    mask[5, 9] = True  # one pixel: cell (1, 2)
    mask[40:48, 0:4] = True  # cells (10, 0) and (11, 0)
    grid = mask_to_grid(mask, 16)
    assert grid.shape == (16, 16) and grid.sum() == 3
    assert grid[1, 2] and grid[10, 0] and grid[11, 0]
    with pytest.raises(ValueError):
        mask_to_grid(np.zeros((10, 10), dtype=bool), 16)


def test_kept_rows_and_region_keep_masks():
    keep = kept_rows_mask(3, 16)
    assert keep.shape == (256,) and keep[:48].all() and not keep[48:].any()
    assert not kept_rows_mask(0, 16).any()
    region = mask_to_grid(square_mask(), 16)
    assert np.array_equal(autoregressive_keep(16, 8, region), ~region.reshape(-1))  # a region wins over rows
    assert np.array_equal(autoregressive_keep(16, 8, None), kept_rows_mask(8, 16))
    assert region_summary(kept_rows_mask(8, 16), 16) == "keeps rows 0–7 (128 tokens) and writes 128"
    assert "outside the region" in region_summary(~region.reshape(-1), 16)


@pytest.mark.parametrize("strength, skipped", [(1.0, 0), (0.5, 10), (0.6, 8), (0.05, 19), (0.01, 19)])
def test_strength_to_start_step(strength, skipped):
    assert start_step(strength, 20) == skipped  # at least one step is always run
    assert f"skips {skipped} of 20" in strength_timeline(strength, 20)


def test_outline_cells_draws_the_region_edge_only():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    region = np.zeros((16, 16), dtype=bool)
    region[4:8, 4:8] = True
    out = outline_cells(image, region)
    drawn = out.any(axis=2)
    assert drawn[16, 16:32].all() and drawn[31, 16:32].all() and drawn[16:32, 16].all()
    assert not drawn[20, 20] and not drawn[:16].any()
    assert not outline_cells(image, np.ones((16, 16), dtype=bool)).any()  # the whole picture: no edge


def save(array, path, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return str(path)


def test_pictures_of_any_mode_and_size_become_64x64_rgb(tmp_path):
    rgba = np.zeros((80, 120, 4), dtype=np.uint8)
    rgba[..., 2] = 200
    rgba[:, 60:, 3] = 255  # left half transparent: laid on white
    picture, notes = load_picture(save(rgba, tmp_path / "rgba.png"))
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8
    assert (picture[:, 0] == 255).all() and (picture[:, -1] == [0, 0, 200]).all()
    assert any("transparent" in n for n in notes) and any("cropped 120 x 80" in n for n in notes)

    grey16 = np.full((64, 64), 65535, dtype=np.uint16)
    grey16[:32] = 32768
    picture, notes = load_picture(save(grey16, tmp_path / "grey16.png"))
    assert picture[0, 0].tolist() == [128, 128, 128] and picture[-1, -1].tolist() == [255, 255, 255]
    assert any("8 bits" in n for n in notes)

    picture, _ = load_picture(Image.fromarray(PICTURE).convert("P"))  # palette
    assert picture.shape == (64, 64, 3)
    picture, notes = load_picture(PICTURE.astype(np.float32) / 255)  # float array in 0..1
    assert np.abs(picture.astype(int) - PICTURE).max() <= 1 and not notes
    picture, _ = load_picture(PICTURE[..., 0])  # greyscale array
    assert picture.shape == (64, 64, 3)


@pytest.mark.parametrize("content, message", [
    (b"not a picture at all", "is not a picture"),
    (b"", "is not a picture"),
])
def test_non_pictures_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(EditInputError, match=message):
        load_picture(str(path))


def test_huge_and_missing_pictures_are_refused(tmp_path):
    with pytest.raises(EditInputError, match="at most 8,192 a side"):
        load_picture(save(np.zeros((10, 9000), dtype=np.uint8), tmp_path / "wide.png"))
    with pytest.raises(EditInputError, match="no such picture"):
        load_picture(str(tmp_path / "missing.png"))
    with pytest.raises(EditInputError, match="a folder"):
        load_picture(str(tmp_path))
    with pytest.raises(EditInputError, match="must be"):
        load_picture(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(EditInputError, match="give a picture"):
        load_edit(None)


def test_masks_white_on_black_or_painted_layers(tmp_path):
    white = np.zeros((128, 128), dtype=np.uint8)
    white[40:80, 40:80] = 255
    mask, notes = load_mask(save(white, tmp_path / "mask.png"), picture_size=(64, 64))
    assert mask.shape == (64, 64) and mask[30, 30] and not mask[0, 0]
    assert any("resized" in n for n in notes)
    layer = np.zeros((64, 64, 4), dtype=np.uint8)
    layer[:8, :8] = [255, 0, 255, 255]
    mask, _ = load_mask(Image.fromarray(layer))
    assert mask[:8, :8].all() and mask.sum() == 64
    assert load_mask(np.zeros((64, 64), dtype=np.uint8))[0] is None  # nothing painted: no region
    with pytest.raises(EditInputError, match="mask is 100 x 50 pixels but the picture is 64 x 64"):
        load_edit(PICTURE, np.zeros((50, 100), dtype=np.uint8))
    wide = np.zeros((64, 128, 3), dtype=np.uint8)  # cropped to its centre: a square mask is painted on that
    assert load_edit(wide, white).mask[30, 30] and load_edit(wide, np.zeros((32, 64), np.uint8) + 255).mask.all()


def test_edit_input_round_trip_through_text():
    edit = load_edit(PICTURE, square_mask().astype(np.uint8) * 255)
    again = EditInput.from_dict(json.loads(json.dumps(edit.as_dict())))
    assert np.array_equal(again.picture, PICTURE) and np.array_equal(again.mask, edit.mask)


def test_editor_values_give_the_picture_and_painted_region():
    layer = np.zeros((256, 256, 4), dtype=np.uint8)
    assert editor_mask({"background": PICTURE, "layers": [layer], "composite": PICTURE}) is None
    layer[:40, :40, 3] = 255
    mask = np.asarray(editor_mask({"background": None, "layers": [layer, np.zeros_like(layer)]}))
    assert mask.shape == (256, 256) and mask[:40, :40].all() and mask.sum() == 1600 * 255
    assert editor_picture({"background": PICTURE, "layers": [], "composite": None}) is PICTURE
    assert mask_canvas(None) is None


def test_the_painted_region_stays_when_the_picture_changes():
    """A changed picture reaching the server updates the region canvas's picture and keeps
    the region painted on it."""
    layer = np.zeros((256, 256, 4), dtype=np.uint8)
    layer[100:140, 60:200] = (255, 0, 255, 255)
    painted = {"background": np.zeros((256, 256, 3), np.uint8), "layers": [layer], "composite": None}
    drawn_on = PICTURE.copy()
    drawn_on[:8, :8] = (30, 30, 30)  # a stroke on the picture
    canvas = mask_canvas(drawn_on, painted)
    assert canvas["background"].shape == (256, 256, 3) and (canvas["background"][:32, :32] == 30).all()
    assert len(canvas["layers"]) == 1 and np.array_equal(canvas["layers"][0], layer)
    assert (canvas["composite"][100:140, 60:200] == (255, 0, 255)).all()  # the region shows on the picture
    assert np.array_equal(canvas["composite"][:100], canvas["background"][:100])
    assert np.array_equal(np.asarray(editor_mask(canvas)) > 0, layer[..., 3] > 0)
    assert mask_canvas(drawn_on)["layers"] == []  # nothing painted yet
    assert mask_canvas(drawn_on, {"layers": [layer[:100]]})["layers"] == []  # another canvas size: dropped


def test_edit_settings_validate_like_the_others():
    assert EditSettings(strength="0.5", keep_rows="4").validated().keep_rows == 4
    for bad, message in ((dict(strength=0), "strength must be between 0.05 and 1.0"),
                         (dict(keep_rows=16), "keep_rows must be between 0 and 15"),
                         (dict(keep_rows=2.5), "keep_rows must be a whole number")):
        with pytest.raises(SettingsError, match=message):
            EditSettings(**bad).validated()
    diffusion, autoregressive = sampler_kwargs(EditSettings(), None, 16)
    assert "strength" not in diffusion and "keep" not in autoregressive


def test_evaluation_cases_change_one_attribute():
    cases = edit_cases(12)
    kinds = {changed_attribute(source, new) for _, source, new in cases}
    assert kinds <= {"colour", "shape", "size", "place", "background"} and len(kinds) >= 3
    assert {changed_attribute(s, n) for _, s, n in edit_cases(5, attributes=("colour",))} == {"colour"}
    assert changed_attribute("a red circle on a blue background", "a red circle on a green background") == "background"
    assert changed_attribute("a small red circle", "a small blue circle") == "colour"
    assert [c[1:] for c in edit_cases(6, seed=VALIDATION_CASE_SEED)] != [c[1:] for c in cases[:6]]  # the validation cases are others


# ----------------------------------------------------------------------------- the samplers


def codes_of(engine, picture) -> torch.Tensor:
    ae = engine.autoregressive.autoencoder
    return ae.latents_to_codes(ae.encode(picture[None]))[0]  # (g*g,)


def test_diffusion_image_to_image_runs_the_last_steps(tiny_engine):
    frames = list(tiny_engine.diffusion_progressive(PROMPT, seed=0, num_inference_steps=10, image=PICTURE, strength=0.4))
    assert len(frames) == 4 and frames[-1].total == 4 and frames[0].skipped == 6
    assert frames[-1].network_evaluations == 4 + 1
    full = list(tiny_engine.diffusion_progressive(PROMPT, seed=0, num_inference_steps=10))
    assert frames[0].timestep == full[6].timestep  # it enters the same schedule at step 7
    same = diffusion_sample(tiny_engine.diffusion, PROMPT, seed=0, num_inference_steps=10, image=PICTURE, strength=1.0)
    assert torch.equal(same.latents, full[-1].latents)  # strength 1: the picture is forgotten


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm"])
def test_diffusion_inpainting_keeps_the_outside(tiny_engine, scheduler):
    mask = square_mask()
    region = torch.from_numpy(mask_to_grid(mask, 16))
    known = tiny_engine.diffusion.autoencoder.encode(PICTURE[None])
    frames = list(tiny_engine.diffusion_progressive(PROMPT, seed=3, num_inference_steps=6, image=PICTURE,
                                                    strength=1.0, mask=mask, scheduler=scheduler))
    last = frames[-1]
    assert len(frames) == 6 and np.array_equal(last.region, region.numpy())
    assert torch.equal(last.latents[..., ~region], known[..., ~region])  # outside: the picture's own latent
    assert not torch.allclose(last.latents[..., region], known[..., region])  # inside: repainted


def test_autoregressive_continuation_keeps_rows_exactly(tiny_engine):
    keep = kept_rows_mask(6, 16)
    frames = list(tiny_engine.autoregressive_progressive(PROMPT, seed=0, image=PICTURE, keep=keep))
    last = frames[-1]
    assert len(frames) == last.total == 160 and last.kept == 96
    assert frames[0].position == 96  # the first cell written is the first of row 6
    assert torch.equal(last.codes[:96], codes_of(tiny_engine, PICTURE)[:96])  # the kept part, exactly
    assert last.network_evaluations == 1 + 1 + 159  # prompt, the kept rows in one call, each new token
    assert (frames[0].codes[:96] >= 0).all() and (frames[0].codes[97:] < 0).all()


def test_autoregressive_region_sees_only_above_and_left(tiny_engine):
    """The written cells depend on the picture above and left of them, never below or right."""
    keep = autoregressive_keep(16, 0, mask_to_grid(square_mask(16, 16, 16), 16))  # cells (4..7, 4..7)
    other = PICTURE.copy()
    other[40:] = 255  # changed below the region (rows 10..15 of cells)
    kwargs = dict(seed=2, keep=keep, temperature=1.0)
    run = list(tiny_engine.autoregressive_progressive(PROMPT, image=PICTURE, **kwargs))
    below = autoregressive_sample(tiny_engine.autoregressive, PROMPT, image=other, **kwargs)
    written = torch.from_numpy(~keep)
    assert len(run) == 16 and [f.position for f in run][:4] == [68, 69, 70, 71]
    assert torch.equal(run[-1].codes[written], below.codes[written])
    assert not torch.equal(run[-1].codes, below.codes)
    assert torch.equal(run[-1].codes[~written], codes_of(tiny_engine, PICTURE)[~written])
    no_cache = autoregressive_sample(tiny_engine.autoregressive, PROMPT, image=PICTURE, use_cache=False, **kwargs)
    assert torch.equal(no_cache.codes, run[-1].codes)


# ----------------------------------------------------------------------------- command line


def test_cli_edit_writes_the_run_folder(tiny_assets, tmp_path, capsys):
    picture = save(np.dstack([PICTURE, np.full((64, 64), 255, np.uint8)]), tmp_path / "in.png")
    mask = save(square_mask().astype(np.uint8) * 255, tmp_path / "mask.png")
    out = tmp_path / "out"
    code = cli.main(["edit", picture, PROMPT, "--mask", mask, "--assets", str(tiny_assets), "--out", str(out),
                     "--steps", "4", "--strength", "0.5"])
    assert code == 0, capsys.readouterr().err
    for name in ("diffusion.png", "autoregressive.png", "diffusion.gif", "comparison.png", "input.png", "mask.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["strength"] == 0.5 and report["diffusion"]["steps"] == 2
    assert report["edit"]["kept_tokens_reproduced"] is True and report["edit"]["autoregressive_tokens_kept"] == 240
    assert "2 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"%PDF-1.4 not a picture"), "is not a picture"),
    (lambda p: save(np.zeros((9000, 10), dtype=np.uint8), p), "at most 8,192"),
    (lambda p: save(PICTURE, p), "must be between 0 and 15"),
])
def test_cli_edit_bad_input_one_line_exit_2(tiny_assets, tmp_path, capsys, make, message):
    path = tmp_path / "in.png"
    make(path)
    code = cli.main(["edit", str(path), PROMPT, "--keep-rows", "16" if "15" in message else "8",
                     "--assets", str(tiny_assets), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT and message in err
    assert err.count("\n") == 1 and err.startswith("error:") and "Traceback" not in err


# ----------------------------------------------------------------------------- /edit through gradio_client


@pytest.fixture(scope="module")
def client(playground_app):
    from gradio_client import Client

    return Client(playground_app[1], verbose=False, analytics_enabled=False)


def editor(path, *layers):
    """An image editor's value as an API caller sends it."""
    from gradio_client import handle_file

    return {"background": handle_file(str(path)), "layers": [handle_file(str(p)) for p in layers], "composite": None}


def run_edit(client, **kwargs):
    job = client.submit(api_name="/edit", **kwargs)
    return list(job), job.result()


def test_edit_endpoint_takes_keywords(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/edit"]
    names = [p["parameter_name"] for p in info["parameters"]]
    assert names[:6] == ["picture", "prompt", "mask", "seed", "strength", "keep_rows"]
    assert [r["component"] for r in info["returns"][:2]] == ["Image", "Image"]


def test_edit_an_upload_streams_both_panels(client, playground_app, tmp_path):
    rgba = np.dstack([np.repeat(np.repeat(PICTURE, 3, 0), 3, 1), np.full((192, 192), 255, np.uint8)])
    path = save(rgba, tmp_path / "upload.png")  # an RGBA upload at another size
    updates, final = run_edit(client, picture=editor(path), prompt=PROMPT, seed=0, strength=0.5, keep_rows=8)
    assert sum(isinstance(u[1], str) for u in updates[:-1]) >= 5  # the AR panel streamed
    assert final[3].startswith("✓ done · step 6/6 (edit: the first 6 of 12 steps skipped)")  # strength 0.5 of the 12 default steps
    assert final[4].startswith("✓ done · token 128/128 written, 128 kept")
    assert Image.open(final[0]).size == (256, 256)
    run = playground_app[0].playground.runs.latest()
    kept = torch.from_numpy(kept_rows_mask(8, 16))
    source = codes_of(run_engine(playground_app), run.edit.picture)
    assert torch.equal(run.autoregressive.frames[-1].codes[kept], source[kept])


def run_engine(playground_app):
    return playground_app[0].playground.engine.get()


def test_edit_a_previous_result_with_a_painted_region(client, playground_app, tmp_path, monkeypatch):
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 0.0)  # not about streaming: as fast as the tiny models go
    job = client.submit(prompt="a small green square", seed=5, api_name="/generate")
    result = job.result()  # the diffusion picture, 256 x 256
    layer = np.zeros((256, 256, 4), dtype=np.uint8)
    layer[96:160, 96:160] = [255, 0, 255, 255]  # the brush: cells 6..9 of rows 6..9
    mask = save(layer, tmp_path / "layer.png")
    _, final = run_edit(client, picture=editor(result[0]), mask=editor(result[0], mask), prompt=PROMPT, seed=1)
    assert "repainting the outlined region only" in final[3]
    assert final[4].startswith("✓ done · token 16/16 written, 240 kept")
    run = playground_app[0].playground.runs.latest()
    generated = playground_app[0].playground.find_run(result[OUTPUTS.index("run_key")])
    assert np.array_equal(run.edit.picture, generated.diffusion.frames[-1].image())  # the result, 64 x 64 again
    # The run key holds the picture: a forgotten edit is computed again, the same.
    key = final[OUTPUTS.index("run_key")]
    playground_app[0].playground.runs = RunStore()
    again = client.predict(1.0, key, api_name="/scrub")
    assert np.array_equal(np.asarray(Image.open(again[1])), np.asarray(Image.open(final[1])))


@pytest.mark.parametrize("case, message", [
    ("not a picture", "is not a picture"),
    ("no picture", "give a picture"),
    ("mask of another shape", "mask is 100 x 50 pixels"),
    ("strength", "greater than maximum value 1.0"),  # gradio's slider says so itself
])
def test_edit_bad_input_gets_a_clean_message(client, tmp_path, case, message):
    from gradio_client.exceptions import AppError

    good = save(PICTURE, tmp_path / "good.png")
    kwargs = dict(picture=editor(good), prompt=PROMPT, seed=0)
    if case == "not a picture":
        (tmp_path / "bad.png").write_bytes(b"GIF89a nonsense")
        kwargs["picture"] = editor(tmp_path / "bad.png")
    elif case == "no picture":
        kwargs["picture"] = None
    elif case == "mask of another shape":
        layer = np.zeros((50, 100, 4), dtype=np.uint8)
        layer[10:20, 10:20] = 255
        kwargs["mask"] = editor(good, save(layer, tmp_path / "layer.png"))
    else:
        kwargs["strength"] = 3
    with pytest.raises(AppError, match=message) as info:
        client.predict(api_name="/edit", **kwargs)
    assert "Traceback" not in str(info.value)


def test_edit_examples_are_pictures_of_their_captions_with_one_word_changed(tmp_path):
    from playground.ui import teaching
    from playground.world.shapes import check

    rows = edit_examples(tmp_path)
    assert len(rows) == len(teaching.EDIT_EXAMPLES) >= 4
    for (path, prompt), (before, after, label) in zip(rows, teaching.EDIT_EXAMPLES):
        assert prompt == after
        picture = np.asarray(Image.open(path).convert("RGB"))
        assert picture.shape == (64, 64, 3)
        assert check(picture, before).ok and not check(picture, after).ok
        assert label.startswith(changed_attribute(before, after))
    assert {changed_attribute(b, a) for b, a, _ in teaching.EDIT_EXAMPLES} >= {"colour", "shape", "place", "background"}


def test_the_edit_tab_offers_the_examples(playground_app, tmp_path):
    import gradio as gr

    demo, _ = playground_app
    edit = [b for b in demo.blocks.values() if isinstance(b, gr.Dataset) and b.elem_id == "edit-examples"]
    assert len(edit) == 1 and len(edit[0].samples) == 4
    path, prompt = edit_examples(tmp_path)[0]
    picture, region, chosen = edit_example_value([path, prompt])
    assert chosen == prompt and region is picture
    edit = parse_edit(picture, region)  # what Edit then reads from the two editors
    assert np.array_equal(edit.picture, np.asarray(Image.open(path).convert("RGB"))) and edit.mask is None


def test_evaluate_edits_reports_each_setting(tiny_assets, tmp_path):
    from playground.evaluation import edits as evaluate_edits

    out = tmp_path / "edit-evaluation.json"
    evaluate_edits.main(["--assets", str(tiny_assets), "--cases", "3", "--strengths", "0.5", "--keep-rows", "8",
                         "--guidance-scale", "5", "--steps", "4", "--out", str(out),
                         "--examples", str(tmp_path / "examples"), "--threads", "1"])
    report = json.loads(out.read_text())
    assert report["n"] == 3 and report["settings"]["guidance_scale"] == 5.0 and report["settings"]["num_inference_steps"] == 4
    assert set(report) >= {"diffusion strength 0.5", "autoregressive keep 8 rows"}
    assert report["autoregressive keep 8 rows"]["kept_tokens_exact"] == 1.0  # kept tokens are copied, whatever the model
    assert report["baseline_unedited_passes"] == 0.0  # a one-word change is not in the old picture
    assert len(list((tmp_path / "examples").glob("*.png"))) == 6  # before|after strips, both paradigms
    evaluate_edits.main(["--assets", str(tiny_assets), "--cases", "2", "--strengths", "0.5", "--keep-rows",
                         "--case-seed", "8", "--steps", "4", "--out", str(out), "--examples", str(tmp_path / "ex"), "--threads", "1"])
    assert set(json.loads(out.read_text())) & {"diffusion strength 0.5", "autoregressive keep 8 rows"} == {"diffusion strength 0.5"}
