"""Elasticsearch request bodies and response parsing, as small pure functions (no client, no server).

Index names and versions (``NAME-vN`` behind the alias ``NAME``), client options and credentials
from the environment, the index mappings, bulk/delete actions, BM25 and kNN queries, ``_msearch``
bodies, alias switches, and parsing of search / msearch / bulk responses into atlas_kit types.
Everything here is unit-tested without a server; :class:`~atlas_kit.index.ElasticsearchIndex`
sends what these build (see its module for the mapping and score conventions).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from atlas_kit.index.base import Hit, Hits
from atlas_kit.passages import Passage

__all__ = [
    "vector_info",
    "mapping_meta",
    "response_body",
    "es_module",
    "ElasticsearchIndexError",
    "validate_index_name",
    "versioned_name",
    "parse_version",
    "next_version",
    "redact_url",
    "client_kwargs",
    "vector_similarity",
    "knn_score_to_similarity",
    "index_body",
    "passage_doc",
    "bulk_actions",
    "delete_actions",
    "bm25_query",
    "default_num_candidates",
    "knn_query",
    "msearch_body",
    "alias_actions",
    "parse_response",
    "parse_msearch",
    "bulk_failures_message",
    "MODES",
    "ES_API_KEY_ENV",
    "ES_USER_ENV",
    "ES_PASSWORD_ENV",
    "ES_URL_ENV",
    "ES_CA_CERTS_ENV",
    "ES_VERIFY_CERTS_ENV",
    "VECTOR_FIELD",
    "SOURCE_FIELDS",
    "MAX_RESULT_WINDOW",
]

log = logging.getLogger(__name__)

MODES = ("bm25", "knn", "hybrid")
ES_API_KEY_ENV = "ATLAS_KIT_ES_API_KEY"
ES_USER_ENV = "ATLAS_KIT_ES_USER"
ES_PASSWORD_ENV = "ATLAS_KIT_ES_PASSWORD"
#: the cluster URL the user trusts with credentials, and TLS settings (never taken from a folder)
ES_URL_ENV = "ATLAS_KIT_ES_URL"
ES_CA_CERTS_ENV = "ATLAS_KIT_ES_CA_CERTS"
ES_VERIFY_CERTS_ENV = "ATLAS_KIT_ES_VERIFY_CERTS"
VECTOR_FIELD = "embedding"
SOURCE_FIELDS = ["id", "title", "text", "metadata"]
#: Elasticsearch's default ``index.max_result_window`` and kNN ``num_candidates`` ceiling
MAX_RESULT_WINDOW = 10_000
_BAD_NAME_CHARS = set('\\/*?"<>| ,#:')


class ElasticsearchIndexError(RuntimeError):
    """An Elasticsearch operation failed; ``failures`` holds per-document bulk errors, if any."""

    def __init__(self, message: str, failures: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


def es_module() -> Any:
    try:
        import elasticsearch
    except ImportError:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError(
            "ElasticsearchIndex needs the official client: pip install 'atlas_kit[elasticsearch]' "
            "(elasticsearch>=8.12,<9 for an 8.x server, 9.x for a 9.x server)"
        ) from None
    return elasticsearch


# ---------------------------------------------------------------------- pure helpers
def validate_index_name(name: str) -> str:
    """Elasticsearch index/alias names: lowercase, no ``\\ / * ? " < > | , # :`` or spaces, not
    starting with ``-``, ``_`` or ``+``. Checked here so the error names the rule."""
    if not name or name != name.lower() or name[0] in "-_+" or name in (".", "..") or set(name) & _BAD_NAME_CHARS:
        raise ValueError(
            f"invalid Elasticsearch index name {name!r}: use lowercase, no spaces or any of \\/*?\"<>|,#:, "
            "and do not start with -, _ or +"
        )
    return name


def versioned_name(alias: str, version: int) -> str:
    """The concrete index behind ``alias`` for corpus version ``version``: ``NAME-vN``."""
    return f"{alias}-v{int(version)}"


def parse_version(index: str, alias: str) -> int | None:
    m = re.fullmatch(re.escape(alias) + r"-v(\d+)", index)
    return int(m.group(1)) if m else None


def next_version(existing: Iterable[str], alias: str) -> int:
    """1 + the highest ``NAME-vN`` among ``existing`` index names (1 when there is none)."""
    versions = [v for v in (parse_version(name, alias) for name in existing) if v is not None]
    return max(versions, default=0) + 1


def redact_url(url: str) -> str:
    """``url`` without ``user:password@`` (credentials never go into a manifest)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def client_kwargs(
    url: str,
    *,
    api_key: str | tuple[str, str] | None = None,
    basic_auth: tuple[str, str] | str | None = None,
    ca_certs: str | os.PathLike | None = None,
    verify_certs: bool = True,
    request_timeout: float = 30,
    max_retries: int = 3,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``elasticsearch.Elasticsearch``: auth (API key *or* basic auth),
    TLS (``ca_certs``/``verify_certs``), timeouts and retries (``retry_on_timeout=True``: a
    timed-out request is retried on another node instead of failing the whole batch)."""
    if api_key is not None and basic_auth is not None:
        raise ValueError("pass either api_key or basic_auth, not both")
    kwargs: dict[str, Any] = {
        "hosts": [url],
        "request_timeout": request_timeout,
        "max_retries": int(max_retries),
        "retry_on_timeout": True,
        "verify_certs": bool(verify_certs),
    }
    if api_key is not None:
        kwargs["api_key"] = tuple(api_key) if isinstance(api_key, (list, tuple)) else api_key
    if basic_auth is not None:
        kwargs["basic_auth"] = tuple(basic_auth) if isinstance(basic_auth, (list, tuple)) else basic_auth
    if ca_certs is not None:
        kwargs["ca_certs"] = str(ca_certs)
    kwargs.update(extra)
    return kwargs


def vector_similarity(normalize: bool) -> str:
    """``dot_product`` for unit-length embeddings, ``max_inner_product`` otherwise (see module doc)."""
    return "dot_product" if normalize else "max_inner_product"


def knn_score_to_similarity(score: float, similarity: str | None) -> float:
    """Invert Elasticsearch's kNN ``_score`` transform to the raw vector similarity."""
    if similarity in ("dot_product", "cosine"):
        return 2.0 * score - 1.0
    if similarity == "max_inner_product":
        return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    return score


def index_body(
    dim: int | None = None,
    similarity: str = "max_inner_product",
    *,
    shards: int = 1,
    replicas: int = 0,
    k1: float = 1.2,
    b: float = 0.75,
    analyzer: str = "standard",
    meta: dict[str, Any] | None = None,
    index_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"settings": ..., "mappings": ...}`` for a new concrete index.

    ``dim=None`` makes a BM25-only index (no vector field). ``meta`` goes into the mapping's
    ``_meta`` (retriever identity, corpus checksum, version) so a client can verify the encoder
    without a local manifest.
    """
    properties: dict[str, Any] = {
        "id": {"type": "keyword"},
        "title": {"type": "text", "analyzer": analyzer},
        "text": {"type": "text", "analyzer": analyzer},
        "metadata": {"type": "object", "enabled": False},
    }
    if dim is not None:
        vector: dict[str, Any] = {"type": "dense_vector", "dims": int(dim), "index": True, "similarity": similarity}
        if index_options:
            vector["index_options"] = dict(index_options)
        properties[VECTOR_FIELD] = vector
    return {
        "settings": {
            "number_of_shards": int(shards),
            "number_of_replicas": int(replicas),
            "index": {"similarity": {"default": {"type": "BM25", "k1": float(k1), "b": float(b)}}},
        },
        "mappings": {"dynamic": "strict", "_meta": dict(meta or {}), "properties": properties},
    }


def passage_doc(p: Passage, vector: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """The ``_source`` of one passage."""
    doc: dict[str, Any] = {"id": p.id, "title": p.title or "", "text": p.text, "metadata": dict(p.metadata or {})}
    if vector is not None:
        doc[VECTOR_FIELD] = np.asarray(vector, dtype=np.float32).tolist()
    return doc


def bulk_actions(
    passages: Iterable[Passage],
    index: str,
    vectors: Iterable[Sequence[float] | np.ndarray] | None = None,
) -> Iterator[dict[str, Any]]:
    """Bulk ``index`` actions (``_id`` = passage id, so re-indexing a passage overwrites it)."""
    vector_iter = iter(vectors) if vectors is not None else None
    for p in passages:
        vec = next(vector_iter) if vector_iter is not None else None
        yield {"_op_type": "index", "_index": index, "_id": p.id, "_source": passage_doc(p, vec)}


def delete_actions(ids: Iterable[str], index: str) -> Iterator[dict[str, Any]]:
    for pid in ids:
        yield {"_op_type": "delete", "_index": index, "_id": pid}


def bm25_query(query: str, k: int, title_boost: float = 1.0) -> dict[str, Any]:
    """BM25 search body: ``match`` on ``title`` (boosted by ``title_boost``) + ``match`` on ``text``,
    scores summed (``bool.should``)."""
    return {
        "size": int(k),
        "_source": list(SOURCE_FIELDS),
        "query": {"bool": {"should": [
            {"match": {"title": {"query": query, "boost": float(title_boost)}}},
            {"match": {"text": {"query": query}}},
        ]}},
    }


def default_num_candidates(k: int, num_candidates: int | None = None) -> int:
    """HNSW candidates per shard: ``num_candidates`` or ``max(100, 10k)``, at least ``k``, at most 10,000."""
    nc = num_candidates if num_candidates is not None else max(100, 10 * int(k))
    return int(min(MAX_RESULT_WINDOW, max(int(k), nc)))


def knn_query(vector: Sequence[float] | np.ndarray, k: int, num_candidates: int | None = None) -> dict[str, Any]:
    """Approximate kNN search body (top-level ``knn`` option) for one query embedding."""
    return {
        "size": int(k),
        "_source": list(SOURCE_FIELDS),
        "knn": {
            "field": VECTOR_FIELD,
            "query_vector": np.asarray(vector, dtype=np.float32).tolist(),
            "k": int(k),
            "num_candidates": default_num_candidates(k, num_candidates),
        },
    }


def msearch_body(index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``_msearch`` header/body pairs: many queries in one round trip."""
    out: list[dict[str, Any]] = []
    for body in bodies:
        out.append({"index": index})
        out.append(body)
    return out


def alias_actions(alias: str, new_index: str, current: Iterable[str] = ()) -> list[dict[str, Any]]:
    """``_aliases`` actions that move ``alias`` to ``new_index`` in one atomic request."""
    actions: list[dict[str, Any]] = [{"remove": {"index": old, "alias": alias}} for old in current if old != new_index]
    actions.append({"add": {"index": new_index, "alias": alias}})
    return actions


def _error_reason(error: Any) -> str:
    if isinstance(error, dict):
        reason = f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
        caused = error.get("caused_by")
        if isinstance(caused, dict) and caused.get("reason"):
            reason += f" (caused by {caused.get('type', 'error')}: {caused['reason']})"
        return reason
    return str(error)


def parse_response(response: Any, knn_similarity: str | None = None) -> Hits:
    """One search response -> :class:`Hits` (title/text/metadata from ``_source``).

    ``knn_similarity`` (the vector field's similarity) converts kNN ``_score``\\ s back to the raw
    similarity; leave it None for BM25 responses.
    """
    hits = []
    for rank, h in enumerate(response_body(response)["hits"]["hits"]):
        src = h.get("_source") or {}
        score = float(h.get("_score") or 0.0)
        if knn_similarity is not None:
            score = knn_score_to_similarity(score, knn_similarity)
        meta = src.get("metadata") or {}
        hits.append(Hit(str(src.get("id", h.get("_id"))), src.get("title") or "", src.get("text") or "", score, rank,
                        meta if isinstance(meta, dict) else {"metadata": meta}))
    return Hits.from_hits(hits)


def parse_msearch(response: Any, expected: int) -> list[Any]:
    """The per-search responses of an ``_msearch``; raises on any failed search."""
    responses = list(response_body(response)["responses"])
    if len(responses) != expected:
        raise ElasticsearchIndexError(f"_msearch returned {len(responses)} responses for {expected} searches")
    for i, r in enumerate(responses):
        if "error" in r:
            raise ElasticsearchIndexError(f"search {i} of the batch failed: {_error_reason(r['error'])}")
    return responses


def bulk_failures_message(failures: Sequence[dict[str, Any]], total: int, index: str, limit: int = 5,
                          n_failed: int | None = None) -> str:
    """A readable summary of failed bulk items: how many, and the first ``limit`` ids with reasons."""
    n_failed = len(failures) if n_failed is None else n_failed
    lines = [f"{n_failed} of {total} documents failed to index into {index!r}; first {min(limit, len(failures))}:"]
    for info in failures[:limit]:
        op = next(iter(info.values())) if isinstance(info, dict) and len(info) == 1 else info
        op = op if isinstance(op, dict) else {"error": op}
        lines.append(f"  id {op.get('_id')!r} (status {op.get('status')}): {_error_reason(op.get('error', op.get('exception')))}")
    return "\n".join(lines)


def response_body(response: Any) -> Any:
    """The JSON body of a client response (``ObjectApiResponse`` is not a full Mapping)."""
    return getattr(response, "body", response)


def mapping_meta(mapping_response: Any) -> dict[str, Any]:
    """``_meta`` of the (first) concrete index in a ``GET <alias>/_mapping`` response."""
    for _name, body in dict(response_body(mapping_response)).items():
        return dict((body.get("mappings") or {}).get("_meta") or {})
    return {}


def vector_info(mapping_response: Any) -> tuple[int | None, str | None]:
    for _name, body in dict(response_body(mapping_response)).items():
        field = ((body.get("mappings") or {}).get("properties") or {}).get(VECTOR_FIELD) or {}
        return field.get("dims"), field.get("similarity")
    return None, None


# ---------------------------------------------------------------------- the index
