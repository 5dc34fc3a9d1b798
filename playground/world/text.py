"""Prompt encoding shared by both embedded models: a word-level Hugging Face tokenizer.

The tokenizer knows exactly the shapes world's words (`vocabulary.VOCABULARY`). A prompt is
normalised (lower case, punctuation removed), words the tokenizer does not know are *reported*
(never silently dropped), and the known words become a fixed-length, left-padded id sequence:

    [PAD, ..., PAD, BOS, w1, ..., wn]          (MAX_PROMPT_TOKENS ids)

An empty prompt (or one with no known word) is a real request: unconditional generation.

A causal reader (the autoregressive model; CLIP's text encoder) sees each word with only the
words before it, so a model can be given each object's place first: "a red square on the left"
becomes "on the left a red square" (`place_first`), and "red" already knows where it goes. The
words are the user's; only their order changes. Each model's config says which order it was
trained on (`prompt_order`).

    python -m playground.world.text "a big red star, please"
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from playground.world.shapes import normalize_prompt
from playground.world.vocabulary import PLACE_PHRASES, SIZE_SYNONYMS, VOCABULARY

PAD, UNK, BOS = "[PAD]", "[UNK]", "[BOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS)
MAX_PROMPT_TOKENS = 24  # BOS + up to 23 words; the grammar's longest caption has 19
MAX_PROMPT_CHARS = 1000  # longer prompts are refused by the front ends (settings.validate_prompt)
# Words that mean the same are given to the models as one word (training captions use these).
CANONICAL = {**SIZE_SYNONYMS, "an": "a"}


_PLACES = [phrase.split() for phrase in PLACE_PHRASES.values()]
PROMPT_ORDERS = ("as_written", "place_first")  # how a model's prompt words are ordered (`prompt_order`)


def place_first(words: list[str]) -> list[str]:
    """Each object's place phrase moved to the front of its object (objects are split at "and");
    everything else keeps its order:
    a small red square on the left and a blue star on the right on a white background ->
    on the left a small red square and on the right a blue star on a white background"""
    out: list[str] = []
    segment: list[str] = []

    def flush() -> None:
        for i in range(len(segment) - 2):
            if segment[i : i + 3] in _PLACES:
                segment[:] = segment[i : i + 3] + segment[:i] + segment[i + 3 :]
                break
        out.extend(segment)
        segment.clear()

    for word in words:
        if word == "and":
            flush()
            out.append(word)
        else:
            segment.append(word)
    flush()
    return out


def prompt_order(config) -> str:
    """The word order a saved model was trained on, from its config's `prompt_order`:
    "place_first", or "as_written" (also for models saved before the field)."""
    return getattr(config, "prompt_order", "as_written")


def build_tokenizer() -> Tokenizer:
    """The word-level tokenizer of the shapes world (ids: specials first, then words)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + VOCABULARY)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def save_tokenizer(folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Written aside, then renamed: training stages run side by side each write it, and read it back.
    partial = folder / f"tokenizer.json.{os.getpid()}.tmp"
    build_tokenizer().save(str(partial))
    partial.replace(folder / "tokenizer.json")
    return folder


@dataclass
class EncodedPrompt:
    """A prompt as the models see it, and what was left out of it."""

    prompt: str
    input_ids: list[int]  # (MAX_PROMPT_TOKENS,)
    words: list[str]  # the known words used, in order
    unknown_words: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def unconditional(self) -> bool:
        return not self.words

    def message(self) -> str:
        """One line for people: what happened to their prompt (empty when nothing did)."""
        notes = []
        if self.unknown_words:
            notes.append("ignored unknown words: " + ", ".join(self.unknown_words))
        if self.truncated:
            notes.append(f"prompt cut to its first {MAX_PROMPT_TOKENS - 1} known words")
        if self.unconditional:
            notes.append("no known words: unconditional generation")
        return "; ".join(notes)


class PromptEncoder:
    """Turns prompts into fixed-length id sequences with the saved `tokenizer.json`."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.vocab = tokenizer.get_vocab()
        self.pad_id, self.unk_id, self.bos_id = (self.vocab[t] for t in SPECIAL_TOKENS)
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "PromptEncoder":
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        return cls(Tokenizer.from_file(str(path)))

    def __call__(self, prompt: str | None, order: str = "as_written") -> EncodedPrompt:
        """order: "as_written", or "place_first" (each object's place before it, `place_first`)."""
        if order not in PROMPT_ORDERS:
            raise ValueError(f"unknown prompt order {order!r}; one of {', '.join(PROMPT_ORDERS)}")
        prompt = prompt or ""
        words = normalize_prompt(prompt)
        known = [CANONICAL.get(w, w) for w in words if w in self.vocab and w not in SPECIAL_TOKENS]
        if order == "place_first":
            known = place_first(known)
        unknown = list(dict.fromkeys(w for w in words if w not in self.vocab or w in SPECIAL_TOKENS))
        truncated = len(known) > MAX_PROMPT_TOKENS - 1
        known = known[: MAX_PROMPT_TOKENS - 1]
        ids = self.tokenizer.encode(" ".join(known)).ids if known else []
        ids = [self.bos_id] + ids
        ids = [self.pad_id] * (MAX_PROMPT_TOKENS - len(ids)) + ids
        return EncodedPrompt(prompt, ids, known, unknown, truncated)


if __name__ == "__main__":
    enc = PromptEncoder(build_tokenizer())(" ".join(sys.argv[1:]))
    print(enc.input_ids, enc.message() or "all words known")
