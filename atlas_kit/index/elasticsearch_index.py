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

Request bodies are built by small pure functions in :mod:`atlas_kit.index.elasticsearch_requests`
(:func:`index_body`, :func:`bulk_actions`, :func:`bm25_query`, :func:`knn_query`,
:func:`alias_actions`, ...) and responses are parsed there (:func:`parse_response`), so all of it is
unit-tested without a server; they stay importable from this module.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atlas_kit.index.base import FORMAT_VERSION, MANIFEST, Hits, Index, check_retriever, now_iso, read_manifest
from atlas_kit.index.elasticsearch_requests import __all__ as REQUEST_NAMES
from atlas_kit.index.elasticsearch_requests import (  # noqa: F401 - re-exported
    ElasticsearchIndexError,
    es_module,
    validate_index_name,
    versioned_name,
    parse_version,
    next_version,
    redact_url,
    client_kwargs,
    vector_similarity,
    knn_score_to_similarity,
    index_body,
    passage_doc,
    bulk_actions,
    delete_actions,
    bm25_query,
    default_num_candidates,
    knn_query,
    msearch_body,
    alias_actions,
    parse_response,
    parse_msearch,
    bulk_failures_message,
    response_body,
    mapping_meta,
    vector_info,
    MODES,
    ES_API_KEY_ENV,
    ES_USER_ENV,
    ES_PASSWORD_ENV,
    ES_URL_ENV,
    ES_CA_CERTS_ENV,
    ES_VERIFY_CERTS_ENV,
    VECTOR_FIELD,
    SOURCE_FIELDS,
    MAX_RESULT_WINDOW,
)
from atlas_kit.index.fusion import fuse_hits
from atlas_kit.index.registry import register
from atlas_kit.passages import Passages, load_passages
from atlas_kit.storage import atomic_dir, atomic_write_json

__all__ = ["ElasticsearchIndex", *REQUEST_NAMES]  # the request helpers stay importable from here

log = logging.getLogger(__name__)


@register
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
            es = es_module()
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

        es_module()
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
        es = es_module()
        try:
            resp = self.client.indices.get_alias(name=self.index_name)
        except es.NotFoundError:
            return []
        return sorted(dict(response_body(resp)))

    def existing_indices(self) -> list[str]:
        """All concrete ``NAME-v*`` indexes (published or not)."""
        es = es_module()
        try:
            resp = self.client.indices.get_alias(index=f"{self.index_name}-v*")
        except es.NotFoundError:
            return []
        return sorted(name for name in dict(response_body(resp)) if parse_version(name, self.index_name) is not None)

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
        meta = mapping_meta(resp).get("atlas_kit", {})
        dim, similarity = vector_info(resp)
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
