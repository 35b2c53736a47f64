"""``atlas-kit memory ...``: build, inspect and answer with EMAT key-value memories; train kNN-memory LMs.

    atlas-kit memory build PAQ.jsonl --model EMAT_FOLDER --out kb@v1 [--format qa] [--backend HNSW32]
    atlas-kit memory info kb@v1
    atlas-kit memory ask "question" --model EMAT_FOLDER --memory kb@v1 [--k 10] [--index wiki@2018]
    atlas-kit memory knn train recipes/memory/knn-passkey-tiny.yaml [train.steps=200 cross_batch.d=1]

``--model`` is an EMAT folder (``EMAT.save_pretrained``) or a saved ``Atlas`` with an EMAT reader
(``Atlas.save_pretrained``: its memory and k are used unless given). Memories are index folders:
``--out NAME@VERSION`` writes into the index store (``--root``, default ``$ATLAS_KIT_INDEXES`` or
``indexes/``) and publishes it; a path writes a plain folder. This module is imported by the CLI
parser, so it imports nothing heavy at module level (it lives outside ``atlas_kit.memory``, whose
``__init__`` imports torch).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_memory_commands"]


def _load_model(folder: str, device: str | None):
    """(EMAT, the Atlas config of a saved Atlas folder or None)."""
    from atlas_kit.memory.emat import EMAT, EMAT_CONFIG

    path = Path(folder)
    if (path / EMAT_CONFIG).is_file():
        return EMAT.from_pretrained(path, device=device), None
    if (path / "atlas_config.json").is_file() and (path / "reader" / EMAT_CONFIG).is_file():
        from atlas_kit.storage import read_json

        return EMAT.from_pretrained(path / "reader", device=device), read_json(path / "atlas_config.json")
    raise FileNotFoundError(f"{folder}: neither an EMAT folder ({EMAT_CONFIG}) nor a saved Atlas with an EMAT reader")


def _search_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if getattr(args, "nprobe", None):
        params["nprobe"] = args.nprobe
    if getattr(args, "ef_search", None):
        params["efSearch"] = args.ef_search
    return params


def _cmd_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from atlas_kit.memory.emat_memory import QAMemory

    emat, _ = _load_model(args.model, args.device)
    memory = QAMemory.build(args.pairs, emat, backend=args.backend, format=args.format, batch_size=args.batch_size,
                            show_progress=True, search_params=_search_params(args))
    if "@" in args.out and "/" not in args.out:
        from atlas_kit.index.store import IndexStore, store_root

        where = IndexStore(store_root(args.root)).add(args.out, memory, publish=True)
    else:
        memory.save(args.out)
        where = Path(args.out)
    Console().print(f"[green]wrote[/green] {where}: {len(memory)} QA pairs, {memory.bytes_per_slot} bytes per slot, "
                    f"backend {memory.kv.backend}")
    return 0


def _open_memory(spec: str, root: str | None, emat: Any = None, allow_mismatch: bool = False):
    from atlas_kit.index.store import resolve_index_path
    from atlas_kit.memory.emat_memory import QAMemory

    return QAMemory.load(resolve_index_path(spec, root), emat=emat, allow_mismatch=allow_mismatch)


def _cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(_open_memory(args.memory, args.root).info(), indent=2))
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from rich.console import Console

    from atlas_kit.api import Atlas

    emat, saved = _load_model(args.model, args.device)
    spec = args.memory or (str(Path(args.model) / saved["memory"]) if saved and saved.get("memory") else None)
    if spec is None:
        raise ValueError("memory ask needs --memory (NAME@VERSION or a folder)")
    memory = _open_memory(spec, args.root, emat, allow_mismatch=args.force)
    retriever = index = None
    if args.index:
        from atlas_kit.index import load_index
        from atlas_kit.index.store import resolve_index_path
        from atlas_kit.retriever import Retriever

        retriever = Retriever.from_pretrained(args.retriever, device=args.device)
        index = load_index(resolve_index_path(args.index, args.root), retriever=retriever, allow_mismatch=args.force)
    k = args.k or (saved or {}).get("memory_k", 10)
    atlas = Atlas(retriever, emat, index, memory=memory, memory_k=k, k=args.passages, allow_mismatch=args.force)
    answer = atlas.ask(args.question, num_beams=args.beams)
    console = Console()
    console.print(f"[bold]{answer.text}[/bold]")
    for q, a in answer.memory or []:
        console.print(f"  slot: {q} -> {a}")
    for p in answer.passages:
        console.print(f"  passage {p.id} ({p.score:.3f}): {p.title} {p.text[:80]}")
    return 0


def _cmd_knn_train(args: argparse.Namespace) -> int:
    from atlas_kit.memory.knn_recipe import run_command

    return run_command(args)


def add_memory_commands(sub: Any) -> None:
    """Register ``memory build | info | ask | knn train`` on the top-level sub-parser."""
    mem = sub.add_parser("memory", help="EMAT key-value memories of QA pairs (build, info, ask); kNN-memory LMs (knn train)")
    msub = mem.add_subparsers(dest="memory_command", metavar="ACTION")
    build = msub.add_parser("build", help="encode a QA-pair file (PAQ jsonl {question, answer}, NQ/TriviaQA jsonl, ...)")
    build.add_argument("pairs")
    build.add_argument("--model", required=True, help="EMAT folder (or a saved Atlas with an EMAT reader)")
    build.add_argument("--out", required=True, help="NAME@VERSION in the index store, or a folder")
    build.add_argument("--format", default="qa", choices=["qa", "squad", "kilt"])
    build.add_argument("--backend", default="Flat", help='"Flat" (exact MIPS) or a FAISS factory string, e.g. HNSW32')
    build.add_argument("--nprobe", type=int, default=None)
    build.add_argument("--ef-search", type=int, default=None, help="HNSW efSearch (EMAT used 128)")
    build.add_argument("--batch-size", type=int, default=256)
    build.add_argument("--root", default=None, help="index store (default $ATLAS_KIT_INDEXES or indexes/)")
    build.add_argument("--device", default=None)
    build.set_defaults(func=_cmd_build)
    info = msub.add_parser("info", help="size, backend, bytes per slot and encoder fingerprint of a memory")
    info.add_argument("memory")
    info.add_argument("--root", default=None)
    info.set_defaults(func=_cmd_info)
    knn = msub.add_parser("knn", help="kNN-memory language models (Memorizing Transformer, FoT)")
    ksub = knn.add_subparsers(dest="knn_command", metavar="ACTION")
    train = ksub.add_parser("train", help="train and evaluate a kNN-memory LM from a recipe (recipes/memory/knn-*.yaml)")
    train.add_argument("recipe", help="YAML recipe (see recipes/memory/knn-*.yaml)")
    train.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=200 cross_batch.d=1")
    train.add_argument("-v", "--verbose", action="count", default=0)
    train.set_defaults(func=_cmd_knn_train)
    ask = msub.add_parser("ask", help="answer from a memory (and passages with --index)")
    ask.add_argument("question")
    ask.add_argument("--model", required=True)
    ask.add_argument("--memory", default=None, help="NAME@VERSION or folder (default: the saved Atlas's memory)")
    ask.add_argument("--k", type=int, default=None, help="memory slots read (default: saved, else 10)")
    ask.add_argument("--index", default=None, help="also read retrieved passages from this index")
    ask.add_argument("--retriever", default=None, help="the index's retriever (default: bundled MiniLM)")
    ask.add_argument("--passages", type=int, default=5, help="passages read with --index")
    ask.add_argument("--beams", type=int, default=1)
    ask.add_argument("--force", action="store_true", help="accept a memory/index encoded by other weights")
    ask.add_argument("--root", default=None)
    ask.add_argument("--device", default=None)
    ask.set_defaults(func=_cmd_ask)
