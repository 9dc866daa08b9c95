"""The offline CLIP-format tokenizer behind every tiny model."""

from __future__ import annotations

from transformers import CLIPTokenizer

from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer


def test_round_trips_through_save_pretrained(tmp_path):
    tokenizer = build_tiny_clip_tokenizer()
    text = "a photo of a woman wearing a red striped hoodie, night under streetlights"
    ids = tokenizer(text, padding="max_length", max_length=77)["input_ids"]
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
    tokenizer.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert loaded(text, padding="max_length", max_length=77)["input_ids"] == ids
    assert loaded.decode(ids, skip_special_tokens=True).replace(" ,", ",").strip() == text


def test_short_words_are_single_tokens_and_unknown_text_still_tokenizes():
    tokenizer = build_tiny_clip_tokenizer(["red", "photo"])
    assert tokenizer.tokenize("red photo") == ["red</w>", "photo</w>"]
    assert tokenizer.tokenize("zq!") == ["z", "q</w>", "!</w>"]
