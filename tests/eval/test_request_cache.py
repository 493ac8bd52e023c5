"""The zero-shot request cache: a hit gives exactly the tokens a fresh encoding gives, anything that changes
the tokens (requests, tokenizer, EOS) misses, and a damaged file costs a re-encoding, never a wrong score."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from sparsedepth.eval.request_cache import cached_encode
from sparsedepth.eval.zero_shot import encode_requests, get_encoder

WORDS = ["<|endoftext|>", "[UNK]", "the", "cat", "sat", "on", "mat", "dog", "ran", "a", "?", "yes", "no"]
REQUESTS = [("the cat sat on", " the mat"), ("the cat sat on", " a dog"), ("", "yes"), ("a dog ran ?", " no")]


def word_tokenizer(words=WORDS) -> Tokenizer:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def encoder_calls(tok, requests, cache_dir, eos=0):
    calls = []
    encode, _ = get_encoder(tok)

    def encode_all():
        calls.append(1)
        return encode_requests(requests, encode, eos)
    return cached_encode(requests, tok, eos, encode_all, cache_dir), len(calls)


def test_a_hit_gives_the_fresh_encoding_without_encoding(tmp_path):
    fresh = encode_requests(REQUESTS, get_encoder(word_tokenizer())[0], 0)
    first, n1 = encoder_calls(word_tokenizer(), REQUESTS, tmp_path)
    again, n2 = encoder_calls(word_tokenizer(), REQUESTS, tmp_path)
    assert (n1, n2) == (1, 0)
    assert first == again == fresh and len(list(tmp_path.glob("*.npz"))) == 1


@pytest.mark.parametrize("change", ["requests", "tokenizer", "eos"])
def test_what_changes_the_tokens_misses(tmp_path, change):
    encoder_calls(word_tokenizer(), REQUESTS, tmp_path)
    requests, tok, eos = REQUESTS, word_tokenizer(), 0
    if change == "requests":
        requests = REQUESTS[:3] + [("a dog ran ?", " yes")]
    elif change == "tokenizer":
        tok = word_tokenizer(WORDS[:2] + WORDS[3:] + ["the"])  # same words, other ids
    else:
        eos = 1
    got, calls = encoder_calls(tok, requests, tmp_path, eos)
    assert calls == 1 and got == encode_requests(requests, get_encoder(tok)[0], eos)


def test_a_damaged_file_is_encoded_again_and_replaced(tmp_path, capsys):
    encoder_calls(word_tokenizer(), REQUESTS, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:40])
    got, calls = encoder_calls(word_tokenizer(), REQUESTS, tmp_path)
    assert calls == 1 and got == encode_requests(REQUESTS, get_encoder(word_tokenizer())[0], 0)
    assert "unreadable" in capsys.readouterr().err
    assert encoder_calls(word_tokenizer(), REQUESTS, tmp_path)[1] == 0  # rewritten whole


def test_nothing_is_kept_without_a_folder_or_a_serialisable_tokenizer(tmp_path):
    assert encoder_calls(word_tokenizer(), REQUESTS, None)[1] == 1

    class Plain:  # a transformers-style tokenizer: encode() only, no to_str()
        def encode(self, text, add_special_tokens=False):
            return [len(w) for w in text.split()]
    assert cached_encode(REQUESTS[:1], Plain(), 0, lambda: [([1], [2])], tmp_path) == [([1], [2])]
    assert not list(tmp_path.iterdir())
