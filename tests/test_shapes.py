"""The shapes world (playground/world/SPEC.md): renderer, captions, parser and checker."""

import numpy as np
import pytest
from PIL import Image

from playground.world import shapes as S
from playground.world.shapes import PALETTE, Scene, SceneObject, caption, check, parse_prompt, render, sample_scene


def nearest(image):
    return np.array(S.COLORS)[S.nearest_color_index(image)]


# ----------------------------------------------------------------------------- renderer


def test_render_shape_dtype_and_exact_palette_colours():
    scene = Scene("yellow", (SceneObject("blue", "square", "large", "center"),))
    img = render(scene)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    for y, x in [(0, 0), (0, 63), (63, 0), (63, 63)]:
        assert tuple(img[y, x]) == PALETTE["yellow"]
    assert tuple(img[32, 32]) == PALETTE["blue"]
    # Only anti-aliased edge pixels are blends: nearly every pixel is exactly one of the two.
    exact = (img == PALETTE["yellow"]).all(-1) | (img == PALETTE["blue"]).all(-1)
    assert exact.mean() > 0.95


@pytest.mark.parametrize("size,side", [("small", 16), ("large", 28)])
def test_render_sizes_and_places(size, side):
    for place, (px, py) in S.PLACES.items():
        obj = SceneObject("red", "square", size, place, offset=(1, -2))
        mask = nearest(render(Scene("black", (obj,)))) == "red"
        assert abs(int(mask.sum()) - side * side) <= 2 * side  # the square fills its box
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() + 0.5 - (px + 1)) <= 1 and abs(ys.mean() + 0.5 - (py - 2)) <= 1
        assert xs.max() - xs.min() + 1 in (side, side + 1)
        assert ys.max() - ys.min() + 1 in (side, side + 1)


@pytest.mark.parametrize("size", S.SIZES)
@pytest.mark.parametrize("shape", S.SHAPES)
def test_every_shape_fills_its_box_and_is_recognised(shape, size):
    side = S.SIZES[size]
    mask = nearest(render(Scene("black", (SceneObject("white", shape, size, "center"),)))) == "white"
    ys, xs = np.nonzero(mask)
    w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    if shape in ("circle", "square", "triangle"):  # touch all four sides of the box
        assert side - 1 <= min(w, h) and max(w, h) <= side + 1
    else:  # the star and the heart as they naturally fit
        assert 0.85 * side <= max(w, h) <= side + 1
    assert 0.25 * side * side < mask.sum() <= (side + 1) ** 2
    assert S.classify_shape(mask)[0] == shape


def test_triangle_apex_up():
    mask = nearest(render(Scene("black", (SceneObject("white", "triangle", "large", "center"),)))) == "white"
    assert mask[18:32].sum() < mask[32:46].sum() / 2


def test_unknown_shape_refused():
    with pytest.raises(ValueError):
        render(Scene("black", (SceneObject("white", "hexagon"),)))


# ----------------------------------------------------------------------------- captions and parser


def test_caption_grammar_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng, held_out="include")
        spec = parse_prompt(caption(scene))
        assert spec.background == scene.background
        assert spec.unknown_words == []
        assert [(o.color, o.shape, o.size, o.place) for o in spec.objects] == [
            (o.color, o.shape, o.size, o.place) for o in scene.objects
        ]


def test_dropped_parts_parse_as_free():
    rng = np.random.default_rng(1)
    seen_free = set()
    for _ in range(200):
        scene = sample_scene(rng)
        text = caption(scene, rng, drop=0.5)
        spec = parse_prompt(text)
        assert [(o.color, o.shape) for o in spec.objects] == [(o.color, o.shape) for o in scene.objects]
        for o, want in zip(spec.objects, scene.objects):
            assert o.size in (None, want.size) and o.place in (None, want.place)
            seen_free |= {"size"} if o.size is None else set()
            seen_free |= {"place"} if o.place is None else set()
        assert spec.background in (None, scene.background)
        seen_free |= {"background"} if spec.background is None else set()
    assert seen_free == {"size", "place", "background"}


@pytest.mark.parametrize(
    "prompt",
    [
        "a big red circle on the left on a blue background",
        "A LARGE Red Circle On The Left On A Blue Background.",
        "  a   large red   circle on the left    on a blue background  ",
        "a large red circle on the left on an blue background.",
    ],
)
def test_case_spaces_full_stop_and_synonyms_mean_nothing(prompt):
    spec = parse_prompt(prompt)
    assert spec.background == "blue"
    assert [(o.color, o.shape, o.size, o.place) for o in spec.objects] == [("red", "circle", "large", "left")]
    assert spec.unknown_words == []


@pytest.mark.parametrize("word", ["tiny", "little", "small"])
def test_small_synonyms(word):
    (obj,) = parse_prompt(f"a {word} green star at the top").objects
    assert (obj.size, obj.color, obj.shape, obj.place) == ("small", "green", "star", "top")


def test_article_an_and_two_objects():
    spec = parse_prompt("an orange square at the top and a tiny white heart at the bottom")
    assert [(o.color, o.shape, o.size, o.place) for o in spec.objects] == [
        ("orange", "square", None, "top"),
        ("white", "heart", "small", "bottom"),
    ]
    assert spec.background is None


def test_unknown_words_listed_in_order_without_repeats():
    spec = parse_prompt("a shiny red circle, very shiny, on a mauve background")
    assert spec.unknown_words == ["shiny", "very", "mauve"]
    assert [(o.color, o.shape) for o in spec.objects] == [("red", "circle")]
    assert spec.background is None  # "mauve" is no colour of this world


# ----------------------------------------------------------------------------- sampler


def test_held_out_pairs_excluded_and_required():
    rng = np.random.default_rng(2)
    for _ in range(1000):
        scene = sample_scene(rng, held_out="exclude")
        assert not any((o.color, o.shape) in S.HELD_OUT_PAIRS for o in scene.objects)
    for _ in range(500):
        scene = sample_scene(rng, held_out="require")
        assert any((o.color, o.shape) in S.HELD_OUT_PAIRS for o in scene.objects)
    included = [sample_scene(rng, held_out="include") for _ in range(1000)]
    assert any((o.color, o.shape) in S.HELD_OUT_PAIRS for s in included for o in s.objects)


def test_scene_invariants():
    rng = np.random.default_rng(3)
    counts = {1: 0, 2: 0}
    for _ in range(2000):
        scene = sample_scene(rng, held_out="include")
        counts[len(scene.objects)] += 1
        assert scene.background in S.COLORS
        for o in scene.objects:
            assert o.color != scene.background
            assert o.size in S.SIZES and o.place in S.PLACES and o.shape in S.SHAPES
            assert all(abs(v) <= S.JITTER for v in o.offset)
        if len(scene.objects) == 2:
            places = tuple(sorted(o.place for o in scene.objects))
            assert places in {("left", "right"), ("bottom", "top")}
    assert counts[1] > 500 and counts[2] > 500
    assert len(sample_scene(rng, num_objects=2).objects) == 2


def test_sampler_is_seeded():
    a = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    b = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


# ----------------------------------------------------------------------------- checker


def test_checker_rates_on_rendered_scenes():
    """The checker's targets: >= 99 % of rendered scenes match their own (partly dropped)
    captions, >= 95 % of one-word-changed captions are rejected."""
    rng = np.random.default_rng(1234)
    n, matched, changed, rejected = 300, 0, 0, 0
    misses, accepted = [], []
    for _ in range(n):
        scene = sample_scene(rng, held_out="include")
        img = render(scene)
        text = caption(scene, rng, drop=0.3)
        result = check(img, text)
        matched += result.ok
        if not result.ok:
            misses.append((text, result.reasons))
        for wrong in S.one_word_changes(scene, rng):
            changed += 1
            if check(img, wrong).ok:
                accepted.append((caption(scene), wrong))
            else:
                rejected += 1
    match_rate, reject_rate = matched / n, rejected / changed
    print(f"\nchecker: {match_rate:.1%} of {n} rendered scenes match their captions; "
          f"{reject_rate:.1%} of {changed} one-word changes rejected")
    assert match_rate >= 0.99, misses[:5]
    assert changed >= 1500
    assert reject_rate >= 0.95, accepted[:5]


def test_one_word_changes_are_valid_and_differ():
    rng = np.random.default_rng(5)
    for _ in range(100):
        scene = sample_scene(rng, held_out="include")
        truth = caption(scene)
        changes = S.one_word_changes(scene, rng)
        assert len(changes) == (4 + 1 if len(scene.objects) == 1 else 3 * 2 + 1)
        for c in changes:
            assert c != truth
            spec = parse_prompt(c)
            assert spec.background and spec.unknown_words == []
            assert all(o.color != spec.background for o in spec.objects)
            assert len(spec.objects) == len(scene.objects)


def test_checker_rejects_blank_background():
    blank = np.zeros((64, 64, 3), dtype=np.uint8) + np.array(PALETTE["green"], dtype=np.uint8)
    for prompt in ["a red circle", "a large red circle on the left", "a small blue star on a green background"]:
        result = check(blank, prompt)
        assert not result.ok and result.reasons
    assert check(blank, "").ok  # an empty prompt names nothing
    assert check(blank, "on a green background").ok
    assert not check(blank, "on a red background").ok


def test_checker_object_of_background_colour_is_not_the_background():
    # Nothing but a white picture: "a white square" (placeless) must not match the background.
    white = np.full((64, 64, 3), 240, dtype=np.uint8)
    assert not check(white, "a large white square").ok


def test_checker_reasons_name_what_is_wrong():
    scene = Scene("yellow", (SceneObject("red", "circle", "large", "left"),))
    img = render(scene)
    assert check(img, "a large red circle on the left on a yellow background").ok
    r = check(img, "a large red circle on the left on a blue background")
    assert not r.ok and any("background" in x for x in r.reasons)
    assert not check(img, "a large red circle on the right").ok
    assert not check(img, "a large blue circle").ok
    assert not check(img, "a large red star").ok
    assert not check(img, "a small red circle").ok
    assert not check(img, "a red circle and a red square").ok


def test_checker_two_objects_and_pil_input():
    scene = Scene(
        "white",
        (SceneObject("red", "star", "large", "left"), SceneObject("black", "heart", "small", "right")),
    )
    img = Image.fromarray(render(scene))
    assert check(img, "a large red star on the left and a small black heart on the right on a white background").ok
    assert check(img, "a black heart and a red star").ok  # order and places are free
    assert not check(img, "a large red star on the right and a small black heart on the left").ok


def test_checker_rejects_noise():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    assert not check(noise, "a large red circle in the center").ok


def test_checker_wants_the_outline_not_just_the_area():
    """A ring or an X of the right colour and area is no shape of this world."""
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - 31.5, xx - 31.5)
    ring = (r < 14) & (r >= 9)
    x_mark = (np.abs(np.abs(yy - 31.5) - np.abs(xx - 31.5)) < 4) & (np.abs(yy - 31.5) < 14) & (np.abs(xx - 31.5) < 14)
    for mask in (ring, x_mark):
        img = np.zeros((64, 64, 3), dtype=np.uint8) + np.array(PALETTE["yellow"], dtype=np.uint8)
        img[mask] = PALETTE["red"]
        for shape in S.SHAPES:
            assert not check(img, f"a large red {shape} in the center").ok
            assert not check(img, f"a red {shape}").ok


def test_evaluation_counts_one_and_two_object_prompts_apart():
    """evaluate.adherence: a stand-in engine that draws one-object prompts right (the rendered
    scene itself) and of two-object prompts only the first object (on another background)
    scores 100 % and 0 %, and half the objects of two pass when checked alone."""
    from dataclasses import replace
    from types import SimpleNamespace

    from playground.evaluation.evaluate import adherence
    from playground.settings import GenerationSettings
    from playground.world.shapes import COLORS, caption, render, sample_scene

    rng = np.random.default_rng(7)
    scenes = [sample_scene(rng, num_objects=1 + i % 2) for i in range(6)]
    truth = {caption(s): s for s in scenes}

    def progressive(prompt, **kwargs):
        scene = truth[prompt]  # two objects: only the first drawn, on a background no prompt names
        shown = scene if len(scene.objects) == 1 else replace(scene, objects=scene.objects[:1], background=other(scene))
        picture = render(shown)
        yield SimpleNamespace(image=lambda: picture, network_evaluations=1)

    def other(scene):
        return next(c for c in COLORS if c not in {scene.background} | {o.color for o in scene.objects})

    engine = SimpleNamespace(diffusion_progressive=progressive)
    result = adherence(engine, list(truth), GenerationSettings(), "diffusion")
    assert result["adherence"] == 0.5
    assert result["by_objects"] == {"1": {"adherence": 1.0, "n": 3}, "2": {"adherence": 0.0, "n": 3}}
    assert result["objects_of_two_alone"] == 0.5  # the first object of each passes, the second does not
    assert result["two_objects_places_swapped"] == 0.0

    def swapping(prompt, **kwargs):  # two objects drawn, each at the other's place
        scene = truth[prompt]
        if len(scene.objects) == 2:
            a, b = scene.objects
            scene = replace(scene, objects=(replace(a, place=b.place), replace(b, place=a.place)))
        picture = render(scene)
        yield SimpleNamespace(image=lambda: picture, network_evaluations=1)

    result = adherence(SimpleNamespace(diffusion_progressive=swapping), list(truth), GenerationSettings(), "diffusion")
    assert result["by_objects"]["2"]["adherence"] == 0.0
    assert result["two_objects_places_swapped"] == 1.0


def _components_by_visiting(mask: np.ndarray) -> list[np.ndarray]:
    """The plain way: visit every pixel's 8 neighbours from each unlabelled pixel (raster order)."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=int)
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        labels[y0, x0] = len(found) + 1
        todo = [(y0, x0)]
        while todo:
            y, x = todo.pop()
            for ny in range(max(y - 1, 0), min(y + 2, h)):
                for nx in range(max(x - 1, 0), min(x + 2, w)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = labels[y0, x0]
                        todo.append((ny, nx))
        found.append(labels == len(found) + 1)
    return sorted(found, key=lambda m: -int(m.sum()))


@pytest.mark.parametrize("density", [0.1, 0.45, 0.6])
def test_components_match_visiting_every_pixel(density):
    rng = np.random.default_rng(int(density * 100))
    masks = [rng.random((64, 64)) < density for _ in range(5)]
    masks += [S.nearest_color_index(render(sample_scene(rng))) == c for c in range(4)]
    masks += [np.zeros((64, 64), bool), np.ones((64, 64), bool), np.eye(64, dtype=bool)[::-1]]
    snake = np.zeros((64, 64), bool)  # one path back and forth across the picture: the longest component
    snake[::2] = True
    snake[1::4, -1] = snake[3::4, 0] = True
    masks += [snake, snake[::-1, ::-1].copy()]
    for mask in masks:
        got, want = S.components(mask), _components_by_visiting(mask)
        assert len(got) == len(want)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
