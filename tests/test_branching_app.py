"""/branch through gradio_client: a finished run continued from the slider's step streams two
branch pictures and a status line saying where they split; the same branch settings give the
same pictures; bad input gets one line, never a traceback. Tiny random models (conftest.py)."""

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.ui import views

PROMPT = "a large red circle on the left on a yellow background"


@pytest.fixture(scope="module")
def client(playground_app):
    return Client(playground_app[1], verbose=False, analytics_enabled=False)


@pytest.fixture(scope="module")
def run_key(client):
    final = client.predict(prompt=PROMPT, seed=3, api_name="/generate")
    return final[views.OUTPUTS.index("run_key")]


def test_branch_streams_both_branches(client, run_key):
    job = client.submit(run_key=run_key, fraction=0.4, seed=7, api_name="/branch")
    updates = list(job)
    diffusion, ar, status = job.result()
    assert len(updates) >= 2
    assert diffusion.endswith(".png") and ar.endswith(".png")
    assert status.startswith("✓ done · ↪ branched at step 5 of 12 / token 103 of 256 (new seed 7)")
    assert "diffusion step 12/12" in status and "token 256/256" in status


def test_the_same_branch_gives_the_same_pictures(client, run_key):
    first = client.predict(run_key=run_key, fraction=0.2, seed=5, api_name="/branch")
    again = client.predict(run_key=run_key, fraction=0.2, seed=5, api_name="/branch")
    other = client.predict(run_key=run_key, fraction=0.2, seed=6, prompt="a small blue star", temperature=1.0,
                           api_name="/branch")
    for i in (0, 1):
        assert open(first[i], "rb").read() == open(again[i], "rb").read()
        assert open(first[i], "rb").read() != open(other[i], "rb").read()
    assert "new prompt *a small blue star*" in other[2]


@pytest.mark.parametrize("kwargs, message", [
    (dict(run_key="", fraction=0.5), "Generate a picture first"),
    (dict(fraction=0), "move the slider between the start and the end"),
    (dict(fraction=1), "move the slider between the start and the end"),
    (dict(run_key="{not json", fraction=0.5), "Cannot find that run"),
    (dict(run_key='{"id": "x"}', fraction=0.5), "Cannot find that run"),
    (dict(fraction=0.5, seed=-3), "seed must be between"),
    (dict(fraction=0.5, temperature=50), "temperature must be between"),
])
def test_bad_branch_input_gets_one_line(client, run_key, kwargs, message):
    with pytest.raises(AppError, match=message) as info:
        client.predict(api_name="/branch", **{"run_key": run_key, "seed": 1, **kwargs})
    assert "Traceback" not in str(info.value)
