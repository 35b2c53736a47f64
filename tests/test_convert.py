"""Atlas checkpoint import: checkpoints built here with Atlas's module names and save format
(facebookresearch/atlas src/atlas.py, src/retrievers.py, src/fid.py, src/model_io.py)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from atlas_kit.convert import convert_atlas_checkpoint, load_atlas_checkpoint, split_atlas_state_dict


class DualEncoderRetriever(nn.Module):  # Atlas: self.contriever
    def __init__(self, contriever):
        super().__init__()
        self.contriever = contriever


class UntiedDualEncoderRetriever(nn.Module):  # Atlas: self.query_contriever / self.passage_contriever
    def __init__(self, query, passage):
        super().__init__()
        self.query_contriever, self.passage_contriever = query, passage


class AtlasModule(nn.Module):  # Atlas: self.reader (FiD = T5ForConditionalGeneration), self.retriever
    def __init__(self, reader, retriever):
        super().__init__()
        self.reader, self.retriever = reader, retriever


def contriever_embed(bert, ids, mask):
    """Contriever.forward with pooling="average" (src/retrievers.py)."""
    last = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    last = last.masked_fill(~mask[..., None].bool(), 0.0)
    return last.sum(dim=1) / mask.sum(dim=1)[..., None]


def fid_logits(t5, ids, mask, labels):
    """Atlas's FiD forward: FiDStack encodes the k passages as k rows, then views them as one."""
    b, k, length = ids.shape
    hidden = t5.encoder(input_ids=ids.view(b * k, length), attention_mask=mask.view(b * k, length)).last_hidden_state
    hidden = hidden.view(b, k * length, -1)
    return t5(encoder_outputs=(hidden,), attention_mask=mask.view(b, k * length), labels=labels).logits


@pytest.fixture
def bases(tmp_path):
    """Config + tokenizer folders standing in for google/t5-*-lm-adapt and facebook/contriever."""
    from transformers import AutoTokenizer, BertConfig

    from atlas_kit.reader import Reader
    from atlas_kit.retriever import default_retriever_path

    tok = AutoTokenizer.from_pretrained(default_retriever_path())
    reader = Reader.from_config(tok, d_model=32, num_layers=1, num_heads=2, dropout=0.0, tie_word_embeddings=False)
    reader.model.config.save_pretrained(tmp_path / "t5-base")
    tok.save_pretrained(tmp_path / "t5-base")
    bert_cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=128)
    bert_cfg.pooling = "average"  # Contriever's config attribute
    bert_cfg.save_pretrained(tmp_path / "contriever")
    tok.save_pretrained(tmp_path / "contriever")
    return tmp_path / "t5-base", tmp_path / "contriever", tok


def _atlas_checkpoint(path, bases, untied=False, wrap=None, seed=0):
    """An Atlas model.pth.tar: Atlas's state dict names, optimizer/scheduler states, opt Namespace."""
    from transformers import AutoConfig, BertModel, T5ForConditionalGeneration

    t5_base, bert_base, _ = bases
    torch.manual_seed(seed)
    reader = T5ForConditionalGeneration(AutoConfig.from_pretrained(t5_base)).eval()
    query = BertModel(AutoConfig.from_pretrained(bert_base), add_pooling_layer=False).eval()
    retriever = UntiedDualEncoderRetriever(query, BertModel(query.config, add_pooling_layer=False).eval()) if untied \
        else DualEncoderRetriever(query)
    model = AtlasModule(reader, retriever)
    state = model.state_dict()
    for name in ("query_contriever", "passage_contriever") if untied else ("contriever",):
        state[f"retriever.{name}.embeddings.position_ids"] = torch.arange(128).expand((1, -1))  # old HF: persistent
    if wrap is not None:
        state = {wrap(k): v for k, v in state.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.reader(input_ids=torch.ones(1, 3, dtype=torch.long), labels=torch.ones(1, 2, dtype=torch.long)).loss.backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    opt = argparse.Namespace(reader_model_type=str(t5_base), retriever_model_path=str(bert_base), text_maxlength=64,
                             target_maxlength=16, n_context=2, task="qa", encoder_format="{query} title: {title} context: {text}",
                             qa_prompt_format="question: {question} answer: <extra_id_0>", retriever_format="{title} {text}",
                             query_side_retriever_training=untied, device=torch.device("cpu"), lr=1e-4, save_optimizer=True)
    torch.save({"step": 7, "model": state, "optimizer": optimizer.state_dict(), "retr_optimizer": None,
                "scheduler": scheduler.state_dict(), "retr_scheduler": None, "opt": opt}, path)
    return model


@pytest.mark.parametrize("untied", [False, True])
def test_converted_model_gives_the_original_modules_outputs(tmp_path, bases, untied):
    from atlas_kit import Atlas

    ckpt = tmp_path / "checkpoint" / "step-7" / "model.pth.tar"
    ckpt.parent.mkdir(parents=True)
    original = _atlas_checkpoint(ckpt, bases, untied=untied)
    out = convert_atlas_checkpoint(ckpt.parent, tmp_path / "converted")  # the folder works as in Atlas
    atlas = Atlas.from_pretrained(out)
    tok = bases[2]
    # retriever: query and passage embeddings equal Contriever's average pooling of the original encoders
    q = tok(["who wrote the iliad?", "a longer question about the river"], padding=True, return_tensors="pt")
    p = tok(["Homer The Iliad is an epic poem."], padding=True, return_tensors="pt")
    query_enc = original.retriever.query_contriever if untied else original.retriever.contriever
    passage_enc = original.retriever.passage_contriever if untied else original.retriever.contriever
    with torch.no_grad():
        want_q = contriever_embed(query_enc, q["input_ids"], q["attention_mask"])
        want_p = contriever_embed(passage_enc, p["input_ids"], p["attention_mask"])
    got_q = atlas.retriever.encode_queries(["who wrote the iliad?", "a longer question about the river"])
    got_p = atlas.retriever.encode_passages([{"title": "Homer", "text": "The Iliad is an epic poem."}])
    assert atlas.retriever.shared is (not untied) and atlas.retriever.normalize is False
    torch.testing.assert_close(torch.from_numpy(got_q), want_q, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(got_p), want_p, atol=1e-5, rtol=1e-4)
    # reader: FiD logits over 2 passages equal the original FiD's
    reader = atlas.reader
    assert reader.template == "question: {question} answer: <extra_id_0> title: {title} context: {text}"
    assert reader.text_maxlength == 64 and reader.answer_maxlength == 16 and atlas.k == 2
    enc = reader.tokenize(["who wrote the iliad?"], [[{"title": "Homer", "text": "epic poem"}, {"title": "Troy", "text": "a city"}]])
    labels = reader.tokenize_answers(["homer"])
    with torch.no_grad():
        want = fid_logits(original.reader, enc["input_ids"], enc["attention_mask"], labels)
        got = reader(enc["input_ids"], enc["attention_mask"], labels=labels).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    opt = json.loads((out / "atlas_opt.json").read_text())
    assert opt["step"] == 7 and opt["n_context"] == 2 and "device" not in opt


def test_wrapped_and_original_fid_names_convert_the_same(tmp_path, bases):
    plain = tmp_path / "plain.pth.tar"
    _atlas_checkpoint(plain, bases)

    def fid_names(key):  # DDP-style "module" and the original FiD's EncoderWrapper/CheckpointWrapper names
        key = key.replace("retriever.", "retriever.module.", 1)
        if key.startswith("reader.encoder.block."):
            head, rest = key[len("reader.encoder.block."):].split(".", 1)
            return f"reader.module.encoder.encoder.block.{head}.module.{rest}"
        return key.replace("reader.encoder.", "reader.encoder.encoder.", 1)

    wrapped = tmp_path / "wrapped.pth.tar"
    _atlas_checkpoint(wrapped, bases, wrap=fid_names)
    a = split_atlas_state_dict(load_atlas_checkpoint(plain)["model"])
    b = split_atlas_state_dict(load_atlas_checkpoint(wrapped)["model"])
    assert a.keys() == b.keys() == {"reader", "query"}
    for part in a:
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_anything_but_an_atlas_checkpoint_is_refused_without_unpickling(tmp_path, bases):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    evil = tmp_path / "evil.pth.tar"
    torch.save({"model": {}, "opt": Payload()}, evil)
    with pytest.raises(ValueError, match=r"evil.pth.tar: refused: the file holds the global exec, .*never unpickled"):
        convert_atlas_checkpoint(evil, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    odd = tmp_path / "odd.pth.tar"
    torch.save({"model": {"encoder.weight": torch.ones(1)}}, odd)
    with pytest.raises(ValueError, match="not reader.* / retriever.*"):
        convert_atlas_checkpoint(odd, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        load_atlas_checkpoint(tmp_path / "missing")


def test_cli_convert_atlas(tmp_path, bases):
    from atlas_kit.cli import main
    from atlas_kit.reader import Reader
    from atlas_kit.retriever import Retriever

    ckpt = tmp_path / "model.pth.tar"
    _atlas_checkpoint(ckpt, bases)
    assert main(["-q", "convert", "atlas", str(ckpt), str(tmp_path / "m"), "--reader-base", str(bases[0]),
                 "--retriever-base", str(bases[1])]) == 0
    assert Reader.from_pretrained(tmp_path / "m" / "reader").template.startswith("question: {question} answer:")
    assert Retriever.from_pretrained(tmp_path / "m" / "retriever").pooling == "mean"
