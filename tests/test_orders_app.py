"""The generation orders gallery through the front ends: the command line (--order, --ar-steps)
and the API (/generate's ar_order and ar_steps), on the tiny random models."""

import json

import pytest
from gradio_client import Client

from playground import cli
from test_app import output, run_generate


def test_cli_writes_in_the_order_asked(tiny_assets, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["generate", "a red circle", "--assets", str(tiny_assets), "--out", str(out), "--steps", "2",
                     "--order", "confidence", "--ar-steps", "5"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["ar_order"] == "confidence"
    assert report["autoregressive"]["steps"] == 5 and report["autoregressive"]["network_evaluations"] == 5
    assert (out / "autoregressive.png").is_file() and (out / "autoregressive.gif").is_file()


@pytest.mark.parametrize("args, message", [
    (["--order", "spiral"], "ar_order must be one of raster, random, confidence"),
    (["--order", "random", "--ar-steps", "300"], "ar_steps must be between 0 and 256"),
])
def test_cli_bad_order_is_one_line(tiny_assets, tmp_path, capsys, args, message):
    rc = cli.main(["generate", "a red circle", "--assets", str(tiny_assets), "--out", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def client(playground_app):
    return Client(playground_app[1], verbose=False, analytics_enabled=False)


@pytest.mark.parametrize("order, steps, shown", [("confidence", 0, 12), ("random", 6, 6)])
def test_api_streams_the_order_and_counts_evaluations(client, order, steps, shown):
    updates, final = run_generate(client, prompt="a blue star", seed=2, ar_order=order, ar_steps=steps)
    status = output(final, "ar_status")
    assert f"step {shown}/{shown} · {order} order" in status and f"{shown} evaluations" in status, status
    assert output(final, "diffusion_status").startswith("✓ done · step 12/12")
    assert len(output(final, "ar_filmstrip")) >= 2
    _, again = run_generate(client, prompt="a blue star", seed=2, ar_order=order, ar_steps=steps)
    assert open(output(again, "ar_image"), "rb").read() == open(output(final, "ar_image"), "rb").read()


def test_api_refuses_an_unknown_order(client):
    # The order is a radio button: gradio itself names the choices.
    with pytest.raises(Exception, match="'spiral'.*not in the list of choices: \\['raster', 'random', 'confidence'\\]"):
        client.predict(prompt="a red circle", ar_order="spiral", api_name="/generate")


def test_branch_and_attention_follow_the_order(tiny_engine, tiny_assets, tmp_path):
    """A branch of a confidence-order run keeps the cells written by its step; the raster model's
    attention is not shown for it (one line)."""
    import numpy as np

    from playground.branching import point_at_steps
    from playground.hub.attention import attention_reader
    from playground.settings import GenerationSettings

    settings = GenerationSettings(ar_order="confidence", ar_steps=6, num_inference_steps=3).validated()
    kwargs = settings.autoregressive_kwargs()
    d = list(tiny_engine.diffusion_progressive("a red circle", **settings.diffusion_kwargs()))
    a = list(tiny_engine.autoregressive_progressive("a red circle", **kwargs))
    point = point_at_steps(d, a, 2, 3)
    starts = point.sampler_kwargs()[1]
    start = starts["start_codes"]
    branch = list(tiny_engine.autoregressive_progressive("a red circle", **{**kwargs, "seed": 9, **starts}))
    assert len(branch) == 6 - 3 and point.note() == "branched at step 2 of 3 / AR step 3 of 6"  # the run's remaining steps
    written = start != -1
    assert int(written.sum()) == int((a[2].codes != -1).sum()) > 0
    assert np.array_equal(branch[-1].codes[written], a[2].codes[written]) and branch[-1].kept == int(written.sum())
    with pytest.raises(ValueError, match="choose raster"):
        attention_reader(tiny_engine, "autoregressive", "", "a red circle", order="confidence")


def test_orders_command_measures_every_order(tiny_assets, tmp_path, capsys):
    from playground.evaluation import orders

    out = tmp_path / "orders.json"
    orders.main(["--assets", str(tiny_assets), "--seen", "2", "--held-out", "1", "--threads", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    evaluations = {order: report[f"{order}/seen"]["evaluations_per_image"] for order in ("raster", "random", "confidence")}
    assert evaluations == {"raster": 256, "random": 32, "confidence": 12}
    assert report["confidence/held_out"]["n"] == 1 and 0 <= report["confidence/seen"]["adherence"] <= 1
    printed = capsys.readouterr().out
    assert printed.count("confidence") == 2 and "s/picture" in printed


def test_an_any_order_run_is_computed_by_the_page_when_the_workers_batch(tiny_engine):
    """A batch worker writes raster runs only: an any-order run never asks it for a place."""
    from playground.runtime.batching import BatchPool
    from playground.runtime.run import LiveRun
    from playground.settings import GenerationSettings

    class BatchingPool:  # a BatchPool's choice of runs, without its processes
        asked = 0
        serves = staticmethod(BatchPool.serves)

        def acquire(self, count=2):
            self.asked += 1
            return None

    pool = BatchingPool()
    settings = GenerationSettings(ar_order="confidence", ar_steps=3, num_inference_steps=2).validated()
    run = LiveRun(tiny_engine, "a red circle", settings, pool=pool).start(0.0)
    assert run.done.wait(timeout=120) and run.error is None and run.complete
    assert pool.asked == 0 and not run.in_workers
    assert run.autoregressive.frames[-1].order == "confidence" and len(run.autoregressive.frames) == 3
    raster = LiveRun(tiny_engine, "a red circle", GenerationSettings(num_inference_steps=2).validated(), pool=pool).start(0.0)
    assert raster.done.wait(timeout=120) and pool.asked == 1  # a raster run does ask
