from __future__ import annotations

from transformers import AutoTokenizer

from atlas_kit.tokenization import EOS, PAD, UNK, default_tokenizer, train_word_tokenizer

TEXTS = [
    "The capital of Zorvania is Blim.",
    "Who leads Zorvania? Oska Trell, isn't it?",
    "Blim's river (the Telmirok) is 3.5 km wide; it flows into the Pale Sea.",
]


def test_word_tokenizer_one_token_per_word_and_eos():
    tok = train_word_tokenizer(TEXTS)
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == (PAD, EOS, UNK)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("the capital is Blim .")["input_ids"]
    assert len(ids) == 6 and ids[-1] == tok.eos_token_id
    assert ids.count(tok.unk_token_id) == 0
    assert tok.convert_ids_to_tokens(tok("Quux")["input_ids"]) == [UNK, EOS]
    # eos is appended to every sequence of a batch, and padding uses <pad>
    batch = tok(["blim", "the capital of zorvania"], padding=True)["input_ids"]
    assert batch[0] == [tok.convert_tokens_to_ids("blim"), 1, 0, 0, 0]
    assert batch[1][-1] == 1
    # no eos when asked for no special tokens (the reader adds it to answers itself)
    assert tok("blim", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("blim")]


def test_word_tokenizer_decodes_readably():
    tok = train_word_tokenizer(TEXTS)
    def round_trip(s: str) -> str:
        return tok.decode(tok(s)["input_ids"], skip_special_tokens=True)

    assert round_trip("the capital is Blim .") == "the capital is blim."
    assert round_trip("The capital of Zorvania is Blim.") == "the capital of zorvania is blim."
    assert round_trip("Who leads Zorvania? Oska Trell, isn't it?") == "who leads zorvania? oska trell, isn't it?"
    assert round_trip("Blim's river (the Telmirok) is 3.5 km wide;") == "blim's river (the telmirok) is 3.5 km wide;"
    # words keep inner punctuation as one token; the possessive shares the bare word's token
    assert "3.5" in tok.get_vocab() and "isn't" in tok.get_vocab() and "'s" in tok.get_vocab()
    assert tok.tokenize("Blim's") == ["blim", "'s"]


def test_word_tokenizer_options():
    cased = train_word_tokenizer(["Blim blim Blim"], lowercase=False)
    assert cased("Blim")["input_ids"] != cased("blim")["input_ids"]
    small = train_word_tokenizer(["a a a a b b b c c d"], vocab_size=5)
    assert len(small) == 5 and small.convert_ids_to_tokens(small("d")["input_ids"])[0] == UNK
    rare = train_word_tokenizer(["a a b"], min_frequency=2)
    assert "a" in rare.get_vocab() and "b" not in rare.get_vocab()
    # any iterable works (a generator, as when streaming a corpus)
    gen = train_word_tokenizer(t for t in TEXTS)
    assert gen.get_vocab() == train_word_tokenizer(TEXTS).get_vocab()


def test_word_tokenizer_round_trip(tmp_path):
    tok = train_word_tokenizer(TEXTS)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for s in TEXTS + ["Quux is unknown."]:
        assert again(s)["input_ids"] == tok(s)["input_ids"]
        assert again.decode(again(s)["input_ids"], skip_special_tokens=True) == tok.decode(tok(s)["input_ids"], skip_special_tokens=True)
    assert (again.pad_token_id, again.eos_token_id, again.unk_token_id) == (0, 1, 2)
    assert len(again) == len(tok)


def test_default_tokenizer_is_bundled_wordpiece():
    tok = default_tokenizer()
    assert tok.vocab_size == 30522 and tok.pad_token_id == 0
    assert tok.eos_token_id is None and tok.sep_token_id is not None  # why Reader.from_config uses [SEP]
