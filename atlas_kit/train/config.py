"""Training configuration: one flat dataclass, loadable from YAML and ``key=value`` overrides."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "parse_schedule"]

REFRESH = ("none", "reindex", "query_side", "rerank")
SCHEDULERS = ("linear", "cosine", "constant")
CLIP_GROUPS = ("joint", "separate")


@dataclass
class TrainConfig:
    """Everything a few-shot run needs; defaults follow Atlas's ``src/options.py`` where it has one
    (learning rates 1e-4 / 1e-5, weight decay 0.1, cosine schedule decaying to 0.1 x the peak,
    clip 1.0 over reader and retriever jointly, τs = τg = 0.01).

    Where it differs, deliberately: warm-up goes (step + 1) / warmup_steps, so the first update is
    not taken at learning rate 0 as in Atlas's schedulers; ``warmup_steps`` defaults to 10, not
    Atlas's 1000, because few-shot runs here are 100-1000 steps; ``clip_groups="separate"`` is
    offered besides Atlas's joint clipping (see :mod:`atlas_kit.losses.kl` for why it matters).

    ``n_context`` passages go to the reader; ``retriever_loss`` picks the objective that teaches
    the retriever from the reader (``none`` freezes it; ``gold`` trains it on labelled gold
    passages instead, the supervised upper bound). ``refresh`` says how the index keeps up
    with a changing passage encoder: ``reindex`` re-embeds the corpus on ``refresh_schedule``
    (Atlas syntax ``"0-100:10,100-1000:500"``: every 10 steps until 100, then every 500),
    ``query_side`` unties the encoders and freezes the passage side, ``rerank`` retrieves
    ``rerank_candidates`` from the stale index and re-embeds them with the current passage encoder.
    """

    steps: int = 100
    batch_size: int = 4
    accumulation: int = 1
    n_context: int = 5
    reader_lr: float = 1e-4
    retriever_lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 10
    scheduler: str = "cosine"
    lr_min_ratio: float = 0.1  # the schedule ends at lr_min_ratio x the peak (Atlas's "ratio")
    clip_norm: float = 1.0
    clip_groups: str = "joint"  # joint (Atlas: one norm over reader + retriever) | separate (one norm each)
    retriever_loss: str = "pdist"
    temperature_score: float = 0.01
    temperature_gold: float = 0.01
    signal_options: dict[str, Any] = field(default_factory=dict)  # kwargs for the reader signal, e.g. {"aggregation": "probssum"} (adist)
    refresh: str = "none"
    refresh_schedule: str = "0-1000000:500"
    rerank_candidates: int = 20
    eval_every: int = 0
    save_every: int = 0
    eval_batch_size: int = 16
    task: str | None = None  # evaluation task (qa | mc | kilt); None = read off the examples
    debias: bool = True  # multiple choice: also score every cyclic permutation of the options
    amp: str | None = None  # "bf16" / "fp16" on CUDA; ignored on CPU
    gradient_checkpointing: bool = False
    retriever_dropout: float | None = None  # None: the retriever's own; 0 turns it off (2.1x faster both-side steps on CPU)
    seed: int = 0
    output_dir: str | None = None
    log_every: int = 10
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.refresh not in REFRESH:
            raise ValueError(f"refresh must be one of {REFRESH}, got {self.refresh!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.clip_groups not in CLIP_GROUPS:
            raise ValueError(f"clip_groups must be one of {CLIP_GROUPS}, got {self.clip_groups!r}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError(f"lr_min_ratio must be in [0, 1], got {self.lr_min_ratio!r}")
        if self.accumulation < 1 or self.batch_size < 1 or self.n_context < 1:
            raise ValueError("batch_size, accumulation and n_context must be >= 1")
        parse_schedule(self.refresh_schedule)
        if self.retriever_dropout is not None and not 0.0 <= self.retriever_dropout < 1.0:
            raise ValueError(f"retriever_dropout must be in [0, 1) or None, got {self.retriever_dropout!r}")

    @property
    def trains_retriever(self) -> bool:
        return self.retriever_loss != "none" and self.retriever_lr > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**values)


def parse_schedule(spec: str | int) -> list[tuple[int, int, int]]:
    """Atlas's refresh schedule (``--refresh_index``) -> [(start, end, every)].

    ``"0-100:10,100-1000:500"`` -> [(0, 100, 10), (100, 1000, 500)]: every 10 steps from step 0 to
    100, then every 500 (counted from 100) until 1000. A bare number is a fixed period (``"1000"``:
    every 1000 steps), ``"-1"`` never. Ranges may overlap: as in Atlas, the first range that holds
    the step decides (see :func:`due`).
    """
    text = str(spec).strip()
    if text == "-1":
        return []
    if text.isdigit():
        every = int(text)
        if every <= 0:
            raise ValueError(f"bad refresh schedule {spec!r}: a period must be > 0")
        return [(0, 2**62, every)]
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            span, every = part.split(":")
            start, end = span.split("-")
            out.append((int(start), int(end), int(every)))
        except ValueError:
            raise ValueError(f"bad refresh schedule part {part!r} in {spec!r} (expected START-END:EVERY, "
                             "a bare period such as 1000, or -1)") from None
        if out[-1][2] <= 0 or out[-1][1] <= out[-1][0]:
            raise ValueError(f"bad refresh schedule part {part!r}: need END > START and EVERY > 0")
    return out


def due(schedule: list[tuple[int, int, int]], step: int) -> bool:
    """Whether a refresh is due after ``step`` optimizer steps (step >= 1): the first range with
    start <= step < end decides, as Atlas's ``IndexRefreshScheduler.is_time_to_refresh`` does
    (step 0 is the index as built, never a refresh here)."""
    if step <= 0:
        return False
    for start, end, every in schedule:
        if start <= step < end:
            return (step - start) % every == 0
    return False
