"""Import of Atlas checkpoints (facebookresearch/atlas ``model.pth.tar``) as atlas_kit model folders.

What Atlas saves (``src/model_io.py``, ``save_atlas_model``): ``torch.save`` of a dict with
``step``, ``model`` (the ``Atlas`` module's ``state_dict``), ``optimizer``/``retr_optimizer``
(optimizer state dicts or ``None``), ``scheduler``/``retr_scheduler`` (scheduler state dicts) and
``opt`` (the ``argparse.Namespace`` of its options; ``opt.device`` is a ``torch.device``). The
state dict holds

* ``reader.*``: Atlas's ``FiD``, a ``T5ForConditionalGeneration`` whose stacks only reshape their
  inputs, so its parameter names are HF T5's (``reader.shared.weight``,
  ``reader.encoder.block.0.layer.0.SelfAttention.q.weight``, ``reader.lm_head.weight``, ...);
* ``retriever.contriever.*`` (tied ``DualEncoderRetriever``) or ``retriever.query_contriever.*`` and
  ``retriever.passage_contriever.*`` (``UntiedDualEncoderRetriever``): ``Contriever``, a
  ``BertModel`` without pooler, its ``embeddings.position_ids`` buffer persistent (old HF BERT).

Atlas's loader strips ``reader.module`` / ``retriever.module`` (a wrapped model); so does this one.
The original FiD code's names (``encoder.encoder.*`` from its ``EncoderWrapper`` and ``.module.``
from its ``CheckpointWrapper``) are mapped back to T5's as well.

Loading is ``torch.load(weights_only=True)`` with exactly two extra allowed globals,
``argparse.Namespace`` (``opt``) and ``torch.device`` (already allowed by torch); any other object
in the file is refused with an error naming it, never unpickled.

Atlas checkpoints carry neither configs nor tokenizers: those come from the base models the run
started from, recorded in ``opt.reader_model_type`` (e.g. ``google/t5-base-lm-adapt``) and
``opt.retriever_model_path`` (``facebook/contriever``), or from ``reader_base`` /
``retriever_base`` (a hub id or folder). The converted retriever pools by masked mean (Contriever's
``average``; ``cls`` is kept, ``sqrt`` is refused) and does not normalise, as Atlas retrieves;
the reader's template is Atlas's ``encoder_format`` with the task's query format
(``qa_prompt_format`` for ``--task qa``, e.g. ``question: {question} answer: <extra_id_0>``).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from atlas_kit.storage import atomic_write_json

__all__ = ["load_atlas_checkpoint", "split_atlas_state_dict", "convert_atlas_checkpoint", "ALLOWED_GLOBALS"]

log = logging.getLogger(__name__)

ALLOWED_GLOBALS = (argparse.Namespace, torch.device)
_T5_TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# FiD's checkpoints carry a cross-attention bias T5 never uses (FiD's _keys_to_ignore_on_load_unexpected)
_T5_IGNORED = re.compile(r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$")
_BERT_IGNORED = re.compile(r"(^|\.)embeddings\.position_ids$|^pooler\.")


def load_atlas_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The dict Atlas saved, loaded without unpickling code (see the module doc). ``path``: the
    ``model.pth.tar`` file or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pth.tar"
    if not path.is_file():
        raise FileNotFoundError(f"Atlas checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError (or RuntimeError for a broken archive)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"the global {found.group(1)}" if found else f"unreadable content ({type(e).__name__})"
        raise ValueError(f"{path}: refused: the file holds {what}, which an Atlas checkpoint does not contain "
                         "(allowed: tensors, numbers, strings, plain containers, argparse.Namespace, torch.device); "
                         "it is never unpickled") from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise ValueError(f"{path}: not an Atlas checkpoint (expected a dict with a 'model' state dict)")
    return dict(ckpt)


def _strip(key: str) -> str:
    return key.replace("retriever.module.", "retriever.").replace("reader.module.", "reader.")


def _t5_key(key: str) -> str:
    """Original-FiD names -> T5's: ``encoder.encoder.`` (EncoderWrapper) and ``.module.`` (CheckpointWrapper)."""
    if key.startswith("encoder.encoder."):
        key = "encoder." + key[len("encoder.encoder."):]
    return re.sub(r"(\.block\.\d+)\.module\.", r"\1.", key)


def split_atlas_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"reader": T5 state, "query": BERT state, "passage": BERT state (only when untied)}``."""
    parts: dict[str, dict[str, torch.Tensor]] = {"reader": {}, "query": {}, "passage": {}, "tied": {}}
    prefixes = (("reader.", "reader"), ("retriever.contriever.", "tied"),
                ("retriever.query_contriever.", "query"), ("retriever.passage_contriever.", "passage"))
    unknown = []
    for raw, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state dict entry {raw!r} is a {type(tensor).__name__}, not a tensor")
        key = _strip(raw)
        for prefix, part in prefixes:
            if key.startswith(prefix):
                name = key[len(prefix):]
                parts[part][_t5_key(name) if part == "reader" else name] = tensor
                break
        else:
            unknown.append(raw)
    if unknown:
        raise ValueError(f"unexpected entries in the Atlas state dict (not reader.* / retriever.*): {unknown[:5]}")
    if parts["tied"] and (parts["query"] or parts["passage"]):
        raise ValueError("the state dict holds both a tied (retriever.contriever) and an untied retriever")
    if parts["tied"]:
        parts["query"] = parts.pop("tied")
    else:
        parts.pop("tied")
        if bool(parts["query"]) != bool(parts["passage"]):
            raise ValueError("an untied retriever needs both query_contriever and passage_contriever weights")
    return {name: sd for name, sd in parts.items() if sd}


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], ignored: re.Pattern, tied: tuple[str, ...],
                 what: str) -> None:
    state = {k: v for k, v in state.items() if not ignored.search(k)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in tied and not ignored.search(k)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{what}: the checkpoint does not fit the base model's config: missing {missing[:5]}, "
                         f"unexpected {list(result.unexpected_keys)[:5]}")


def _opt(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    opt = ckpt.get("opt")
    if opt is None:
        return {}
    values = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool, type(None), list, tuple))}


def _reader(state: dict[str, torch.Tensor], base: str, opt: Mapping[str, Any]):
    from transformers import AutoConfig, AutoTokenizer, T5ForConditionalGeneration

    from atlas_kit.reader import Reader

    config = AutoConfig.from_pretrained(base)
    model = T5ForConditionalGeneration(config).eval()
    _load_strict(model, state, _T5_IGNORED, _T5_TIED, "reader")
    model.tie_weights()
    query = opt.get("qa_prompt_format", "question: {question} answer: <extra_id_0>") if opt.get("task") == "qa" else "{question}"
    template = str(opt.get("encoder_format", "{query} title: {title} context: {text}")).replace("{query}", query)
    answer_len = opt.get("target_maxlength") or opt.get("generation_max_length") or 32
    return Reader(model, AutoTokenizer.from_pretrained(base), template=template,
                  text_maxlength=int(opt.get("text_maxlength", 200)), answer_maxlength=max(2, int(answer_len)))


def _retriever(parts: dict[str, dict[str, torch.Tensor]], base: str, opt: Mapping[str, Any], name: str):
    from transformers import AutoConfig, AutoTokenizer, BertModel

    from atlas_kit.retriever import Retriever

    config = AutoConfig.from_pretrained(base)
    pooling = {"average": "mean", "mean": "mean", "cls": "cls"}.get(str(getattr(config, "pooling", "average")))
    if pooling is None:
        raise ValueError(f"{base}: Contriever pooling {config.pooling!r} is not supported (average or cls)")
    encoders = []
    for side in ("query", "passage"):
        if side in parts:
            model = BertModel(config, add_pooling_layer=False).eval()
            _load_strict(model, parts[side], _BERT_IGNORED, (), f"retriever ({side} encoder)")
            encoders.append(model)
    maxlen = min(int(opt.get("text_maxlength", 200)), 512)  # Atlas: min(text_maxlength, BERT_MAX_SEQ_LENGTH)
    return Retriever(encoders[0], AutoTokenizer.from_pretrained(base), passage_encoder=encoders[1] if len(encoders) > 1 else None,
                     pooling=pooling, normalize=False, query_maxlength=maxlen, passage_maxlength=maxlen, name=name,
                     with_title=str(opt.get("retriever_format", "{title} {text}")).startswith("{title}"))


def convert_atlas_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, reader_base: str | None = None,
                             retriever_base: str | None = None) -> Path:
    """Write an Atlas checkpoint as an atlas_kit model folder (``retriever/``, ``reader/``,
    ``atlas_config.json``; load it with :meth:`atlas_kit.Atlas.from_pretrained`), published
    atomically; the checkpoint's options go to ``atlas_opt.json``. Returns ``out``."""
    from atlas_kit.api import Atlas
    from atlas_kit.storage import atomic_dir

    ckpt = load_atlas_checkpoint(checkpoint)
    opt = _opt(ckpt)
    parts = split_atlas_state_dict(ckpt["model"])
    if "query" not in parts:
        raise ValueError(f"{checkpoint}: the checkpoint has no retriever weights (Atlas run with use_file_passages)")
    retriever_base = retriever_base or opt.get("retriever_model_path")
    if not retriever_base:
        raise ValueError(f"{checkpoint}: opt.retriever_model_path is unknown: pass retriever_base (hub id or folder)")
    retriever = _retriever(parts, str(retriever_base), opt, name=f"atlas:{Path(checkpoint).resolve()}")
    reader = None
    if "reader" in parts:
        reader_base = reader_base or opt.get("reader_model_type")
        if not reader_base:
            raise ValueError(f"{checkpoint}: opt.reader_model_type is unknown: pass reader_base (hub id or folder)")
        reader = _reader(parts["reader"], str(reader_base), opt)
    k = int(opt.get("n_context", 20) or 20)
    with atomic_dir(out) as tmp:  # one publish: the model and the options it came with
        Atlas(retriever, reader, None, k=k).save_pretrained(tmp / "model")
        for item in (tmp / "model").iterdir():
            os.replace(item, tmp / item.name)
        (tmp / "model").rmdir()
        atomic_write_json(tmp / "atlas_opt.json", {"step": ckpt.get("step"),
                                                   **{k: list(v) if isinstance(v, tuple) else v for k, v in opt.items()}})
    log.info("converted %s (step %s) to %s", checkpoint, ckpt.get("step"), out)
    return Path(out)
