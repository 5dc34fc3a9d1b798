"""The per-part verdict (playground/world/verdict.py) on pictures drawn by the shapes world's
own renderer: a picture of its prompt is all ✓, one word changed marks that part ✗, and the
answer is always the checker's. No model involved."""

import numpy as np
import pytest

from playground.world.shapes import Scene, SceneObject, check, render
from playground.world.verdict import EMPTY_PROMPT, NOTHING_TO_CHECK, model_note, verdict, verdict_markdown

PICTURE = render(Scene("yellow", (SceneObject("red", "circle", "large", "left"),)))
PROMPT = "a large red circle on the left on a yellow background"


def marks(v) -> dict:
    return {p.part: p.ok for p in v.parts}


def test_a_picture_of_its_prompt_is_all_ticks():
    v = verdict(PICTURE, PROMPT)
    assert v.ok and marks(v) == {"colour": True, "shape": True, "size": True, "place": True, "background": True}
    text = verdict_markdown(v, PROMPT)
    assert text.startswith("**✓ matches the prompt**") and "✗" not in text
    assert "on the left ✓" in text and "yellow background ✓" in text


@pytest.mark.parametrize("prompt, wrong", [
    ("a large blue circle on the left on a yellow background", "colour"),
    ("a large red square on the left on a yellow background", "shape"),
    ("a small red circle on the left on a yellow background", "size"),
    ("a large red circle on the right on a yellow background", "place"),
    ("a large red circle on the left on a green background", "background"),
])
def test_one_word_changed_marks_that_part(prompt, wrong):
    v = verdict(PICTURE, prompt)
    assert not v.ok and v.ok == check(PICTURE, prompt).ok
    assert [part for part, ok in marks(v).items() if not ok][:1] == [wrong]
    if wrong != "colour":  # a missing colour leaves nothing to judge the rest on
        assert sum(not ok for ok in marks(v).values()) == 1, marks(v)
    assert "✗" in verdict_markdown(v, prompt)


def test_what_is_seen_instead_is_said():
    assert "on the left" in verdict_markdown(verdict(PICTURE, "a red circle on the right"), "")
    assert "looks like a circle" in verdict_markdown(verdict(PICTURE, "a red star"), "")
    assert "green background ✗ (yellow background)" in verdict_markdown(verdict(PICTURE, "a red circle on a green background"))


def test_only_named_parts_are_marked():
    v = verdict(PICTURE, "a red circle")
    assert v.ok and [p.part for p in v.parts] == ["colour", "shape"]


def test_two_objects_one_line_each():
    picture = render(Scene("white", (SceneObject("red", "circle", "large", "left"), SceneObject("blue", "star", "small", "right"))))
    prompt = "a large red circle on the left and a small blue star on the right on a white background"
    text = verdict_markdown(verdict(picture, prompt), prompt)
    assert "object 1: red ✓" in text and "object 2: blue ✓" in text and "✗" not in text
    swapped = "a large red circle on the right and a small blue star on the left"
    v = verdict(picture, swapped)
    assert not v.ok and [p.part for p in v.parts if not p.ok] == ["place", "place"]


@pytest.mark.parametrize("prompt, line", [("", EMPTY_PROMPT), ("   ", EMPTY_PROMPT), ("a cat on a sofa", NOTHING_TO_CHECK),
                                          ("red", NOTHING_TO_CHECK)])
def test_nothing_to_check(prompt, line):
    v = verdict(PICTURE, prompt)
    assert not v.checkable and verdict_markdown(v, prompt) == line


def test_noise_is_well_formed():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    v = verdict(noise, PROMPT)
    assert [p.part for p in v.parts] == ["colour", "shape", "size", "place", "background"]
    assert verdict_markdown(v, PROMPT).startswith(("**✓", "**✗"))


def test_a_real_model_gets_a_note():
    assert "only the shapes world" in model_note("stabilityai/sd-turbo")
