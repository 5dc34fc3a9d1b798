"""The shipped models (assets/): they draw what seen prompts ask for, and the same seed
gives the same bytes. Skipped until training has written the real weights."""

import io

import pytest
from PIL import Image

from playground.settings import GenerationSettings
from playground.world import shapes

pytestmark = pytest.mark.integration

# Seen colour-shape pairs (none held out), every part named: size, colour, shape, place, background.
SEEN_PROMPTS = [
    "a large red circle on the left on a yellow background",
    "a large blue star at the top on a white background",
    "a large yellow square in the center on a black background",
]


def test_seen_prompts_are_not_held_out():
    for prompt in SEEN_PROMPTS:
        spec = shapes.parse_prompt(prompt)
        assert spec.background and spec.unknown_words == []
        for o in spec.objects:
            assert o.size and o.place and (o.color, o.shape) not in shapes.HELD_OUT_PAIRS


def final_image(engine, paradigm, prompt, settings):
    if paradigm == "diffusion":
        frames = engine.diffusion_progressive(prompt, **settings.diffusion_kwargs())
    else:
        frames = engine.autoregressive_progressive(prompt, **settings.autoregressive_kwargs())
    frame = None
    for frame in frames:
        pass
    return frame.image()


def png_bytes(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("paradigm", ["diffusion", "autoregressive"])
def test_shipped_models_draw_seen_prompts(real_engine, paradigm):
    """At least two of three seen prompts drawn right (seen adherence at default settings: 90.5 %
    diffusion, 94.0 % autoregressive with the shipped weights; assets/README.md, Evaluation)."""
    settings = GenerationSettings().validated()
    results = {p: shapes.check(final_image(real_engine, paradigm, p, settings), p) for p in SEEN_PROMPTS}
    for prompt, r in results.items():
        print(f"{paradigm}: {'match' if r.ok else 'no match'}: {prompt} {'; '.join(r.reasons)}")
    assert sum(r.ok for r in results.values()) >= 2, {p: r.reasons for p, r in results.items()}


@pytest.mark.parametrize("paradigm", ["diffusion", "autoregressive"])
def test_shipped_models_are_deterministic(real_engine, paradigm):
    settings = GenerationSettings(seed=11).validated()
    a = final_image(real_engine, paradigm, SEEN_PROMPTS[0], settings)
    b = final_image(real_engine, paradigm, SEEN_PROMPTS[0], settings)
    assert png_bytes(a) == png_bytes(b)
    other = final_image(real_engine, paradigm, SEEN_PROMPTS[0], GenerationSettings(seed=12).validated())
    assert png_bytes(other) != png_bytes(a)


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_shipped_any_order_model_draws_seen_prompts(real_engine, order):
    """The shipped any-order model: at least two of three seen prompts drawn right in each order
    (assets/README.md, Evaluation: the orders gallery)."""
    settings = GenerationSettings(ar_order=order).validated()
    results = {p: shapes.check(final_image(real_engine, "autoregressive", p, settings), p) for p in SEEN_PROMPTS}
    assert real_engine.masked.transformer.config.model_type == "bert"
    assert sum(r.ok for r in results.values()) >= 2, {p: r.reasons for p, r in results.items()}
