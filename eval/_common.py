"""Shared plumbing for eval/ scripts: locating ../shared/data, printing a table, writing JSON."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = ROOT / "eval" / "results"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data (or $ATLAS_KIT_DATA); a clear error if it is missing."""
    base = Path(os.environ.get("ATLAS_KIT_DATA", ROOT.parent / "shared" / "data"))
    path = base.joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"data file {path} not found: set ATLAS_KIT_DATA to the folder holding {'/'.join(parts)}")
    return path


def squad_open_paths() -> tuple[Path, Path]:
    return shared_data("squad2_cs224n_split", "dev-v2.0.json"), shared_data("squad2_cs224n_split", "test-v2.0.json")


def machine() -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report(name: str, rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None, title: str | None = None) -> Path:
    """Print ``rows`` as a table and write ``eval/results/NAME.json`` (atomically)."""
    from rich.console import Console
    from rich.table import Table

    from atlas_kit.storage import atomic_write_json

    table = Table(title=title or name)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_fmt(r.get(c, "")) for c in cols])
    Console().print(table)
    out = RESULTS / f"{name}.json"
    atomic_write_json(out, {"name": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(),
                            **(meta or {}), "rows": list(rows)})
    print(f"wrote {out.relative_to(ROOT)}")
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
