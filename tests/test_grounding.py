"""Token grounding (playground/grounding.py): which words name each object, where each object
is, the recorded cross-attention, and the loss that ties them together. No trained model."""

import numpy as np
import torch

from playground.autoencoder.model import object_cells
from playground.training.grounding import (
    AttentionRecorder,
    grounding_loss,
    object_masks,
    object_token_positions,
    reading_loss,
)
from playground.world.shapes import Scene, SceneObject, render
from playground.world.text import place_first

TWO = "a small yellow circle at the top and a large blue star at the bottom on a purple background"


def test_object_token_positions_as_written_and_place_first():
    words = ["[PAD]", "[PAD]", "[BOS]"] + TWO.split()
    assert [[words[i] for i in o] for o in object_token_positions(words)] == [["yellow", "circle"], ["blue", "star"]]
    assert object_token_positions(words)[0] == [5, 6]  # positions in the padded sequence
    reordered = ["[BOS]"] + place_first(TWO.split())
    assert [[reordered[i] for i in o] for o in object_token_positions(reordered)] == [["yellow", "circle"], ["blue", "star"]]
    # The background's colour is not an object's, even when it is the only colour named there.
    same = "a green heart and a green heart on a green background".split()
    assert [[same[i] for i in o] for o in object_token_positions(same)] == [["green", "heart"], ["green", "heart"]]
    assert object_token_positions(same)[1] == [5, 6]
    assert object_token_positions(["[PAD]", "[BOS]"]) == []  # an empty prompt names no object


def test_object_masks_are_each_object_alone():
    scene = Scene("white", (SceneObject("red", "circle", "large", "left", (2, -1)), SceneObject("blue", "star", "small", "right", (0, 0))))
    masks = object_masks(scene, 16)  # (2, 16, 16)
    assert masks.shape == (2, 16, 16)
    assert not (masks[0] * masks[1]).any()  # apart
    assert torch.equal(masks.amax(0), object_cells(render(scene)[None], 16)[0, 0])  # together: every object cell
    columns = torch.arange(16.0)
    assert (masks[0] * columns).sum() / masks[0].sum() < 8 < (masks[1] * columns).sum() / masks[1].sum()  # left / right
    assert masks[0][:, 8:].any()  # a large left object with its jitter reaches past the middle: no half-split would do
    assert masks[1].sum() < masks[0].sum()  # small star, large circle


def test_the_recorder_attends_as_diffusers_does_and_keeps_every_cross_attention_map(tiny_engine):
    unet = tiny_engine.diffusion.unet
    torch.manual_seed(0)
    x, t, context = torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 24, unet.config.cross_attention_dim)
    pooled = context[:, -1]
    before = unet.attn_processors
    try:
        with torch.no_grad():
            expected = unet(x, t, encoder_hidden_states=context, class_labels=pooled).sample
            recorder = AttentionRecorder.attach(unet)
            got = unet(x, t, encoder_hidden_states=context, class_labels=pooled).sample
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        cross = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
        assert len(recorder.maps) == len(cross) > 0
        sides = set()
        for probs in recorder.maps:  # (B, heads, H*W, T)
            assert probs.shape[0] == 2 and probs.shape[-1] == 24
            torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
            sides.add(int(probs.shape[2] ** 0.5))
        assert sides == {16, 8}
        recorder.clear()
        assert recorder.maps == []
    finally:
        unet.set_attn_processor(before)


def test_grounding_loss_is_the_share_of_a_words_attention_outside_its_object():
    g, tokens = 4, 5
    masks = torch.zeros(1, g, g)
    masks[0, :2, :2] = 1  # the object: 4 of 16 cells
    positions = [[[1, 2]]]  # its two words
    inside = torch.zeros(1, 1, g * g, tokens)
    inside[0, 0, :, 0] = 1.0  # every cell reads word 0 ...
    inside[0, 0, [0, 1, 4, 5], 0] = 0.0
    inside[0, 0, [0, 1, 4, 5], 1] = 0.5  # ... but the object's cells read the object's words
    inside[0, 0, [0, 1, 4, 5], 2] = 0.5
    assert grounding_loss([inside], positions, [masks]).item() == 0.0
    uniform = torch.full((1, 1, g * g, tokens), 1 / tokens)
    np.testing.assert_allclose(grounding_loss([uniform], positions, [masks]).item(), 1 - 4 / 16)
    # Maps at a coarser grid see the mask max-pooled to it; prompts without objects are skipped.
    coarse = torch.full((2, 3, 4, tokens), 1 / tokens)  # (B, heads, 2*2, T)
    np.testing.assert_allclose(grounding_loss([coarse], positions + [[]], [masks, torch.zeros(0, g, g)]).item(), 1 - 1 / 4)
    assert grounding_loss([uniform], [[]], [torch.zeros(0, g, g)]).item() == 0.0


def test_reading_loss_is_the_share_of_an_object_cells_attention_on_other_words():
    g, tokens = 4, 5
    masks = torch.zeros(1, g, g)
    masks[0, :2, :2] = 1
    positions = [[[1, 2]]]
    uniform = torch.full((1, 1, g * g, tokens), 1 / tokens)
    np.testing.assert_allclose(reading_loss([uniform], positions, [masks]).item(), 1 - 2 / tokens)
    # The object's cells read only its words: no loss, whatever the other cells read. (A map
    # that grounding_loss calls perfect but whose object cells read the object little is not.)
    reads = uniform.clone()
    reads[0, 0, [0, 1, 4, 5]] = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0])
    assert reading_loss([reads], positions, [masks]).item() == 0.0
    faint = torch.zeros(1, 1, g * g, tokens)
    faint[..., 0] = 1.0
    faint[0, 0, [0, 1, 4, 5]] = torch.tensor([0.98, 0.01, 0.01, 0.0, 0.0])
    assert grounding_loss([faint], positions, [masks]).item() == 0.0
    np.testing.assert_allclose(reading_loss([faint], positions, [masks]).item(), 0.98, rtol=1e-6)
    assert reading_loss([uniform], [[]], [torch.zeros(0, g, g)]).item() == 0.0


def test_grounding_loss_moves_the_attention_onto_the_object(tiny_engine):
    """A few optimiser steps on the loss alone, on the tiny random UNet: the words' attention
    share inside the object rises (the loss reaches the queries and keys)."""
    import copy

    unet = copy.deepcopy(tiny_engine.diffusion.unet)
    recorder = AttentionRecorder.attach(unet)
    scene = Scene("white", (SceneObject("red", "square", "large", "left", (0, 0)),))
    masks = [object_masks(scene, 16)]
    torch.manual_seed(0)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    context = torch.randn(1, 24, unet.config.cross_attention_dim)
    positions = [[[20, 21]]]
    opt = torch.optim.Adam(unet.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        recorder.clear()
        unet(x, t, encoder_hidden_states=context, class_labels=context[:, -1])
        loss = grounding_loss(recorder.maps, positions, masks)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0] - 0.2, losses


def test_cell_attributes_name_each_object_cell_by_its_shape_and_colour():
    from playground.training.grounding import cell_attributes
    from playground.world.vocabulary import COLORS, SHAPES

    scene = Scene("white", (SceneObject("red", "circle", "large", "left"), SceneObject("blue", "star", "small", "right")))
    masks = object_masks(scene, 16)  # (2, 16, 16)
    shape, colour = cell_attributes(scene, masks)  # (256,), (256,)
    assert shape.shape == colour.shape == (256,)
    left, right = masks[0].flatten() > 0, masks[1].flatten() > 0
    assert (shape[left] == 1 + SHAPES.index("circle")).all() and (colour[left] == 1 + COLORS.index("red")).all()
    assert (shape[right] == 1 + SHAPES.index("star")).all() and (colour[right] == 1 + COLORS.index("blue")).all()
    background = ~(left | right)
    assert background.any() and (shape[background] == 0).all() and (colour[background] == 0).all()


def test_scene_cells_render_each_scene_once_and_stack_a_batchs_attributes(monkeypatch):
    from playground.training import grounding

    scenes = [Scene("white", (SceneObject("red", "circle", "large", "left"),)),
              Scene("yellow", (SceneObject("green", "heart", "small", "top"), SceneObject("blue", "star", "small", "bottom")))]
    rendered = []
    real = grounding.object_masks
    monkeypatch.setattr(grounding, "object_masks", lambda scene, grid: rendered.append(scene) or real(scene, grid))
    cells = grounding.SceneCells(scenes, 16)
    shape, colour = cells.attributes([1, 0, 1], "cpu")  # (3, 256) each
    masks = cells.masks([0, 1], "cpu")
    assert rendered == [scenes[1], scenes[0]]  # once per scene, in the order first asked for, however often
    assert shape.shape == colour.shape == (3, 256) and torch.equal(shape[0], shape[2])
    assert torch.equal(shape[1], grounding.cell_attributes(scenes[0], real(scenes[0], 16))[0])
    assert [m.shape for m in masks] == [(1, 16, 16), (2, 16, 16)] and torch.equal(masks[1], real(scenes[1], 16))


def test_conditional_rows_skip_empty_captions_and_probe_loss_is_low_when_the_probes_name_the_cells():
    from playground.training.grounding import AttributeProbes, conditional_rows

    assert conditional_rows(torch.tensor([[0, 0, 2], [0, 2, 7], [2, 5, 6]]), bos_id=2) == [1, 2]
    probes = AttributeProbes(4)
    shape, colour = torch.tensor([[0, 3]]), torch.tensor([[0, 5]])
    hidden = torch.zeros(1, 2, 4)  # (B, N, C)
    with torch.no_grad():
        for layer, target in ((probes.shape, shape), (probes.colour, colour)):
            layer.weight.zero_(), layer.bias.zero_()
            hidden[0, :, 0] = torch.tensor([0.0, 1.0])
            layer.bias[0] = 10.0  # cell 0 (hidden 0): class 0
            layer.weight[target[0, 1], 0] = 20.0  # cell 1 (hidden 1): its class, 20 against 10
    assert probes.loss(hidden, shape, colour) < 1e-3 < probes.loss(hidden, colour.clamp(max=5), shape)
