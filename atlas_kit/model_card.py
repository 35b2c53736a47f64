"""Model cards: the ``README.md`` with the Hugging Face Hub's YAML metadata block, for every folder
atlas_kit saves (retriever, reader, Atlas model, index).

The metadata is built with ``huggingface_hub``'s ``ModelCardData`` / ``DatasetCardData`` (so the
block is what the Hub validates): ``library_name``, ``pipeline_tag``, ``tags``, ``base_model``,
``datasets`` and, when a run's metrics are given, a ``model-index`` with one result per scalar
metric. Retriever folders are sentence-transformers folders (``library_name:
sentence-transformers``, ``pipeline_tag: sentence-similarity``); readers are plain T5 checkpoints
(``transformers``, ``text2text-generation``); Atlas models and indexes are atlas_kit folders, an
index being a dataset card (it is pushed as a dataset repository).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from atlas_kit.storage import atomic_write_text, read_json

__all__ = ["folder_kind", "retriever_card", "reader_card", "atlas_card", "index_card", "write_model_card",
           "run_metrics"]

log = logging.getLogger(__name__)

KINDS = ("retriever", "reader", "atlas", "index")
_MARKERS = (("atlas_config.json", "atlas"), ("retriever_config.json", "retriever"), ("reader_config.json", "reader"),
            ("manifest.json", "index"))


def folder_kind(folder: str | os.PathLike) -> str:
    """``retriever``, ``reader``, ``atlas`` or ``index``, read off the settings file a folder holds."""
    folder = Path(folder)
    for marker, kind in _MARKERS:
        if (folder / marker).is_file():
            return kind
    raise ValueError(f"{folder}: not an atlas_kit folder (none of {', '.join(m for m, _ in _MARKERS)})")


def run_metrics(run_folder: str | os.PathLike) -> tuple[dict[str, float], list[str]]:
    """(scalar metrics, dataset names) of a run folder: its ``metrics.json`` and the data files of
    its ``recipe.json`` (by file stem)."""
    run_folder = Path(run_folder)
    metrics = {k: float(v) for k, v in read_json(run_folder / "metrics.json").items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("n", "step")}
    datasets: list[str] = []
    if (run_folder / "recipe.json").is_file():
        data = read_json(run_folder / "recipe.json").get("data") or {}
        for key in ("eval", "train"):
            if isinstance(data.get(key), str) and data[key]:
                datasets.append(Path(data[key]).stem)
    return metrics, list(dict.fromkeys(datasets))


def _eval_results(metrics: Mapping[str, Any] | None, task_type: str, dataset: str, split: str | None):
    from huggingface_hub import EvalResult

    out = []
    for name, value in (metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or name in ("n", "n_queries", "step"):
            continue
        out.append(EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=dataset, dataset_split=split,
                              metric_type=name.split("@")[0].lower(), metric_name=name, metric_value=round(float(value), 4)))
    return out or None


def _render(data: Any, title: str, body: str) -> str:
    return f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{body.strip()}\n"


def _list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else [str(v) for v in value]
    return [v for v in items if v] or None


def _table(rows: Mapping[str, Any]) -> str:
    return "\n".join(["| setting | value |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in rows.items()])


def _metrics_table(metrics: Mapping[str, Any] | None) -> str:
    rows = [(k, v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not rows:
        return ""
    return "\n\n## Results\n\n" + "\n".join(["| metric | value |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in rows])


def retriever_card(settings: Mapping[str, Any], base_model: str | None = None, datasets: Sequence[str] | None = None,
                   metrics: Mapping[str, Any] | None = None, split: str | None = None, name: str | None = None) -> str:
    """Card of a retriever folder (:meth:`atlas_kit.Retriever.save_pretrained`)."""
    from huggingface_hub import ModelCardData

    base = base_model or _hub_like(settings.get("name"))
    ds = _list(datasets)
    title = name or "atlas_kit retriever"
    data = ModelCardData(library_name="sentence-transformers", pipeline_tag="sentence-similarity",
                         tags=["atlas_kit", "sentence-transformers", "feature-extraction", "dense-retrieval"],
                         base_model=base, datasets=ds, model_name=title,
                         eval_results=_eval_results(metrics, "text-retrieval", (ds or ["custom"])[0], split))
    body = f"""A dual-encoder retriever saved by atlas_kit ({settings.get('pooling')} pooling,
{'normalised' if settings.get('normalize') else 'unnormalised'} embeddings, {settings.get('dim')} dimensions,
{'one shared encoder' if settings.get('shared', True) else 'separate query and passage encoders'}).

```python
from sentence_transformers import SentenceTransformer
queries = SentenceTransformer("PATH")                     # the query encoder
{'passages = queries' if settings.get('shared', True) else 'passages = SentenceTransformer("PATH/passage_encoder")'}  # passages as "title text"

from atlas_kit import Retriever
retriever = Retriever.from_pretrained("PATH")             # all settings, both encoders
```

{_table({k: settings.get(k) for k in ('pooling', 'normalize', 'query_maxlength', 'passage_maxlength', 'shared', 'with_title')})}
{_metrics_table(metrics)}"""
    return _render(data, title, body)


def reader_card(settings: Mapping[str, Any], base_model: str | None = None, datasets: Sequence[str] | None = None,
                metrics: Mapping[str, Any] | None = None, split: str | None = None, name: str | None = None) -> str:
    """Card of a reader folder (:meth:`atlas_kit.Reader.save_pretrained`): a plain T5 checkpoint."""
    from huggingface_hub import ModelCardData

    ds = _list(datasets)
    title = name or "atlas_kit Fusion-in-Decoder reader"
    data = ModelCardData(library_name="transformers", pipeline_tag="text2text-generation",
                         tags=["atlas_kit", "t5", "fusion-in-decoder", "retrieval-augmented-generation"],
                         base_model=_list(base_model), datasets=ds, model_name=title,
                         eval_results=_eval_results(metrics, "question-answering", (ds or ["custom"])[0], split))
    body = f"""A T5 Fusion-in-Decoder reader saved by atlas_kit. It is a plain T5 checkpoint
(`T5ForConditionalGeneration.from_pretrained("PATH")`); `atlas_kit.Reader.from_pretrained("PATH")`
adds the FiD input format below (each passage encoded with the question, encoder states fused).

{_table(dict(settings))}
{_metrics_table(metrics)}"""
    return _render(data, title, body)


def atlas_card(config: Mapping[str, Any], retriever_settings: Mapping[str, Any] | None = None,
               base_model: str | Sequence[str] | None = None, datasets: Sequence[str] | None = None,
               metrics: Mapping[str, Any] | None = None, split: str | None = None, name: str | None = None) -> str:
    """Card of an Atlas model folder (:meth:`atlas_kit.Atlas.save_pretrained`: ``retriever/`` + ``reader/``)."""
    from huggingface_hub import ModelCardData

    ds = _list(datasets)
    title = name or "atlas_kit retrieval-augmented model"
    data = ModelCardData(library_name="atlas_kit", pipeline_tag="question-answering",
                         tags=["atlas_kit", "retrieval-augmented-generation", "fusion-in-decoder", "dense-retrieval"],
                         base_model=_list(base_model), datasets=ds, model_name=title,
                         eval_results=_eval_results(metrics, "question-answering", (ds or ["custom"])[0], split))
    body = f"""An Atlas-style model saved by atlas_kit: a dual-encoder retriever (`retriever/`, also a
sentence-transformers folder) and a Fusion-in-Decoder T5 reader (`reader/`). Indexes are separate folders.

```python
from atlas_kit import Atlas
atlas = Atlas.from_pretrained("PATH", index="indexes/NAME")
print(atlas.ask("Who wrote the Iliad?").text)
```

{_table({'k': config.get('k'), 'has_reader': config.get('has_reader'),
         **{f'retriever.{k}': v for k, v in (retriever_settings or {}).items() if k in ('pooling', 'normalize', 'shared')}})}
{_metrics_table(metrics)}"""
    return _render(data, title, body)


def index_card(manifest: Mapping[str, Any], datasets: Sequence[str] | None = None,
               metrics: Mapping[str, Any] | None = None, name: str | None = None) -> str:
    """Card of an index folder: a dataset card (passages + vectors + index file)."""
    from huggingface_hub import DatasetCardData

    retriever = manifest.get("retriever") or {}
    title = name or f"atlas_kit {manifest.get('kind', '')} index"
    data = DatasetCardData(tags=["atlas_kit", "retrieval-index", str(manifest.get("kind", "index"))],
                           pretty_name=title, source_datasets=_list(datasets))
    body = f"""An atlas_kit index folder: passages, the {manifest.get('kind')} index and its `manifest.json`
(retriever identity and weight fingerprint, corpus checksum). Load it with
`atlas_kit.index.load_index("PATH", retriever=...)`; the retriever must match the fingerprint.

{_table({'kind': manifest.get('kind'), 'count': manifest.get('count'), 'dim': manifest.get('dim'),
         'retriever': retriever.get('name'), 'fingerprint': retriever.get('fingerprint'),
         'corpus_checksum': manifest.get('corpus_checksum')})}
{_metrics_table(metrics)}"""
    return _render(data, title, body)


def _hub_like(name: Any) -> str | None:
    """A retriever's recorded name as ``base_model`` when it looks like a hub id (``owner/name``)."""
    text = str(name or "")
    parts = text.split("/")
    return text if len(parts) == 2 and all(parts) and not Path(text).exists() and ":" not in text else None


def write_model_card(folder: str | os.PathLike, run: str | os.PathLike | None = None,
                     metrics: Mapping[str, Any] | None = None, datasets: Sequence[str] | None = None,
                     base_model: str | None = None, split: str | None = None, name: str | None = None) -> Path:
    """Write (atomically) ``folder/README.md`` for any atlas_kit folder; ``run``: a run folder whose
    ``metrics.json`` / ``recipe.json`` give metrics and datasets (``metrics``/``datasets`` win)."""
    folder = Path(folder)
    kind = folder_kind(folder)
    if run is not None:
        run_m, run_ds = run_metrics(run)
        metrics = metrics if metrics is not None else run_m
        datasets = datasets if datasets is not None else run_ds
    common = {"datasets": datasets, "metrics": metrics, "name": name}
    if kind == "retriever":
        text = retriever_card(read_json(folder / "retriever_config.json"), base_model=base_model, split=split, **common)
    elif kind == "reader":
        text = reader_card(read_json(folder / "reader_config.json"), base_model=base_model, split=split, **common)
    elif kind == "atlas":
        settings = folder / "retriever" / "retriever_config.json"
        text = atlas_card(read_json(folder / "atlas_config.json"), read_json(settings) if settings.is_file() else None,
                          base_model=base_model, split=split, **common)
    else:
        text = index_card(read_json(folder / "manifest.json"), **common)
    atomic_write_text(folder / "README.md", text)
    return folder / "README.md"
