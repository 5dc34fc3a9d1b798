"""Prompt encoding: the saved word-level tokenizer and what happens to each prompt."""

import json

import pytest

from playground.world.shapes import VOCABULARY
from playground.world.text import (
    BOS,
    MAX_PROMPT_TOKENS,
    PAD,
    SPECIAL_TOKENS,
    PromptEncoder,
    build_tokenizer,
    place_first,
    save_tokenizer,
)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = save_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return PromptEncoder.from_pretrained(folder)


def words_of(encoder, ids):
    inv = {i: t for t, i in encoder.vocab.items()}
    return [inv[i] for i in ids]


def test_tokenizer_json_round_trip(tmp_path, encoder):
    folder = save_tokenizer(tmp_path / "tok")
    data = json.loads((folder / "tokenizer.json").read_text())
    assert data["model"]["type"] == "WordLevel"
    loaded = PromptEncoder.from_pretrained(folder)
    built = PromptEncoder(build_tokenizer())
    assert loaded.vocab == built.vocab
    assert set(loaded.vocab) == set(SPECIAL_TOKENS) | set(VOCABULARY)
    assert loaded.vocab_size == len(SPECIAL_TOKENS) + len(VOCABULARY)
    assert (loaded.pad_id, loaded.bos_id) == (loaded.vocab[PAD], loaded.vocab[BOS])
    prompt = "a large red circle on the left and a small blue star on the right on a yellow background"
    assert loaded(prompt).input_ids == built(prompt).input_ids == encoder(prompt).input_ids


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        PromptEncoder.from_pretrained(tmp_path)


def test_fixed_length_left_padding(encoder):
    enc = encoder("a red circle")
    ids = enc.input_ids
    assert len(ids) == MAX_PROMPT_TOKENS
    assert words_of(encoder, ids[-4:]) == [BOS, "a", "red", "circle"]
    assert ids[:-4] == [encoder.pad_id] * (MAX_PROMPT_TOKENS - 4)
    assert enc.words == ["a", "red", "circle"]
    assert not enc.unconditional and not enc.truncated and enc.message() == ""
    longest = "a large red circle on the left and a small blue star on the right on a yellow background"
    ids = encoder(longest).input_ids
    assert len(ids) == MAX_PROMPT_TOKENS and words_of(encoder, ids).count(PAD) == MAX_PROMPT_TOKENS - 1 - 19


def test_unknown_words_reported_in_order_not_silently_dropped(encoder):
    enc = encoder("a shiny red Circle, very SHINY, please!")
    assert enc.unknown_words == ["shiny", "very", "please"]
    assert enc.words == ["a", "red", "circle"]
    assert enc.input_ids == encoder("a red circle").input_ids
    msg = enc.message()
    assert "shiny" in msg and "very" in msg and "please" in msg
    assert msg.index("shiny") < msg.index("very") < msg.index("please")


def test_special_tokens_typed_in_a_prompt_are_words_not_tokens(encoder):
    enc = encoder("[BOS] [PAD] a red circle")
    assert "[BOS]" not in enc.words and "[PAD]" not in enc.words
    assert enc.unknown_words == ["bos", "pad"]
    assert enc.input_ids == encoder("a red circle").input_ids


@pytest.mark.parametrize("prompt", ["", None, "   ", "...", "zorb blargh"])
def test_empty_prompt_is_unconditional_with_a_message(encoder, prompt):
    enc = encoder(prompt)
    assert enc.unconditional and enc.words == []
    assert enc.input_ids == [encoder.pad_id] * (MAX_PROMPT_TOKENS - 1) + [encoder.bos_id]
    assert "unconditional" in enc.message()


def test_only_unknown_words_lists_them_too(encoder):
    enc = encoder("zorb blargh zorb")
    assert enc.unknown_words == ["zorb", "blargh"]
    assert "zorb" in enc.message() and "unconditional" in enc.message()


@pytest.mark.parametrize(
    "variant,canonical",
    [
        ("a big red circle", "a large red circle"),
        ("a tiny red circle", "a small red circle"),
        ("a little red circle", "a small red circle"),
        ("an orange star", "a orange star"),
        ("A BIG Red Circle.", "a large red circle"),
        ("  a   big red   circle  ", "a large red circle"),
    ],
)
def test_synonyms_case_and_punctuation_canonicalised(encoder, variant, canonical):
    enc = encoder(variant)
    assert enc.input_ids == encoder(canonical).input_ids
    assert enc.unknown_words == [] and enc.message() == ""


def test_very_long_prompt_truncated_and_flagged(encoder):
    prompt = " ".join(["a red circle"] * 20)  # 60 known words
    enc = encoder(prompt)
    assert enc.truncated
    assert len(enc.input_ids) == MAX_PROMPT_TOKENS
    assert len(enc.words) == MAX_PROMPT_TOKENS - 1
    assert enc.input_ids[0] == encoder.bos_id and encoder.pad_id not in enc.input_ids
    assert "cut" in enc.message()
    exact = encoder(" ".join(["a"] * (MAX_PROMPT_TOKENS - 1)))
    assert not exact.truncated and exact.input_ids[0] == encoder.bos_id


@pytest.mark.parametrize(
    "written, model_order",
    [
        ("a small red square on the left and a blue star on the right on a white background",
         "on the left a small red square and on the right a blue star on a white background"),
        ("a red circle at the top", "at the top a red circle"),
        ("a red circle on a white background", "a red circle on a white background"),  # no place: unchanged
        ("a red circle and a blue star in the center", "a red circle and in the center a blue star"),
        ("", ""),
        ("on the left", "on the left"),
    ],
)
def test_place_first_moves_each_objects_place_before_it(written, model_order):
    assert " ".join(place_first(written.split())) == model_order


def test_the_encoder_orders_words_as_asked_and_keeps_the_users_words(encoder):
    prompt = "a big red star on the right and a tiny blue heart on the left"
    as_written, placed = encoder(prompt), encoder(prompt, order="place_first")
    assert placed.words == place_first(as_written.words)
    assert placed.words[:3] == ["on", "the", "right"]
    assert sorted(placed.input_ids) == sorted(as_written.input_ids)  # the same words, reordered
    assert placed.input_ids != as_written.input_ids
    assert placed.unknown_words == as_written.unknown_words == []
    with pytest.raises(ValueError, match="prompt order"):
        encoder(prompt, order="backwards")
