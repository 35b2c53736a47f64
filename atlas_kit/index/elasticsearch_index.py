"""Elasticsearch as an atlas_kit index: sharded BM25, dense kNN, or both fused (beyond one machine).

Versioned corpora through an alias. :meth:`ElasticsearchIndex.build` writes a new concrete index
``NAME-vN`` (mappings below), bulk-loads the passages (and their vectors), checks the document
count, then moves the alias ``NAME`` from the old version(s) to ``NAME-vN`` with **one**
``_aliases`` request (remove + add are applied atomically by Elasticsearch). Searches always go
through the alias, so a new corpus version goes live in one step and the old one stays available
for rollback (:meth:`ElasticsearchIndex.publish`).

Mappings: ``id`` keyword, ``title`` and ``text`` as ``text`` fields scored with BM25 (``k1``/``b``
set on the index's default similarity), ``metadata`` an unindexed object, and - when a retriever
is given - ``embedding`` a ``dense_vector`` (``index: true``, HNSW) whose similarity is:

* ``dot_product`` for retrievers that L2-normalise their embeddings (Elasticsearch requires
  unit-length float vectors for it, and it is the fastest), or
* ``max_inner_product`` otherwise (Elasticsearch >= 8.11): ranks by the raw inner product, like
  ``FaissIndex(metric="ip")`` for un-normalised encoders such as Contriever. (``cosine`` would
  silently change the ranking of an inner-product model.)

Elasticsearch turns similarities into non-negative ``_score``\\ s (dot_product: ``(1 + s) / 2``;
max_inner_product: ``s + 1`` if ``s >= 0`` else ``1 / (1 - s)``); kNN hits are converted back to
the raw inner product so scores are comparable with :class:`~atlas_kit.index.FaissIndex`.

Client versions: the 9.x ``elasticsearch`` client talks only to 9.x servers (it sends
``compatible-with=9`` headers, which 8.x servers reject with ``media_type_header_exception``);
for an 8.x server install ``elasticsearch>=8.12,<9``. Nothing else here depends on the version.

Request bodies are built by small pure functions (:func:`index_body`, :func:`bulk_actions`,
:func:`bm25_query`, :func:`knn_query`, :func:`alias_actions`, ...) and responses are parsed by
:func:`parse_response`, so all of it is unit-tested without a server.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from atlas_kit.index.base import FORMAT_VERSION, MANIFEST, Hit, Hits, Index, check_retriever, now_iso, read_manifest
from atlas_kit.index.hybrid_index import fuse_hits
from atlas_kit.passages import Passage, Passages, load_passages
from atlas_kit.storage import atomic_dir, atomic_write_json

__all__ = [
    "ElasticsearchIndex",
    "ElasticsearchIndexError",
    "MODES",
    "ES_API_KEY_ENV",
    "alias_actions",
    "bm25_query",
    "bulk_actions",
    "bulk_failures_message",
    "client_kwargs",
    "index_body",
    "knn_query",
    "knn_score_to_similarity",
    "msearch_body",
    "next_version",
    "parse_msearch",
    "parse_response",
    "passage_doc",
    "vector_similarity",
    "versioned_name",
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


def _es_module() -> Any:
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
    for rank, h in enumerate(_body(response)["hits"]["hits"]):
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
    responses = list(_body(response)["responses"])
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


def _body(response: Any) -> Any:
    """The JSON body of a client response (``ObjectApiResponse`` is not a full Mapping)."""
    return getattr(response, "body", response)


def _mapping_meta(mapping_response: Any) -> dict[str, Any]:
    """``_meta`` of the (first) concrete index in a ``GET <alias>/_mapping`` response."""
    for _name, body in dict(_body(mapping_response)).items():
        return dict((body.get("mappings") or {}).get("_meta") or {})
    return {}


def _vector_info(mapping_response: Any) -> tuple[int | None, str | None]:
    for _name, body in dict(_body(mapping_response)).items():
        field = ((body.get("mappings") or {}).get("properties") or {}).get(VECTOR_FIELD) or {}
        return field.get("dims"), field.get("similarity")
    return None, None


# ---------------------------------------------------------------------- the index
class ElasticsearchIndex(Index):
    """Search an Elasticsearch alias by BM25 (``mode="bm25"``), dense kNN (``"knn"``), or both
    fused client-side with reciprocal rank fusion (``"hybrid"``).

    Args:
        url: the cluster URL (``https://host:9200``).
        index_name: the alias that searches go through (concrete indexes are ``NAME-vN``).
        retriever: encodes queries when the caller passes no ``query_embeddings`` (kNN modes).
        api_key / basic_auth: authentication (one of them); ca_certs / verify_certs: TLS.
        request_timeout, max_retries: per-request timeout (s) and retries (timeouts included).
        mode: ``"bm25"``, ``"knn"`` or ``"hybrid"``.
        title_boost: BM25 weight of the title field relative to the text.
        num_candidates: kNN candidates per shard (default ``max(100, 10k)``).
        rrf_k, fetch_factor: hybrid fusion settings (see :class:`~atlas_kit.index.HybridIndex`).
        msearch_batch: queries per ``_msearch`` request.
        client: an existing ``Elasticsearch`` client (then the connection arguments are unused).
        client_options: extra keyword arguments for ``elasticsearch.Elasticsearch``.
    """

    kind = "elasticsearch"

    def __init__(
        self,
        url: str,
        index_name: str,
        retriever: Any = None,
        api_key: str | tuple[str, str] | None = None,
        basic_auth: tuple[str, str] | str | None = None,
        ca_certs: str | os.PathLike | None = None,
        verify_certs: bool = True,
        request_timeout: float = 30,
        max_retries: int = 3,
        mode: str = "bm25",
        *,
        title_boost: float = 1.0,
        num_candidates: int | None = None,
        rrf_k: float = 60,
        fetch_factor: float = 2,
        msearch_batch: int = 64,
        client: Any = None,
        client_options: dict[str, Any] | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        validate_index_name(index_name)
        if fetch_factor < 1:
            raise ValueError(f"fetch_factor must be >= 1, got {fetch_factor}")
        self.url = url
        self.index_name = index_name
        self.retriever = retriever
        self.mode = mode
        self.title_boost = float(title_boost)
        self.num_candidates = num_candidates
        self.rrf_k = float(rrf_k)
        self.fetch_factor = fetch_factor
        self.msearch_batch = int(msearch_batch)
        #: instance attribute: kNN and hybrid searches need query embeddings
        self.needs_embeddings = mode in ("knn", "hybrid")
        if client is None:
            es = _es_module()
            client = es.Elasticsearch(**client_kwargs(
                url, api_key=api_key, basic_auth=basic_auth, ca_certs=ca_certs, verify_certs=verify_certs,
                request_timeout=request_timeout, max_retries=max_retries, **(client_options or {}),
            ))
        self.client = client
        self.path: str | None = None
        auth = "api_key" if api_key is not None else "basic_auth" if basic_auth is not None else None
        base = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "url": redact_url(url),
            "index_name": index_name,
            "mode": mode,
            "title_boost": self.title_boost,
            "num_candidates": num_candidates,
            "rrf_k": self.rrf_k,
            "fetch_factor": fetch_factor,
            "verify_certs": bool(verify_certs),
            "ca_certs": str(ca_certs) if ca_certs is not None else None,
            "request_timeout": request_timeout,
            "max_retries": int(max_retries),
            "auth": auth,  # which kind of credentials to supply on load - never the secret itself
        }
        self.manifest: dict[str, Any] = {**base, **(manifest or {})}
        self.manifest.update({key: base[key] for key in ("kind", "mode", "index_name")})
        self._meta_loaded = False

    # ------------------------------------------------------------------ building / publishing
    @classmethod
    def build(
        cls,
        passages: Passages | str | os.PathLike,
        url: str,
        index_name: str,
        retriever: Any = None,
        mode: str | None = None,
        *,
        api_key: str | tuple[str, str] | None = None,
        basic_auth: tuple[str, str] | str | None = None,
        ca_certs: str | os.PathLike | None = None,
        verify_certs: bool = True,
        request_timeout: float = 30,
        max_retries: int = 3,
        title_boost: float = 1.0,
        analyzer: str = "standard",
        k1: float = 1.2,
        b: float = 0.75,
        shards: int = 1,
        replicas: int = 0,
        index_options: dict[str, Any] | None = None,
        chunk_size: int = 500,
        encode_batch_size: int = 128,
        num_candidates: int | None = None,
        rrf_k: float = 60,
        fetch_factor: float = 2,
        show_progress: bool | None = None,
        keep_failed: bool = False,
        client: Any = None,
        client_options: dict[str, Any] | None = None,
    ) -> "ElasticsearchIndex":
        """Index ``passages`` into a new ``NAME-vN`` and publish it as ``NAME`` (see module doc).

        With a ``retriever`` the passages are encoded in streamed chunks and stored as vectors
        (``mode`` then defaults to ``"hybrid"``; without one, to ``"bm25"``). Failed documents
        raise :class:`ElasticsearchIndexError` listing the first ids and reasons; the alias is
        not moved and the partial index is deleted (``keep_failed=True`` keeps it to inspect).
        """
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        if len(passages) == 0:
            raise ValueError("cannot build an Elasticsearch index over an empty corpus (0 passages)")
        mode = mode or ("hybrid" if retriever is not None else "bm25")
        if mode in ("knn", "hybrid") and retriever is None:
            raise ValueError(f"mode={mode!r} needs a retriever to encode the passages")
        index = cls(url, index_name, retriever=retriever, api_key=api_key, basic_auth=basic_auth, ca_certs=ca_certs,
                    verify_certs=verify_certs, request_timeout=request_timeout, max_retries=max_retries, mode=mode,
                    title_boost=title_boost, num_candidates=num_candidates, rrf_k=rrf_k, fetch_factor=fetch_factor,
                    client=client, client_options=client_options)
        es = index.client
        alias = index_name
        current = index.alias_targets()
        if not current and es.indices.exists(index=alias):
            raise ElasticsearchIndexError(
                f"{alias!r} is an existing concrete index, not an alias; an alias cannot share its name. "
                f"Reindex or delete it, or pick another index_name."
            )
        version = next_version([*index.existing_indices(), *current], alias)
        concrete = versioned_name(alias, version)
        identity = retriever.identity() if retriever is not None else {}
        dim = int(identity.get("dim") or retriever.dim) if retriever is not None else None
        similarity = vector_similarity(bool(identity.get("normalize", getattr(retriever, "normalize", False)))) if dim else None
        checksum = passages.checksum()
        meta = {"atlas_kit": {"format_version": FORMAT_VERSION, "version": version, "count": len(passages),
                              "corpus_checksum": checksum, "retriever": identity, "similarity": similarity,
                              "created": now_iso()}}
        body = index_body(dim, similarity or "max_inner_product", shards=shards, replicas=replicas, k1=k1, b=b,
                          analyzer=analyzer, meta=meta, index_options=index_options)
        t0 = time.perf_counter()
        es.indices.create(index=concrete, settings=body["settings"], mappings=body["mappings"])
        log.info("created Elasticsearch index %s", concrete)
        try:
            vectors = _stream_vectors(passages, retriever, encode_batch_size) if retriever is not None else None
            index._bulk(bulk_actions(passages, concrete, vectors), len(passages), concrete, chunk_size, show_progress)
            es.indices.refresh(index=concrete)
            count = int(es.count(index=concrete)["count"])
            if count != len(passages):
                raise ElasticsearchIndexError(f"{concrete} holds {count} documents after indexing {len(passages)} passages")
        except BaseException:
            if keep_failed:
                log.error("indexing %s failed; the partial index is kept for inspection", concrete)
            else:
                log.error("indexing %s failed; deleting the partial index (the alias is unchanged)", concrete)
                try:
                    es.indices.delete(index=concrete)
                except Exception as e:  # noqa: BLE001 - cleanup must not hide the original error
                    log.warning("could not delete %s: %s", concrete, e)
            raise
        es.indices.update_aliases(actions=alias_actions(alias, concrete, current))
        log.info("alias %s -> %s (was %s)", alias, concrete, current or "unset")
        index.manifest.update({
            "version": version,
            "concrete_index": concrete,
            "count": len(passages),
            "corpus_checksum": checksum,
            "retriever": identity,
            "dim": dim,
            "similarity": similarity,
            "analyzer": analyzer,
            "k1": float(k1),
            "b": float(b),
            "history": [{"version": version, "change": "build", "count": len(passages), "at": now_iso(),
                         "index": concrete, "replaced": list(current)}],
            "created": now_iso(),
            "build": {"index_seconds": round(time.perf_counter() - t0, 3)},
        })
        index._meta_loaded = True
        return index

    def _bulk(self, actions: Iterable[dict[str, Any]], total: int, target: str, chunk_size: int,
              show_progress: bool | None) -> int:
        """Stream ``actions`` with ``helpers.streaming_bulk`` under a progress bar; raise with the
        per-document failures (first few ids and reasons) if any item failed."""
        from tqdm.auto import tqdm

        _es_module()
        import elasticsearch.helpers as helpers
        if show_progress is None:
            show_progress = total > 10_000
        failures: list[dict[str, Any]] = []
        n_failed = ok_count = 0
        with tqdm(total=total, desc=f"index into {target}", unit="doc", disable=not show_progress) as bar:
            for ok, info in helpers.streaming_bulk(self.client, actions, chunk_size=chunk_size, raise_on_error=False,
                                                   max_retries=self.manifest.get("max_retries", 3)):
                if ok:
                    ok_count += 1
                else:
                    n_failed += 1
                    if len(failures) < 1000:
                        failures.append(info)
                bar.update(1)
        if n_failed:
            raise ElasticsearchIndexError(bulk_failures_message(failures, total, target, n_failed=n_failed), failures)
        return ok_count

    def alias_targets(self) -> list[str]:
        """The concrete index(es) the alias points at now (empty if the alias does not exist)."""
        es = _es_module()
        try:
            resp = self.client.indices.get_alias(name=self.index_name)
        except es.NotFoundError:
            return []
        return sorted(dict(_body(resp)))

    def existing_indices(self) -> list[str]:
        """All concrete ``NAME-v*`` indexes (published or not)."""
        es = _es_module()
        try:
            resp = self.client.indices.get_alias(index=f"{self.index_name}-v*")
        except es.NotFoundError:
            return []
        return sorted(name for name in dict(_body(resp)) if parse_version(name, self.index_name) is not None)

    def versions(self) -> list[int]:
        return sorted(v for v in (parse_version(n, self.index_name) for n in self.existing_indices()) if v is not None)

    def publish(self, version: int) -> None:
        """Point the alias at ``NAME-v{version}`` (atomically), e.g. to roll back."""
        concrete = versioned_name(self.index_name, version)
        if concrete not in self.existing_indices():
            raise ElasticsearchIndexError(f"{concrete} does not exist (versions: {self.versions()})")
        self.client.indices.update_aliases(actions=alias_actions(self.index_name, concrete, self.alias_targets()))
        self.manifest = {**self.manifest, "version": int(version), "concrete_index": concrete}
        self._meta_loaded = False

    def drop(self) -> None:
        """Delete every ``NAME-vN`` index (the alias goes with them). Irreversible."""
        names = self.existing_indices()
        if names:
            self.client.indices.delete(index=",".join(names))
            log.info("deleted Elasticsearch indexes %s", names)

    # ------------------------------------------------------------------ incremental updates
    def add(self, passages: Passages | str | os.PathLike, retriever: Any = None, chunk_size: int = 500,
            show_progress: bool | None = None) -> "ElasticsearchIndex":
        """Index more passages into the live index the alias points at (Elasticsearch keeps its
        BM25 statistics itself). To publish a whole new corpus atomically, use :meth:`build`."""
        if not isinstance(passages, Passages):
            passages = load_passages(passages)
        target = self._single_target()
        self._ensure_meta()
        vectors = None
        if self.manifest.get("dim"):
            retriever = retriever or self.retriever
            if retriever is None:
                raise ValueError("this index stores vectors: pass the retriever that built it")
            check_retriever(self.manifest, retriever, where=f"ElasticsearchIndex.add({self.index_name})")
            vectors = _stream_vectors(passages, retriever, 128)
        self._bulk(bulk_actions(passages, target, vectors), len(passages), target, chunk_size, show_progress)
        self.client.indices.refresh(index=target)
        self._bump("add", len(passages))
        return self

    def remove(self, ids: Iterable[str], chunk_size: int = 500) -> "ElasticsearchIndex":
        """Delete passages by id from the live index the alias points at."""
        ids = list(ids)
        target = self._single_target()
        self._bulk(delete_actions(ids, target), len(ids), target, chunk_size, False)
        self.client.indices.refresh(index=target)
        self._bump("remove", len(ids))
        return self

    def _single_target(self) -> str:
        targets = self.alias_targets()
        if len(targets) != 1:
            raise ElasticsearchIndexError(f"alias {self.index_name!r} points at {targets}; expected exactly one index")
        return targets[0]

    def _bump(self, change: str, n: int) -> None:
        manifest = dict(self.manifest)
        manifest["count"] = int(self.client.count(index=self.index_name)["count"])
        manifest["revision"] = int(manifest.get("revision", 0)) + 1
        manifest["history"] = [*manifest.get("history", []),
                               {"version": manifest.get("version"), "revision": manifest["revision"],
                                "change": change, "count": n, "at": now_iso()}]
        self.manifest = manifest

    # ------------------------------------------------------------------ compatibility
    def _ensure_meta(self) -> None:
        """Fill retriever identity / vector settings from the live index's mapping ``_meta``
        (one request), so an index opened by name alone can still be checked and decoded."""
        if self._meta_loaded:
            return
        resp = self.client.indices.get_mapping(index=self.index_name)
        meta = _mapping_meta(resp).get("atlas_kit", {})
        dim, similarity = _vector_info(resp)
        for key, value in (("retriever", meta.get("retriever")), ("dim", dim), ("similarity", similarity),
                           ("corpus_checksum", meta.get("corpus_checksum")), ("version", meta.get("version"))):
            if value is not None and not self.manifest.get(key):
                self.manifest[key] = value
        self._meta_loaded = True

    def check_compatible(self, retriever: Any, allow_mismatch: bool = False) -> None:
        """In kNN/hybrid mode, refuse a retriever other than the one whose vectors are indexed."""
        if not self.needs_embeddings:
            return
        self._ensure_meta()
        if self.mode in ("knn", "hybrid") and not self.manifest.get("dim"):
            raise ValueError(f"Elasticsearch index {self.index_name!r} has no '{VECTOR_FIELD}' vectors; use mode='bm25'")
        check_retriever(self.manifest, retriever, where=f"elasticsearch index {self.index_name!r}", allow_mismatch=allow_mismatch)

    # ------------------------------------------------------------------ search
    def __len__(self) -> int:
        return int(self.client.count(index=self.index_name)["count"])

    @property
    def passages(self) -> None:
        """Passages live in the cluster; there is no local store."""
        return None

    def search(self, queries: Sequence[str], k: int, query_embeddings: np.ndarray | None = None) -> list[Hits]:
        """Top-``k`` per query; all queries go out in ``_msearch`` batches (one round trip each).

        kNN/hybrid use ``query_embeddings`` (computed by Atlas) or, without them, encode the
        queries with ``retriever``. Hybrid fetches ``k * fetch_factor`` per method and fuses them
        with :func:`~atlas_kit.index.hybrid_index.fuse_hits` (RRF).
        """
        queries = list(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        fetch = max(int(k), int(math.ceil(k * self.fetch_factor))) if self.mode == "hybrid" else int(k)
        if fetch > MAX_RESULT_WINDOW:
            raise ValueError(f"Elasticsearch returns at most {MAX_RESULT_WINDOW} hits per search; asked for {fetch}")
        vectors = None
        if self.needs_embeddings:
            vectors = self._query_vectors(queries, query_embeddings)
            self._ensure_meta()
        bodies: list[dict[str, Any]] = []
        for i, q in enumerate(queries):
            if self.mode in ("bm25", "hybrid"):
                bodies.append(bm25_query(q, fetch, self.title_boost))
            if self.mode in ("knn", "hybrid"):
                bodies.append(knn_query(vectors[i], fetch, self.num_candidates))  # type: ignore[index]
        per_query = 2 if self.mode == "hybrid" else 1
        responses: list[Any] = []
        step = max(1, self.msearch_batch) * per_query
        for start in range(0, len(bodies), step):
            chunk = bodies[start : start + step]
            resp = self.client.msearch(searches=msearch_body(self.index_name, chunk))
            responses.extend(parse_msearch(resp, len(chunk)))
        similarity = self.manifest.get("similarity")
        if self.mode == "bm25":
            return [parse_response(r) for r in responses]
        if self.mode == "knn":
            return [parse_response(r, knn_similarity=similarity) for r in responses]
        out = []
        for i in range(len(queries)):
            lexical = parse_response(responses[2 * i])
            dense = parse_response(responses[2 * i + 1], knn_similarity=similarity)
            out.append(fuse_hits([lexical, dense], int(k), fusion="rrf", rrf_k=self.rrf_k))
        return out

    def _query_vectors(self, queries: list[str], query_embeddings: np.ndarray | None) -> np.ndarray:
        if query_embeddings is None:
            if self.retriever is None:
                raise ValueError(f"mode={self.mode!r} needs query_embeddings or a retriever to compute them")
            query_embeddings = self.retriever.encode_queries(queries)
        vectors = np.asarray(query_embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(queries):
            raise ValueError(f"query_embeddings must be [{len(queries)}, dim], got {vectors.shape}")
        return vectors

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write a manifest describing the connection (URL without credentials, alias, mode,
        retriever identity, TLS/timeout settings, which auth kind is needed) - never secrets."""
        manifest = dict(self.manifest)
        manifest["url"] = redact_url(manifest.get("url") or self.url)
        with atomic_dir(folder) as tmp:
            atomic_write_json(tmp / MANIFEST, manifest)
        self.path = str(folder)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        retriever: Any = None,
        allow_mismatch: bool = False,
        api_key: str | tuple[str, str] | None = None,
        basic_auth: tuple[str, str] | str | None = None,
        client: Any = None,
        mmap: bool = True,
        url: str | None = None,
        ca_certs: str | os.PathLike | None = None,
        verify_certs: bool | None = None,
        **client_options: Any,
    ) -> "ElasticsearchIndex":
        """Reconnect from a folder written by :meth:`save`.

        A folder is not trusted with connection security: it may come from anywhere. So the host
        that gets credentials is one *you* configure - ``url`` or ``$ATLAS_KIT_ES_URL`` - never
        the folder's ``url``; without one the folder's host is contacted without credentials (a
        warning says so; credentials passed as arguments are then an error). TLS settings come
        from the arguments or ``$ATLAS_KIT_ES_CA_CERTS`` / ``$ATLAS_KIT_ES_VERIFY_CERTS=0``; a
        folder can neither switch certificate verification off nor name the CA to trust.
        Credentials come from the arguments or the environment: ``ATLAS_KIT_ES_API_KEY`` (API
        key), else ``ATLAS_KIT_ES_USER`` + ``ATLAS_KIT_ES_PASSWORD`` (basic auth). ``mmap`` is
        accepted for a uniform loader signature and ignored.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("kind") != cls.kind:
            raise ValueError(f"{folder}: is a {manifest.get('kind')!r} index, not {cls.kind!r}")
        if not isinstance(manifest.get("url"), str) or not isinstance(manifest.get("index_name"), str):
            raise ValueError(f"{folder}/{MANIFEST}: fields 'url' and 'index_name' must be strings")
        from_code = api_key is not None or basic_auth is not None
        if not from_code:
            api_key = os.environ.get(ES_API_KEY_ENV) or None
            if api_key is None and os.environ.get(ES_USER_ENV):
                basic_auth = (os.environ[ES_USER_ENV], os.environ.get(ES_PASSWORD_ENV, ""))
        has_credentials = api_key is not None or basic_auth is not None
        configured = url or os.environ.get(ES_URL_ENV) or None
        folder_url = redact_url(manifest["url"])
        if configured is None and client is None:
            if has_credentials and from_code:
                raise ValueError(f"{folder}: credentials were given but no url: they are only sent to a host you "
                                 f"configure (url=... or ${ES_URL_ENV}), not to {folder_url!r} read from the folder")
            if has_credentials:
                log.warning("%s: credentials not sent to %s, which comes from the index folder; set %s to the "
                            "cluster URL you trust to send them", folder, folder_url, ES_URL_ENV)
                api_key = basic_auth = None
        elif configured is not None and redact_url(configured) != folder_url:
            log.info("%s: connecting to the configured %s (the folder names %s)", folder, redact_url(configured), folder_url)
        if manifest.get("auth") and api_key is None and basic_auth is None and client is None:
            log.warning("%s: the index was saved with %s authentication but no credentials are used "
                        "(set %s, or %s/%s, and %s)", folder, manifest["auth"], ES_API_KEY_ENV, ES_USER_ENV,
                        ES_PASSWORD_ENV, ES_URL_ENV)
        if verify_certs is None:
            verify_certs = os.environ.get(ES_VERIFY_CERTS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
        if manifest.get("verify_certs") is False and verify_certs:
            log.warning("%s: the folder asks for no TLS certificate verification; ignored (set %s=0 to choose that "
                        "yourself)", folder, ES_VERIFY_CERTS_ENV)
        ca_certs = ca_certs or os.environ.get(ES_CA_CERTS_ENV) or None
        if manifest.get("ca_certs") and ca_certs is None:
            log.info("%s: the folder's ca_certs %r is not used (pass ca_certs=... or set %s)", folder,
                     manifest["ca_certs"], ES_CA_CERTS_ENV)
        if manifest.get("mode") in ("knn", "hybrid"):
            check_retriever(manifest, retriever, where=str(folder), allow_mismatch=allow_mismatch)
        host = configured or manifest["url"]
        index = cls(
            host, manifest["index_name"], retriever=retriever, api_key=api_key, basic_auth=basic_auth,
            ca_certs=ca_certs, verify_certs=verify_certs,
            request_timeout=manifest.get("request_timeout", 30), max_retries=manifest.get("max_retries", 3),
            mode=manifest.get("mode", "bm25"), title_boost=manifest.get("title_boost", 1.0),
            num_candidates=manifest.get("num_candidates"), rrf_k=manifest.get("rrf_k", 60),
            fetch_factor=manifest.get("fetch_factor", 2), client=client, client_options=client_options or None,
            manifest=manifest,
        )
        # the manifest describes the connection actually made, not the folder's wishes
        index.manifest.update(url=redact_url(host), verify_certs=bool(verify_certs),
                              ca_certs=str(ca_certs) if ca_certs is not None else None)
        index._meta_loaded = bool(manifest.get("retriever") or manifest.get("mode") == "bm25")
        index.path = str(folder)
        return index

    def info(self) -> dict[str, Any]:
        info = dict(self.manifest)
        try:
            info["live_count"] = len(self)
            info["alias_targets"] = self.alias_targets()
        except Exception as e:  # noqa: BLE001 - info must work offline
            info["unreachable"] = f"{type(e).__name__}: {e}"
        return info


def _stream_vectors(passages: Passages, retriever: Any, batch_size: int, chunk: int = 4096) -> Iterator[np.ndarray]:
    """Passage vectors in passage order, encoded chunk by chunk (never the whole corpus in RAM)."""
    for start in range(0, len(passages), chunk):
        ps = passages.take(range(start, min(start + chunk, len(passages))))
        yield from retriever.encode_passages(ps, batch_size=batch_size, show_progress=False)
