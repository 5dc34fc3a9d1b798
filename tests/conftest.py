"""Shared test fixtures.

The environment variables are set first, before any test module imports gradio,
huggingface_hub or torch: no analytics, no telemetry, no network look-ups, a fresh temporary
folder for gradio's files, and one torch thread.
"""

import os
import tempfile

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="playground-gradio-")
# The test models are tiny: one torch thread is as fast, and many times faster when another
# job (such as training) is using the cores (OpenMP threads spin-wait on each other).
# Set before torch is imported; inherited by the subprocesses the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_ASSETS = REPO_ROOT / "assets"


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """Tiny, seeded, untrained models in the assets layout (built once per test session)."""
    from playground.engine import build_random_assets

    return build_random_assets(tmp_path_factory.mktemp("tiny-assets"), seed=0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_assets):
    """Both generators loaded from `tiny_assets`."""
    from playground.engine import load_engine

    return load_engine(tiny_assets)


def real_assets_ready() -> bool:
    """True once the shipped weights exist: assets/unet, assets/transformer and the rest."""
    from playground.engine import REQUIRED

    return all((REAL_ASSETS / p).exists() for p in REQUIRED)


@pytest.fixture(scope="session")
def real_engine():
    """The shipped models in assets/; skips the test until training has written them."""
    if not real_assets_ready():
        pytest.skip("the real weights are not in assets/ yet (assets/unet, assets/transformer)")
    from playground.engine import load_engine

    return load_engine(REAL_ASSETS)


@pytest.fixture(scope="session")
def playground_app(tiny_engine):
    """app.py's page serving the tiny models on a free local port, shared by the app, browser
    and load tests: yields (demo, url). Building it caches the examples (a few seconds)."""
    import app

    demo = app.build_demo(engine_loader=lambda: tiny_engine)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="session")
def tiny_hub_models(tmp_path_factory) -> dict:
    """Tiny random real-model checkpoints (a Stable Diffusion pipeline, a Janus model and its
    processor), saved with the libraries' own save_pretrained, once per test session."""
    from playground.hub.tiny import build_tiny_hub_models

    return {kind: str(path) for kind, path in build_tiny_hub_models(tmp_path_factory.mktemp("tiny-hub")).items()}


@pytest.fixture(scope="session")
def hub_engine(tiny_assets, tiny_hub_models):
    """The embedded tiny models plus the tiny real ones, loaded as users load them."""
    from playground.engine import load_engine

    return load_engine(tiny_assets, diffusion_model=tiny_hub_models["diffusion"],
                       autoregressive_model=tiny_hub_models["autoregressive"])
