"""``atlas-kit`` command line: one small parser per command, all calling the public API.

    atlas-kit index build CORPUS --out indexes/NAME [--retriever R] [--factory Flat]
    atlas-kit index info indexes/NAME
    atlas-kit ask "question" --index indexes/NAME --reader R [--k 20]
    atlas-kit ask "question" --model runs/demo/model
    atlas-kit demo
"""
from __future__ import annotations

import argparse
import json
import logging
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
    from atlas_kit.index import FaissIndex

    passages = load_passages(args.corpus, format=args.format)
    log.info("loaded %d passages from %s", len(passages), args.corpus)
    if args.kind != "faiss":
        from atlas_kit.index import INDEX_KINDS

        if args.kind not in INDEX_KINDS:
            raise SystemExit(f"index kind {args.kind!r} is not available (known: {sorted(INDEX_KINDS)})")
        index = INDEX_KINDS[args.kind].build(passages, **_kind_options(args))
    else:
        retriever = Retriever.from_pretrained(args.retriever, device=args.device)
        index = FaissIndex.build(passages, retriever, factory=args.factory, batch_size=args.batch_size,
                                 embeddings_dtype=args.embeddings_dtype)
    if "@" in args.out and "/" not in args.out:
        from atlas_kit.index.store import IndexStore

        where = IndexStore(args.root).add(args.out, index, publish=True)
    else:
        index.save(args.out)
        where = args.out
    _console().print(f"[green]wrote[/green] {where}: {len(index)} passages, kind={index.kind}")
    return 0


def _kind_options(args: argparse.Namespace) -> dict[str, Any]:
    return {}


def _resolve(spec: str) -> str:
    from atlas_kit.index.store import resolve_index_path

    return str(resolve_index_path(spec))


def _load_for_update(spec: str):
    from atlas_kit.index import load_index

    return load_index(_resolve(spec), allow_mismatch=True, mmap=False)


def _retriever_for(index: Any, name: str | None, device: str | None):
    from atlas_kit import Retriever

    if name is None:
        recorded = (index.manifest.get("retriever") or {}).get("name")
        name = None if recorded in (None, "", "sentence-transformers/all-MiniLM-L6-v2") else recorded
    return Retriever.from_pretrained(name, device=device)


def _cmd_index_add(args: argparse.Namespace) -> int:
    from atlas_kit import load_passages

    index = _load_for_update(args.index)
    new = load_passages(args.passages)
    if index.needs_embeddings:
        index.add(new, retriever=_retriever_for(index, args.retriever, args.device))
    else:
        index.add(new)
    index.save(args.out or _resolve(args.index))
    _console().print(f"[green]added[/green] {len(new)} passages: {len(index)} in total, version {index.manifest.get('version')}")
    return 0


def _cmd_index_remove(args: argparse.Namespace) -> int:
    from pathlib import Path

    ids = [line.strip() for line in Path(args.ids).read_text(encoding="utf-8").splitlines() if line.strip()]
    index = _load_for_update(args.index)
    index.remove(ids)
    index.save(args.out or _resolve(args.index))
    _console().print(f"[green]removed[/green] {len(ids)} passages: {len(index)} left, version {index.manifest.get('version')}")
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
                         retrieval_only=getattr(args, "retrieval_only", False))
    # the scalar metrics; per-subject / per-category tables are in the run folder's results.md
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from atlas_kit.demo import run_demo

    _only_results(args)
    result = run_demo(out=args.out, n_entities=args.entities, steps=args.steps, seed=args.seed, k=args.k)
    return 0 if result["ok"] else 1


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
    build.set_defaults(func=_cmd_index_build)
    add = isub.add_parser("add", help="add passages to an index (ids must be new); writes a new version")
    add.add_argument("index", help="index folder or NAME[@VERSION]")
    add.add_argument("passages", help="passages to add (any supported format)")
    add.add_argument("--out", default=None, help="write here instead of replacing the index folder")
    add.add_argument("--retriever", default=None, help="default: the one recorded in the manifest")
    add.add_argument("--device", default=None)
    add.set_defaults(func=_cmd_index_add)
    remove = isub.add_parser("remove", help="remove passages by id (one id per line in FILE)")
    remove.add_argument("index", help="index folder or NAME[@VERSION]")
    remove.add_argument("--ids", required=True, help="file with one passage id per line")
    remove.add_argument("--out", default=None, help="write here instead of replacing the index folder")
    remove.set_defaults(func=_cmd_index_remove)
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
    train.set_defaults(func=_cmd_run_recipe)
    evaluate = sub.add_parser("evaluate", help="evaluate a recipe's model on its eval data")
    evaluate.add_argument("recipe")
    evaluate.add_argument("overrides", nargs="*")
    evaluate.add_argument("--checkpoint", default=None, help="a saved model folder (a run's model/)")
    evaluate.add_argument("--smoke", action="store_true")
    evaluate.add_argument("--retrieval-only", action="store_true",
                          help="no reader: recall@k / answer recall@k / R-Precision of the retriever and index")
    evaluate.set_defaults(func=_cmd_run_recipe)

    demo = sub.add_parser("demo", help="end-to-end demo on a generated world (offline, CPU; about 90 s of CPU time)")
    demo.add_argument("--out", default="runs/demo", help="run folder")
    demo.add_argument("--entities", type=int, default=None)
    demo.add_argument("--steps", type=int, default=None)
    demo.add_argument("--k", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


# Later modules (train, evaluate, index add/remove) register their sub-commands here.
_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


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
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
