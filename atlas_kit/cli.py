"""``atlas-kit`` command line: one small parser per command, all calling the public API.

    atlas-kit index build CORPUS --out indexes/NAME [--retriever R] [--factory Flat]
    atlas-kit index info indexes/NAME
    atlas-kit ask "question" --index indexes/NAME --reader R [--k 20]
    atlas-kit ask "question" --model runs/demo/model
    atlas-kit demo
    atlas-kit serve [--model RUN] [--index NAME@VERSION] [--store indexes] [--port 8000]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Sequence

__all__ = ["main", "build_parser"]

log = logging.getLogger("atlas_kit")

Handler = Callable[[argparse.Namespace], int]


def _setup_logging(verbose: int) -> None:
    """Quiet by default: atlas_kit's own messages at INFO, every other library at WARNING (FAISS's
    loader, for one, reports at INFO which CPU extensions it could not load). ``-v``: INFO for
    all, ``-vv``: DEBUG, ``-q``: warnings only. Hugging Face progress bars only with ``-v``."""
    import os

    from rich.logging import RichHandler

    if verbose <= 0:  # read by huggingface_hub/transformers when first imported, i.e. after this
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    root = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=root, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(rich_tracebacks=False, show_path=False)])
    logging.getLogger().setLevel(root)  # also when logging was configured before (basicConfig is then a no-op)
    logging.getLogger("atlas_kit").setLevel(logging.WARNING if verbose < 0 else min(root, logging.INFO))
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "transformers", "sentence_transformers", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose <= 0 else logging.NOTSET)


def _only_results(args: argparse.Namespace) -> None:
    """Commands that print their own results (ask, demo) hide atlas_kit's INFO messages too,
    unless ``-v``."""
    if not args.verbose:
        logging.getLogger("atlas_kit").setLevel(logging.WARNING)


def _console():
    from rich.console import Console

    return Console()


# ---------------------------------------------------------------------- index
def _cmd_index_build(args: argparse.Namespace) -> int:
    from atlas_kit import Retriever, load_passages

    passages = load_passages(args.corpus, format=args.format)
    log.info("loaded %d passages from %s", len(passages), args.corpus)
    if args.kind != "faiss":
        from atlas_kit.index import INDEX_KINDS

        if args.kind not in INDEX_KINDS:
            raise SystemExit(f"index kind {args.kind!r} is not available (known: {sorted(INDEX_KINDS)})")
        index = INDEX_KINDS[args.kind].build(passages)
    else:
        from atlas_kit.index.build import build_faiss_index

        retriever = Retriever.from_pretrained(args.retriever, device=args.device)
        store_ref = "@" in args.out and "/" not in args.out
        if store_ref:
            from atlas_kit.index.store import IndexStore, parse_ref

            name, version = parse_ref(args.out)
            if version is None:
                raise ValueError(f"give a version: {name}@VERSION")
            folder = IndexStore(args.root).root / name / version
        index = build_faiss_index(passages, retriever, folder if store_ref else args.out, factory=args.factory,
                                  chunk_size=args.chunk_size, batch_size=args.batch_size, resume=args.resume,
                                  embeddings_dtype=args.embeddings_dtype, target_recall=args.target_recall or None)
        if store_ref and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 publishes
            IndexStore(args.root).publish(args.out)
        _console().print(f"[green]wrote[/green] {args.out}: {len(index)} passages, kind={index.kind}")
        return 0
    if "@" in args.out and "/" not in args.out:
        from atlas_kit.index.store import IndexStore

        where = IndexStore(args.root).add(args.out, index, publish=True)
    else:
        index.save(args.out)
        where = args.out
    _console().print(f"[green]wrote[/green] {where}: {len(index)} passages, kind={index.kind}")
    return 0


def _resolve(spec: str, root: str | None = None) -> str:
    from atlas_kit.index.store import resolve_index_path

    return str(resolve_index_path(spec, root))


def _load_for_update(spec: str, root: str | None = None):
    from atlas_kit.index import load_index

    return load_index(_resolve(spec, root), allow_mismatch=True, mmap=False)


def _retriever_for(index: Any, name: str | None, device: str | None):
    from atlas_kit import Retriever

    if name is None:
        recorded = (index.manifest.get("retriever") or {}).get("name")
        name = None if recorded in (None, "", "sentence-transformers/all-MiniLM-L6-v2") else recorded
    return Retriever.from_pretrained(name, device=device)


def _save_update(index: Any, spec: str, out: str | None, new_version: str | None, root: str | None) -> str:
    """Write an updated index without rewriting a published store version in place.

    ``--out`` writes there; a plain folder is replaced atomically (loads racing it see the old or
    the new folder, or retry); a store ref ``NAME[@VERSION]`` becomes a new version
    (``--new-version``, default ``VERSION-2``, ``-3``...) and ``CURRENT`` moves to it when the
    updated version was the current one.
    """
    from pathlib import Path

    from atlas_kit.index.store import IndexStore, parse_ref, store_root

    if out:
        index.save(out)
        return out
    if (Path(spec) / "manifest.json").is_file():
        index.save(spec)
        return spec
    store = IndexStore(store_root(root))
    name, version = parse_ref(spec)
    current = store.current(name)
    version = version or current
    target = new_version or store.new_version(name, str(version))
    if target in store.versions(name):
        raise ValueError(f"{name}@{target} already exists; versions are never rewritten in place (pick another --new-version)")
    folder = store.add(f"{name}@{target}", index, publish=version == current)
    if version != current:
        log.warning("wrote %s@%s (not published: %s@%s is not the current version)", name, target, name, version)
    return str(folder)


def _cmd_index_add(args: argparse.Namespace) -> int:
    from atlas_kit import load_passages

    index = _load_for_update(args.index, args.root)
    new = load_passages(args.passages)
    if index.needs_embeddings:
        index.add(new, retriever=_retriever_for(index, args.retriever, args.device))
    else:
        index.add(new)
    where = _save_update(index, args.index, args.out, args.new_version, args.root)
    _console().print(f"[green]added[/green] {len(new)} passages: {len(index)} in total, version {index.manifest.get('version')} "
                     f"in {where}")
    return 0


def _cmd_index_remove(args: argparse.Namespace) -> int:
    from pathlib import Path

    ids = [line.strip() for line in Path(args.ids).read_text(encoding="utf-8").splitlines() if line.strip()]
    index = _load_for_update(args.index, args.root)
    index.remove(ids)
    where = _save_update(index, args.index, args.out, args.new_version, args.root)
    _console().print(f"[green]removed[/green] {len(ids)} passages: {len(index)} left, version {index.manifest.get('version')} "
                     f"in {where}")
    return 0


def _cmd_index_tune(args: argparse.Namespace) -> int:
    index = _load_for_update(args.index)
    if index.kind != "faiss":
        raise SystemExit(f"index tune: {args.index} is a {index.kind!r} index; only FAISS indexes have search knobs")
    tuned = index.tune(args.target_recall, k=args.k, queries=args.queries)
    index.save(args.out or _resolve(args.index))
    (name, value), = tuned["params"].items()
    _console().print(f"[green]tuned[/green] {name}={value}: recall@{tuned['k']} {tuned['recall']:.3f} of exact search "
                     f"(target {tuned['target_recall']}, {tuned['queries']} held-out passage vectors)")
    return 0


def _cmd_index_publish(args: argparse.Namespace) -> int:
    from atlas_kit.index.store import IndexStore

    IndexStore(args.root).publish(args.ref)
    _console().print(f"[green]published[/green] {args.ref}")
    return 0


def _cmd_index_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from atlas_kit.index.base import read_manifest
    from atlas_kit.index.store import IndexStore

    store = IndexStore(args.root)
    table = Table("name", "version", "current", "kind", "count", "created")
    for name in store.names():
        for version in store.versions(name):
            m = read_manifest(store.root / name / version)
            table.add_row(name, version, "*" if store.current(name) == version else "", str(m.get("kind")),
                          str(m.get("count")), str(m.get("created", "")))
    _console().print(table)
    return 0


def _cmd_index_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from atlas_kit.index import load_index
    from atlas_kit.index.base import folder_size

    folder = _resolve(args.index)
    index = load_index(folder, allow_mismatch=True)
    info = index.info()
    info["disk_bytes"] = folder_size(folder)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    table = Table(title=str(args.index), show_header=False)
    for key in ("kind", "factory", "count", "version", "dim", "metric", "memory_bytes", "disk_bytes", "created",
                "corpus_checksum", "embeddings_dtype"):
        if key in info:
            table.add_row(key, str(info[key]))
    for key, value in (info.get("retriever") or {}).items():
        table.add_row(f"retriever.{key}", str(value))
    _console().print(table)
    return 0


# ---------------------------------------------------------------------- ask
def _cmd_ask(args: argparse.Namespace) -> int:
    from rich.table import Table

    from atlas_kit import Atlas, Reader, Retriever
    from atlas_kit.index import load_index
    from atlas_kit.index.base import read_manifest

    _only_results(args)
    if args.model is None and args.index is None:
        raise ValueError("ask needs --index (with --reader for an answer) or --model (a saved model folder)")
    if args.model is not None:
        if args.reader is not None or args.retriever is not None:
            raise ValueError("--model brings its own reader and retriever: drop --reader/--retriever")
        # one load of everything, with the saved settings (k, template, lengths, index)
        atlas = Atlas.from_pretrained(args.model, index=_resolve(args.index) if args.index else None,
                                      allow_mismatch=args.force, device=args.device, k=args.k)
        retriever, reader = atlas.retriever, atlas.reader
    else:
        folder = _resolve(args.index)
        retriever_name = args.retriever
        if retriever_name is None:
            name = (read_manifest(folder).get("retriever") or {}).get("name")
            retriever_name = None if name in (None, "", "sentence-transformers/all-MiniLM-L6-v2") else name
        retriever = Retriever.from_pretrained(retriever_name, device=args.device)
        index = load_index(folder, retriever=retriever, allow_mismatch=args.force)
        reader = Reader.from_pretrained(args.reader) if args.reader else None
        if reader is not None and args.device:
            reader.to(args.device)
        atlas = Atlas(retriever, reader, index, k=args.k or 20, allow_mismatch=args.force)
    if args.rerank:
        from atlas_kit.rerank import BiEncoderReranker, CrossEncoderReranker

        if args.rerank == "bi":
            atlas.reranker = BiEncoderReranker(retriever)
        elif args.rerank.startswith("cross:"):
            atlas.reranker = CrossEncoderReranker.from_pretrained(args.rerank[len("cross:"):], device=args.device)
        else:
            raise ValueError(f"--rerank must be 'bi' or 'cross:PATH', got {args.rerank!r}")
    console = _console()
    if reader is None:
        hits = atlas.retrieve(args.question, candidates=args.candidates)
        answer_text, hits = None, hits[0]
    else:
        answer = atlas.ask(args.question, candidates=args.candidates)
        answer_text, hits = answer.text, answer.passages
    if args.json:
        print(json.dumps({"question": args.question, "answer": answer_text,
                          "passages": [{"id": h.id, "title": h.title, "score": h.score} for h in hits]}, indent=2))
        return 0
    console.print(f"[bold]Q:[/bold] {args.question}")
    if answer_text is not None:
        console.print(f"[bold green]A:[/bold green] {answer_text}")
    table = Table("rank", "score", "id", "title", "text")
    for h in list(hits)[: args.show]:
        table.add_row(str(h.rank + 1), f"{h.score:.3f}", h.id, h.title, h.text[:100])
    console.print(table)
    return 0


# ---------------------------------------------------------------------- train / evaluate
def _cmd_run_recipe(args: argparse.Namespace) -> int:
    """``train`` and ``evaluate``: the same recipe run, with or without training."""
    from atlas_kit.recipes import load_recipe, run_recipe

    recipe = load_recipe(args.recipe, args.overrides, smoke=args.smoke)
    evaluate_only = args.command == "evaluate"
    metrics = run_recipe(recipe, evaluate_only=evaluate_only, checkpoint=getattr(args, "checkpoint", None),
                         retrieval_only=getattr(args, "retrieval_only", False),
                         run_file=getattr(args, "run_file", None), overwrite=getattr(args, "overwrite", False),
                         resume=getattr(args, "resume", None))
    # the scalar metrics; per-subject / per-category tables are in the run folder's results.md
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------- interop
def _cmd_evaluate_beir(args: argparse.Namespace) -> int:
    from atlas_kit import Retriever
    from atlas_kit.ir import evaluate_beir

    retriever = Retriever.from_pretrained(args.retriever, device=args.device)
    metrics, _ = evaluate_beir(args.folder, retriever, k=args.k, split=args.split, ks=args.ks, factory=args.factory,
                               batch_size=args.batch_size, run_file=args.run_file,
                               ignore_identical_ids=not args.keep_identical_ids)
    if args.out:
        from atlas_kit.storage import atomic_write_json

        atomic_write_json(args.out, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_convert_atlas(args: argparse.Namespace) -> int:
    from atlas_kit.convert import convert_atlas_checkpoint

    out = convert_atlas_checkpoint(args.checkpoint, args.out, reader_base=args.reader_base,
                                   retriever_base=args.retriever_base)
    _console().print(f"[green]converted[/green] {args.checkpoint} -> {out}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from atlas_kit.model_card import write_model_card

    path = write_model_card(args.folder, run=args.run, datasets=args.dataset or None, base_model=args.base_model)
    _console().print(f"[green]wrote[/green] {path}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from atlas_kit.hub import push_to_hub

    info = push_to_hub(args.folder, args.repo_id, private=args.private or None, run=args.run)
    _console().print(f"[green]pushed[/green] {args.folder} -> {getattr(info, 'commit_url', args.repo_id)}")
    return 0


def _add_interop_commands(sub: Any) -> None:
    card = sub.add_parser("card", help="write README.md (Hub model card) into a retriever/reader/model/index folder")
    card.add_argument("folder")
    card.add_argument("--run", default=None, help="run folder whose metrics.json / recipe.json fill in the card")
    card.add_argument("--dataset", action="append", default=[], help="dataset name (repeatable)")
    card.add_argument("--base-model", default=None)
    card.set_defaults(func=_cmd_card)
    push = sub.add_parser("push", help="upload a folder to the Hugging Face Hub (login with `hf auth login`)")
    push.add_argument("folder")
    push.add_argument("repo_id", help="owner/name")
    push.add_argument("--private", action="store_true")
    push.add_argument("--run", default=None, help="run folder whose metrics fill in the card")
    push.set_defaults(func=_cmd_push)
    beir = sub.add_parser("evaluate-beir", help="index a BEIR folder's corpus, retrieve, score nDCG/MRR/MAP/recall/P@k")
    beir.add_argument("folder", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    beir.add_argument("--retriever", default=None, help="hub id or folder (default: bundled all-MiniLM-L6-v2)")
    beir.add_argument("--split", default="test")
    beir.add_argument("--k", type=int, default=100, help="passages retrieved per query")
    beir.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100], help="metric cut-offs")
    beir.add_argument("--factory", default="Flat")
    beir.add_argument("--batch-size", type=int, default=128)
    beir.add_argument("--run-file", default=None, help="also write the run in TREC format")
    beir.add_argument("--out", default=None, help="also write the metrics as JSON")
    beir.add_argument("--keep-identical-ids", action="store_true",
                      help="keep hits whose id equals the query id (BEIR drops them)")
    beir.add_argument("--device", default=None)
    beir.set_defaults(func=_cmd_evaluate_beir)
    convert = sub.add_parser("convert", help="import checkpoints of other systems")
    csub = convert.add_subparsers(dest="convert_command", metavar="SOURCE")
    atlas = csub.add_parser("atlas", help="an Atlas model.pth.tar -> an atlas_kit model folder (retriever/, reader/)")
    atlas.add_argument("checkpoint", help="Atlas checkpoint: model.pth.tar or its folder")
    atlas.add_argument("out", help="model folder to write (published atomically)")
    atlas.add_argument("--reader-base", default=None,
                       help="T5 config + tokenizer (hub id or folder); default: the checkpoint's opt.reader_model_type")
    atlas.add_argument("--retriever-base", default=None,
                       help="BERT config + tokenizer (hub id or folder); default: the checkpoint's opt.retriever_model_path")
    atlas.set_defaults(func=_cmd_convert_atlas)


# ---------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from atlas_kit.demo import run_demo

    _only_results(args)
    result = run_demo(out=args.out, n_entities=args.entities, steps=args.steps, seed=args.seed, k=args.k)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------- serve
def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from atlas_kit.serve import load_admin_token, load_atlas, serve
    except ImportError as e:
        raise SystemExit(str(e)) from None

    token = load_admin_token(args.admin_token_file)
    atlas = load_atlas(args.model, index=args.index, store=args.store, device=args.device)
    serve(atlas, store=args.store, host=args.host, port=args.port, admin_token=token,
          window_ms=args.batch_window_ms, max_batch=args.max_batch)
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atlas-kit", description="Retrieval-augmented few-shot learning (Atlas-style).")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    index = sub.add_parser("index", help="build, update and inspect indexes")
    isub = index.add_subparsers(dest="index_command", metavar="ACTION")
    build = isub.add_parser("build", help="build an index folder from a passage corpus")
    build.add_argument("corpus", help="passages: Atlas jsonl, DPR tsv, BEIR corpus.jsonl, {id,contents} jsonl, Arrow folder")
    build.add_argument("--out", required=True, help="index folder to write (published atomically), or NAME@VERSION")
    build.add_argument("--kind", default="faiss", help="faiss (default), bm25, ...")
    build.add_argument("--retriever", default=None, help="hub id or folder (default: bundled all-MiniLM-L6-v2)")
    build.add_argument("--factory", default="Flat", help='FAISS factory string, e.g. "Flat", "IVF1024,PQ64", "HNSW32"')
    build.add_argument("--format", default="auto", help="corpus format (auto-detected by default)")
    build.add_argument("--batch-size", type=int, default=128)
    build.add_argument("--embeddings-dtype", default="float16", choices=["float16", "float32"])
    build.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    build.add_argument("--root", default="indexes", help="index store root for --out NAME@VERSION")
    build.add_argument("--target-recall", type=float, default=0.95,
                       help="tune nprobe/efSearch of an IVF/HNSW index to this recall of exact top-20 (0: do not tune)")
    build.add_argument("--chunk-size", type=int, default=10_000,
                       help="passages encoded per chunk; each chunk's vectors go to disk as it finishes")
    build.add_argument("--resume", action="store_true", help="continue a killed build from its finished chunks")
    build.set_defaults(func=_cmd_index_build)
    add = isub.add_parser("add", help="add passages to an index (ids must be new); writes a new version")
    add.add_argument("index", help="index folder or NAME[@VERSION]")
    add.add_argument("passages", help="passages to add (any supported format)")
    add.add_argument("--out", default=None, help="write here (default: a folder is replaced atomically; "
                     "NAME[@VERSION] gets a new version, made current if VERSION was)")
    add.add_argument("--new-version", default=None, help="name of the new store version (default VERSION-2, -3, ...)")
    add.add_argument("--root", default=None, help="index store root (default $ATLAS_KIT_INDEXES or indexes/)")
    add.add_argument("--retriever", default=None, help="default: the one recorded in the manifest")
    add.add_argument("--device", default=None)
    add.set_defaults(func=_cmd_index_add)
    remove = isub.add_parser("remove", help="remove passages by id (one id per line in FILE)")
    remove.add_argument("index", help="index folder or NAME[@VERSION]")
    remove.add_argument("--ids", required=True, help="file with one passage id per line")
    remove.add_argument("--out", default=None, help="write here (default: as for index add)")
    remove.add_argument("--new-version", default=None, help="name of the new store version (default VERSION-2, -3, ...)")
    remove.add_argument("--root", default=None, help="index store root (default $ATLAS_KIT_INDEXES or indexes/)")
    remove.set_defaults(func=_cmd_index_remove)
    tune = isub.add_parser("tune", help="choose nprobe/efSearch for a target recall of exact search; stored in the manifest")
    tune.add_argument("index", help="index folder or NAME[@VERSION]")
    tune.add_argument("--target-recall", type=float, default=0.95, help="fraction of exact top-k neighbours to find")
    tune.add_argument("--k", type=int, default=20)
    tune.add_argument("--queries", type=int, default=500, help="held-out passage vectors used as queries")
    tune.add_argument("--out", default=None, help="write here instead of replacing the index folder")
    tune.set_defaults(func=_cmd_index_tune)
    publish = isub.add_parser("publish", help="make NAME@VERSION the current version in the index store")
    publish.add_argument("ref", help="NAME@VERSION")
    publish.add_argument("--root", default="indexes")
    publish.set_defaults(func=_cmd_index_publish)
    ls = isub.add_parser("list", help="named indexes and their versions in the index store")
    ls.add_argument("--root", default="indexes")
    ls.set_defaults(func=_cmd_index_list)
    info = isub.add_parser("info", help="kind, count, sizes, retriever identity, version")
    info.add_argument("index", help="index folder or NAME[@VERSION]")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_index_info)

    ask = sub.add_parser("ask", help="answer a question (or just retrieve, without --reader)")
    ask.add_argument("question")
    ask.add_argument("--model", default=None,
                     help="a saved model folder (Atlas.save_pretrained, e.g. runs/demo/model): its reader, retriever, k and index")
    ask.add_argument("--index", default=None,
                     help="index folder or NAME[@VERSION] in the index store (e.g. wiki@2020); default with --model: its own")
    ask.add_argument("--reader", default=None, help="T5 checkpoint: hub id or folder")
    ask.add_argument("--retriever", default=None, help="default: the one recorded in the index manifest")
    ask.add_argument("--k", type=int, default=None, help="passages read (default: the model's k, else 20)")
    ask.add_argument("--show", type=int, default=5, help="passages to print")
    ask.add_argument("--rerank", default=None, help="'bi' (fresh bi-encoder vectors) or 'cross:PATH' (cross-encoder checkpoint)")
    ask.add_argument("--candidates", type=int, default=None, help="candidates fetched before reranking (default 4*k)")
    ask.add_argument("--force", action="store_true", help="accept an index built by another encoder fingerprint")
    ask.add_argument("--device", default=None)
    ask.add_argument("--json", action="store_true")
    ask.set_defaults(func=_cmd_ask)

    train = sub.add_parser("train", help="few-shot training from a YAML recipe (key=value overrides)")
    train.add_argument("recipe", help="recipes/NAME.yaml")
    train.add_argument("overrides", nargs="*", help="e.g. train.steps=200 data.shots=64 reader=PATH")
    train.add_argument("--smoke", action="store_true", help="a few examples and steps: checks the recipe runs")
    train.add_argument("--checkpoint", default=None, help="start from a saved model folder (a run's model/)")
    train.add_argument("--resume", default=None, metavar="RUN/checkpoint-N",
                       help="continue an interrupted run exactly from one of its checkpoints (same recipe and "
                            "overrides; the run folder defaults to the checkpoint's parent)")
    train.add_argument("--overwrite", action="store_true",
                       help="allow an output_dir that is not a run of this recipe (its run files are replaced)")
    train.set_defaults(func=_cmd_run_recipe)
    evaluate = sub.add_parser("evaluate", help="evaluate a recipe's model on its eval data")
    evaluate.add_argument("recipe")
    evaluate.add_argument("overrides", nargs="*")
    evaluate.add_argument("--checkpoint", default=None, help="a saved model folder (a run's model/)")
    evaluate.add_argument("--smoke", action="store_true")
    evaluate.add_argument("--overwrite", action="store_true",
                          help="allow an output_dir that is not a run of this recipe (its run files are replaced)")
    evaluate.add_argument("--retrieval-only", action="store_true",
                          help="no reader: recall@k / answer recall@k / R-Precision of the retriever and index")
    evaluate.add_argument("--run-file", default=None,
                          help="with --retrieval-only: also write the ranking as a TREC run file (qid Q0 docid rank score tag)")
    evaluate.set_defaults(func=_cmd_run_recipe)

    demo = sub.add_parser("demo", help="end-to-end demo on a generated world (offline, CPU; about 90 s of CPU time)")
    demo.add_argument("--out", default="runs/demo", help="run folder")
    demo.add_argument("--entities", type=int, default=None)
    demo.add_argument("--steps", type=int, default=None)
    demo.add_argument("--k", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    srv = sub.add_parser("serve", help="HTTP API + web page over a live model (needs the 'serve' extra)")
    srv.add_argument("--model", default=None, help="saved model or run folder (default: what `atlas-kit demo` left)")
    srv.add_argument("--index", default=None, help="NAME@VERSION in --store, or an index folder (default: the model's)")
    srv.add_argument("--store", default="indexes", help="index store where swap/publish refs resolve")
    srv.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--admin-token-file", default=None, help="file holding the admin token (default: $ATLAS_KIT_ADMIN_TOKEN)")
    srv.add_argument("--batch-window-ms", type=float, default=0.0,
                     help="how long an idle server waits for more requests to batch (0: fuse only what is queued)")
    srv.add_argument("--max-batch", type=int, default=32, help="most questions fused into one model call (1: no batching)")
    srv.add_argument("--device", default=None)
    srv.set_defaults(func=_cmd_serve)

    _add_interop_commands(sub)
    _add_memory_commands(sub)
    return parser


def _add_memory_commands(sub: Any) -> None:
    from atlas_kit.memory_cli import add_memory_commands  # argparse only: atlas_kit.memory imports torch

    add_memory_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after flags such as --smoke
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        from atlas_kit import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        if args.verbose > 0:
            log.exception("%s", e)
        else:
            log.error("%s", e)
        return 2
    except Exception as e:  # noqa: BLE001 - a library error is one clear line, not a traceback (-v: traceback)
        if args.verbose > 0:
            log.exception("%s: %s", type(e).__name__, e)
        else:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            log.error("%s: %s (run with -v for the traceback)", type(e).__name__, message)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
