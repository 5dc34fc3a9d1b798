"""The class experiment (playground/experiment.py, the Experiment tab, /experiment and
`python -m playground experiment`) and the verdict lines /generate returns under its pictures.
The Wilson interval and the summaries are checked by hand; the rest on the tiny random models
(tests/conftest.py), which paint noise: these tests check that verdicts and shares are there
and well formed, not that the pictures match."""

import json

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from playground import cli
from playground.errors import SettingsError
from playground.experiment import (
    MAX_SEEDS,
    ExperimentPicture,
    experiment_progressive,
    experiment_seeds,
    grid_image,
    summarize,
    summary_markdown,
    validate_experiment,
    wilson_interval,
)
from playground.settings import MAX_SEED, GenerationSettings
from playground.ui import views
from playground.ui.experiment import EXPERIMENT_INPUTS
from playground.world.shapes import Scene, SceneObject, render
from playground.world.verdict import NOTHING_TO_CHECK, verdict

PROMPT = "a large red circle on the left on a yellow background"


# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize("k, n, low, high", [
    (4, 8, 0.2152, 0.7848),  # textbook values
    (0, 8, 0.0, 0.3244),
    (8, 8, 0.6756, 1.0),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_interval(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-3) and hi == pytest.approx(high, abs=1e-3)
    assert 0 <= lo <= k / n <= hi <= 1


def test_wilson_interval_without_pictures_says_nothing():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def picture(paradigm, index, ok_image: bool, seconds=1.0, evaluations=12):
    image = render(Scene("yellow", (SceneObject("red", "circle", "large", "left" if ok_image else "right"),)))
    return ExperimentPicture(paradigm, index, index, image, verdict(image, PROMPT), seconds, evaluations)


def test_summarize_counts_each_paradigm():
    pictures = [picture("diffusion", i, i < 3, seconds=2.0) for i in range(4)]
    pictures += [picture("autoregressive", i, True, evaluations=256) for i in range(4)]
    s = summarize(pictures)
    assert (s["diffusion"].matches, s["diffusion"].n, s["diffusion"].share) == (3, 4, 0.75)
    assert (s["diffusion"].low, s["diffusion"].high) == wilson_interval(3, 4)
    assert s["diffusion"].parts == {"colour": 1.0, "shape": 1.0, "size": 1.0, "place": 0.75, "background": 1.0}
    assert s["diffusion"].seconds_per_picture == 2.0 and s["autoregressive"].evaluations_per_picture == 256
    table = summary_markdown(s, 4)
    assert "| diffusion | 4 of 4 | 3 (75%) |" in table and "place right" in table
    assert pictures[3].caption() == "seed 3 ✗ place" and pictures[0].caption() == "seed 0 ✓"
    grid = grid_image(pictures[:4], columns=2)
    assert grid.shape == (2 * 134, 2 * 134, 3)
    assert tuple(grid[0, 0]) == (60, 170, 75) and tuple(grid[-1, -1]) == (220, 50, 47)  # ✓ green, ✗ red


@pytest.mark.parametrize("prompt, seeds, message", [
    ("", 8, "needs a prompt"), ("   ", 8, "needs a prompt"), ("a cat on a sofa", 8, "names no shape"),
    (PROMPT, 0, "from 1 to 32"), (PROMPT, MAX_SEEDS + 1, "from 1 to 32"), (PROMPT, 2.5, "whole number"),
    (PROMPT, "many", "whole number"), (PROMPT, float("nan"), "whole number"), ("x" * 10_000, 8, "characters long"),
])
def test_bad_experiments_get_one_line(prompt, seeds, message):
    with pytest.raises(SettingsError, match=message) as info:
        validate_experiment(prompt, seeds)
    assert "\n" not in str(info.value)


def test_seeds_follow_the_first_and_wrap():
    assert experiment_seeds(5, 3) == [5, 6, 7]
    assert experiment_seeds(MAX_SEED, 2) == [MAX_SEED, 0]


# ----------------------------------------------------------------------------- tiny models


def test_experiment_yields_each_picture_as_it_finishes(tiny_engine):
    settings = GenerationSettings(num_inference_steps=2)
    pictures = list(experiment_progressive(tiny_engine, PROMPT, [3, 4], settings))
    assert [(p.paradigm, p.seed) for p in pictures] == [("diffusion", 3), ("autoregressive", 3),
                                                       ("diffusion", 4), ("autoregressive", 4)]
    for p in pictures:
        assert p.image.shape == (64, 64, 3) and p.seconds > 0
        assert [q.part for q in p.verdict.parts] == ["colour", "shape", "size", "place", "background"]
    assert [p.network_evaluations for p in pictures[:2]] == [3, 256]  # text encoder + 2 steps; 256 tokens
    again = list(experiment_progressive(tiny_engine, PROMPT, [4], settings))
    assert np.array_equal(again[0].image, pictures[2].image)  # a seed is a seed


def test_cli_experiment_writes_grids_and_report(tiny_assets, tmp_path, capsys):
    out = tmp_path / "exp"
    assert cli.main(["experiment", PROMPT, "--seeds", "3", "--seed", "10", "--steps", "2",
                     "--assets", str(tiny_assets), "--out", str(out)]) == 0
    for name in ("diffusion.png", "autoregressive.png"):
        assert Image.open(out / name).size == (3 * 134, 134)
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [10, 11, 12] and len(report["pictures"]) == 6
    for paradigm in ("diffusion", "autoregressive"):
        s = report["summary"][paradigm]
        assert s["n"] == 3 and 0 <= s["low"] <= s["share"] <= s["high"] <= 1 and s["seconds_per_picture"] > 0
    printed = capsys.readouterr().out
    assert "diffusion:" in printed and "95 % interval" in printed


@pytest.mark.parametrize("args, message", [
    (["", "--seeds", "2"], "needs a prompt"), (["a cat", "--seeds", "2"], "names no shape"),
    ([PROMPT, "--seeds", "33"], "from 1 to 32"), ([PROMPT, "--seeds", "0"], "from 1 to 32"),
])
def test_cli_experiment_bad_input(args, message, tmp_path, capsys):
    assert cli.main(["experiment", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def client(playground_app):
    return Client(playground_app[1], verbose=False, analytics_enabled=False)


def test_experiment_endpoint_streams_the_grids(client):
    info = client.view_api(return_format="dict", print_info=False)
    params = [p["parameter_name"] for p in info["named_endpoints"]["/experiment"]["parameters"]]
    assert params == list(EXPERIMENT_INPUTS) and params[:3] == ["prompt", "seeds", "seed"]
    job = client.submit(prompt=PROMPT, seeds=2, seed=5, num_inference_steps=2, api_name="/experiment")
    updates = list(job)
    diffusion, ar, summary = job.result()
    assert len(diffusion) == 2 and len(ar) == 2
    assert [item["caption"].split()[:2] for item in diffusion] == [["seed", "5"], ["seed", "6"]]
    assert all(item["caption"].split()[2] in ("✓", "✗") for item in diffusion + ar)
    assert Image.open(diffusion[0]["image"]).size == (128, 128)
    assert "| diffusion | 2 of 2 |" in summary and "| autoregressive | 2 of 2 |" in summary
    sizes = [(len(u[0]), len(u[1])) for u in updates if isinstance(u[0], list)]
    assert (1, 0) in sizes and (1, 1) in sizes  # the grids fill picture by picture


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt=""), "needs a prompt"), (dict(prompt="a cat on a sofa"), "names no shape"),
    (dict(prompt=PROMPT, seeds=40), "from 1 to 32"), (dict(prompt=PROMPT, seeds=0), "from 1 to 32"),
    (dict(prompt=PROMPT, temperature=-1), "temperature must be between"),
])
def test_experiment_bad_input_gets_a_clean_message(client, kwargs, message):
    with pytest.raises(AppError, match=message) as info:
        client.predict(api_name="/experiment", **kwargs)
    assert "Traceback" not in str(info.value)


def test_generate_returns_a_verdict_under_each_picture(client):
    final = client.predict(prompt=PROMPT, seed=0, api_name="/generate")
    assert len(final) == len(views.OUTPUTS) and views.OUTPUTS[-2:] == ("diffusion_verdict", "ar_verdict")
    for name in ("diffusion_verdict", "ar_verdict"):
        text = final[views.OUTPUTS.index(name)]
        assert text.startswith(("**✓ matches the prompt**", "**✗ does not match the prompt**")), text
        assert "red" in text and "circle" in text and "on the left" in text and "yellow background" in text
    nothing = client.predict(prompt="a cat on a sofa", seed=0, api_name="/generate")
    assert nothing[views.OUTPUTS.index("diffusion_verdict")] == NOTHING_TO_CHECK


class StandInEngine:
    """Just what verdict_views asks an engine: which model painted each panel."""

    def __init__(self, **models):
        self.models = models

    def model_name(self, kind, model=""):
        return model or self.models.get(kind, "embedded")


def stand_in_run(done: bool):
    from types import SimpleNamespace

    image = render(Scene("yellow", (SceneObject("red", "circle", "large", "left"),)))
    frame = SimpleNamespace(done=done, image=lambda: image)
    return SimpleNamespace(prompt=PROMPT, settings=GenerationSettings(),
                           diffusion=SimpleNamespace(kind="diffusion", frames=[frame]),
                           autoregressive=SimpleNamespace(kind="autoregressive", frames=[frame]))


def test_verdict_views_for_real_models_and_stopped_runs():
    values = views.verdict_views(stand_in_run(done=True), StandInEngine(diffusion="stabilityai/sd-turbo"))
    assert "only the shapes world" in values["diffusion_verdict"] and "sd-turbo" in values["diffusion_verdict"]
    assert values["ar_verdict"].startswith("**✓ matches the prompt**")
    stopped = views.verdict_views(stand_in_run(done=False), StandInEngine())
    assert stopped == {"diffusion_verdict": "Stopped before the end: no verdict.",
                       "ar_verdict": "Stopped before the end: no verdict."}


def test_a_tracks_last_parts_made_early_are_what_the_last_update_would_make(tiny_engine):
    """The stream makes a finished track's filmstrip and verdict while the other track still
    computes; the last update then carries those, the same as made at the end."""
    from playground.runtime.run import LiveRun
    from playground.ui.handlers import Playground

    pg = Playground(lambda: tiny_engine)
    run = LiveRun(tiny_engine, PROMPT, GenerationSettings(seed=3).validated()).start(0.0)
    assert run.done.wait(120) and run.complete
    pg.runs.add(run)
    files = pg.files(run)
    early = {"autoregressive": files.convert(views.track_finals(run, run.autoregressive, tiny_engine))}
    assert set(early["autoregressive"]) == {"ar_filmstrip", "ar_verdict"}
    assert all(isinstance(path, str) for path, _ in early["autoregressive"]["ar_filmstrip"])
    with_early = files.convert(pg.final_outputs(run, finals=early))
    at_the_end = files.convert(pg.final_outputs(run))
    assert with_early.keys() == at_the_end.keys()
    for name in ("diffusion_filmstrip", "ar_filmstrip", "diffusion_verdict", "ar_verdict", "diffusion_image", "ar_image"):
        assert with_early[name] == at_the_end[name], name
