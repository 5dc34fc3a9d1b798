"""The shapes world's words and what they mean (playground/world/SPEC.md): its colours and their
RGB values, shapes, sizes in pixels, places and how a prompt says them, the colour-shape pairs
held out of training, and every word a prompt may use.

Plain data, no imports: the renderer, parser and checker (shapes.py) and the tokenizer (text.py)
read it.
"""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "orange": (245, 140, 30),
    "yellow": (240, 210, 40),
    "green": (60, 170, 75),
    "blue": (40, 100, 220),
    "purple": (140, 70, 190),
    "white": (240, 240, 240),
    "black": (30, 30, 30),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star", "heart")
SIZES = {"small": 16, "large": 28}
SIZE_SYNONYMS = {"big": "large", "tiny": "small", "little": "small"}
PLACES = {"left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48), "center": (32, 32)}
PLACE_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
OPPOSITE_PAIRS = (("left", "right"), ("top", "bottom"))
HELD_OUT_PAIRS = frozenset(
    {("purple", "star"), ("orange", "heart"), ("green", "triangle"), ("white", "circle"), ("blue", "square")}
)
JITTER = 2

# Every word a prompt of this world may use (the tokenizer's vocabulary).
VOCABULARY = tuple(
    sorted(
        set(COLORS)
        | set(SHAPES)
        | set(SIZES)
        | set(SIZE_SYNONYMS)
        | set(" ".join(PLACE_PHRASES.values()).split())
        | {"a", "an", "and", "background"}
    )
)
