"""The words the playground shows next to the pictures: explanations, the comparison table,
the vocabulary the models know and the example prompts.

Plain text and the shapes world's word lists only (no torch), so that it can be read and
edited without knowing the rest of the code. app.py places these texts on the page.
"""

from __future__ import annotations

from playground.settings import GenerationSettings
from playground.world.vocabulary import COLORS, HELD_OUT_PAIRS, PLACE_PHRASES, SHAPES, SIZE_SYNONYMS, SIZES

INTRO = """\
# One prompt, two ways to paint it
Type a prompt and press **Generate**: on the left a **diffusion** model turns noise into a
picture, on the right an **autoregressive** model writes the picture token by token. Both paint
64 × 64 pictures of the same little world through the same autoencoder, so the two are directly
comparable. When both are done, drag the slider to scrub back through the two runs together.
"""

REAL_MODELS_NOTE = """\
**Real models are loaded too:** a menu above a panel picks which model paints it. A real model
paints at its own size through its own autoencoder and knows far more words than the little
world's; the word list, the example prompts and the *16 × 16 grid* of the explanations below are
about the embedded models.
"""

DIFFUSION_TEXT = """\
**Diffusion.** The run starts from random noise (chosen by the seed). At every step the network
looks at the *whole* noisy picture and predicts the noise in it; the scheduler removes part of
that noise. *Noisy state* is where the run is now; *predicted clean picture* is the network's
current guess of the end result: blurry at first, sharp at the end. Every step reworks every
pixel, so early mistakes can still be fixed.
"""

AUTOREGRESSIVE_TEXT = """\
**Autoregressive.** The picture is a 16 × 16 grid of tokens: each token is one entry of the
autoencoder's codebook, a small patch of picture. The transformer writes them one at a time,
left to right and top to bottom, each drawn from a probability distribution that depends on
the prompt and on every token written so far. Hatched cells are not written yet; the magenta box
is the cell just written; the table shows the candidates the model considered for it. A written
token is never changed.
"""

EDIT_INTRO = """\
Give a picture — **upload** one, **draw** one (the brush has the eight colours the models know),
or press **Edit this** under a result — and a new prompt that describes the *whole* picture you
want (*a large blue circle on the left on a yellow background*, not *make it blue*). Optionally
**paint a region** on the second canvas: only that part is repainted. Both models then edit it,
live, each in its own way. Any picture is made 64 × 64 RGB first.
"""

EDIT_DIFFUSION_TEXT = """\
**Diffusion edits** by noising the picture part of the way and denoising it under the new
prompt: *strength* is how far (1 = all the way to pure noise: the picture is forgotten; 0.3 =
only fine detail can change). With a painted region, after every step the latent *outside* the
region is put back: the picture's own latent, noised to that step's level — so the outside stays
as it was and the inside is repainted to fit it, on all sides.
"""

EDIT_AUTOREGRESSIVE_TEXT = """\
**Autoregressive edits** by continuing: the picture becomes its 16 × 16 tokens, the model is
given the *kept* ones as if it had written them, and writes the rest (inside the cyan outline)
in raster order. Without a region it keeps the first *rows*; with a region it walks the grid,
copying each token outside the region and writing each one inside. **It sees only what lies
above and to the left of the cell it writes — never what lies below or to the right**, so a
repainted region often does not join up with the picture under it and right of it.
"""

COMPARISON_TABLE = f"""\
| | Diffusion (left) | Autoregressive (right) |
|---|---|---|
| Reads the prompt | through a separate text encoder, looked up by every part of the picture through cross-attention | as the first tokens of its own sequence, each word seeing only the words before it (so here each object's place is put first: *on the left a red square*) |
| Two objects | a small model cannot easily tell which words go where on its own: it swaps the two or draws one twice; regional prompts let each object's words steer its half | reading places first, it binds well on its own; regional prompts lift two-object prompts a little, but four token streams instead of two cost about a third more time, so they are off by default |
| One step computes | a noise estimate for the whole picture at once | a probability for every codebook entry, for the next cell only |
| Order | everywhere at once, coarse to fine | cell by cell, row by row |
| Network evaluations per picture | one per step ({GenerationSettings.num_inference_steps} here by default) | one per token (256 here) |
| The picture is | a 16 × 16 × 4 continuous latent | 256 tokens here; Janus-Pro: 576; Nano Banana: about 1,290 |
| Randomness | the starting noise | each token is sampled (temperature, top-k, top-p) |
| Can it change its mind? | yes, every step | no, a written token stays |
| Editing a picture | noise it part of the way, denoise under the new prompt; a region is repainted seeing the picture all round it | keep its tokens and write the rest, in raster order: a cell sees only what lies above and to its left |
"""

VERDICT_TEXT = """\
**Does the picture match?** Under each finished picture the shapes world's checker judges it
against the prompt, part by part: each object's colour, shape, size and place, and the
background (✓ right, ✗ wrong, with what the picture shows instead). It reads the picture's
pixels, not the model: the same rules judge both panels. One picture is one draw of chance —
the **Experiment** tab counts many.
"""

EXPERIMENT_INTRO = """\
**One prompt, many seeds.** Each seed is another starting noise (diffusion) or another draw of
each token (autoregressive). Both models paint the prompt once per seed; the checker marks each
picture ✓ or ✗ (green or red in the report's grids) and the table counts how many match. The
embedded models always paint here, with the Settings below; the seeds are *seed*, *seed* + 1, …
"""

EXPERIMENT_TEXT = """\
**Reading the table.** *match* is the share of pictures the checker accepts; the *95 % interval*
(Wilson) is where the true share plausibly lies: with 8 seeds it is wide (4 of 8 is 22 %–78 %),
so two shares whose intervals overlap are not yet shown to differ — add seeds. The columns of
*parts* say *what* goes wrong. *s / picture* and *evaluations / picture* are the cost: diffusion
calls its network once per step, the autoregressive model once per token.

**A claim to test:** *autoregressive models place things more precisely; diffusion is more
forgiving.* Writing token by token after reading where each object goes, the autoregressive
model should get *place* right more often; diffusion reworks the whole picture at every step
and may get close on more seeds without being exactly right. Try a two-object prompt
(*a large red circle on the left and a small blue star on the right*), a held-out pair
(*a purple star*), and set the Settings' regional prompts to 0: does the claim hold here?
"""

SETTINGS_TEXT = """\
The seed fixes all randomness: the same prompt, seed and settings always give the same pictures.
*Guidance* pushes a run towards the prompt (1 = no guidance). *Temperature*, *top-k* and *top-p*
control how adventurously the autoregressive model picks each token (temperature 0 = always the
most likely token; top-k 0 and top-p 1 = no filtering).
*Regional prompts* (0 to 1) are for two objects at opposite places ("… on the left and … on the
right"). The small diffusion model, left to itself, often swaps the two or draws one twice: the
prompt reaches its picture as one code, with nothing that says which words belong where. With
regional prompts each object's own words ("a red circle on the left on a yellow background")
also steer its half of the picture. Set it to 0 to watch the model bind on its own. The
autoregressive model reads each object's place before its colour and shape, and binds well
without help (its regional prompts are off by default; try them).
"""

# (prompt, seed) pairs; each prompt uses only colour-shape pairs seen in training.
EXAMPLES = [
    ["a large red circle on the left", 0],
    ["a small blue star at the top on a yellow background", 1],
    ["a yellow heart in the center on a black background", 2],
    ["a large green square on the right and a small purple circle on the left", 3],
]

# Colour-shape pairs that were never in the training pictures (vocabulary.HELD_OUT_PAIRS): can
# the models combine a colour and a shape they only learned separately?
HELD_OUT = [
    ("a purple star", ("purple", "star")),
    ("a large orange heart on the right", ("orange", "heart")),
    ("a small green triangle at the bottom on a white background", ("green", "triangle")),
]
HELD_OUT_EXAMPLES = [[prompt, 0] for prompt, _ in HELD_OUT]
HELD_OUT_LABELS = [f"{prompt}  (held out: {colour} {shape})" for prompt, (colour, shape) in HELD_OUT]


# Edit tab: (picture, drawn from this caption; new prompt; what changes). One attribute each, so
# that the two ways of editing show their difference: the autoregressive model keeps the top
# rows and cannot move the triangle down past them; diffusion at a high strength can.
EDIT_EXAMPLES = [
    ("a large red circle on the left on a yellow background", "a large blue circle on the left on a yellow background", "colour: red → blue"),
    ("a small green square at the top on a black background", "a small green square at the top on a white background", "background: black → white"),
    ("a large orange star in the center on a blue background", "a large orange heart in the center on a blue background", "shape: star → heart"),
    ("a large yellow triangle at the top on a purple background", "a large yellow triangle at the bottom on a purple background", "place: top → bottom"),
]


BRANCH_TEXT = """\
**What if?** The branch keeps everything up to the slider's step and changes only the chance
from there on. *Diffusion* keeps its guess of the clean picture at that step and adds fresh
noise (the new seed's) back to that step's level: branched at step 2 the picture can change
completely, at step 10 barely — the layout is decided in the first steps, later steps only
sharpen it. *Autoregressive* keeps every token written so far (outside the outline) and writes
the rest with the new seed: the kept rows never change, and whatever it writes must fit them —
each token fixes the picture so far for good.
"""

ATTENTION_TEXT = """\
**Where is this word attended?** Choose a word of the prompt and both pictures glow where the
model looks at it: bright is much attention, dark little. *Diffusion* reads the prompt through
*cross-attention*: at every step each cell of the 16 × 16 latent asks every prompt word how much
it matters there. The map is that answer for your word, averaged over heads and layers, at the
step shown — early, while the picture is mostly noise, it is vague; as the layout settles it
gathers on the object the word belongs to. *Autoregressive* keeps the prompt at the start of its
one sequence: each cell, when written, looks back at all of it. The map is how much each written
cell looked at your word (unwritten cells stay hatched). A cell written early often looks at
*every* word hard, because it must decide the layout; later cells lean on the cells above them.
Maps cost extra computing, so while a run streams the diffusion map is refreshed only now and
then (the status line says from which step); the finished pictures and the slider show each
step's own map.
"""

ORDER_INFO = "raster: one cell a step, row by row · random: a few random cells a step · confidence: the surest cells first"

ORDERS_TEXT = """\
**Orders.** The codes need not be written row by row. *Raster* (a GPT-2) writes one cell a step,
left to right, top to bottom: 256 network evaluations, each cheap because it remembers the cells
before (its KV cache), and each cell sees only the cells above and to its left. *Random* and
*confidence* come from a second model (a BERT trained MaskGIT-style: fill in the hidden cells of a
grid) that sees the whole grid both ways at every step, so it can write any cells in any order,
several at once. *Random* writes an even share of randomly chosen cells each step (32 steps).
*Confidence* guesses every hidden cell each step and keeps the ones it is surest of: a few at first
— usually the plain background, whose code is easy — and more and more as the picture settles
(12 steps, about as many as diffusion's). Watch the magenta boxes: where does each order start,
and how many evaluations does each need? Fewer steps are faster, but cells written in the same
step cannot see each other's choice: too few and neighbours disagree.
"""


def vocabulary_markdown() -> str:
    """The words the models know, grouped, and how a prompt is put together."""
    sizes = ", ".join(SIZES) + " (also " + ", ".join(SIZE_SYNONYMS) + ")"
    places = ", ".join(f"*{p}*" for p in PLACE_PHRASES.values())
    held_out = ", ".join(f"{c} {s}" for c, s in sorted(HELD_OUT_PAIRS))
    return (
        f"- **Colours:** {', '.join(COLORS)}\n"
        f"- **Shapes:** {', '.join(SHAPES)}\n"
        f"- **Sizes:** {sizes}\n"
        f"- **Places:** {places}\n"
        "- **Glue:** a, an, and, *on a … background*\n\n"
        "A prompt reads like *a [size] colour shape [place] [and a …] [on a colour background]*, "
        "for example *a small blue star at the top on a yellow background*. Other words are "
        f"ignored. Never seen in training (held out): {held_out}."
    )
