"""Atlas's training configuration: the generic loop's fields (:class:`~atlas_kit.train.loop.LoopConfig`)
plus what the retrieve-and-read step needs; loadable from YAML and ``key=value`` overrides."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atlas_kit.train.loop import LoopConfig

__all__ = ["TrainConfig", "parse_schedule", "due"]

REFRESH = ("none", "reindex", "query_side", "rerank")


@dataclass
class TrainConfig(LoopConfig):
    """Everything a few-shot Atlas run needs; defaults follow Atlas's ``src/options.py`` where it
    has one (learning rates 1e-4 / 1e-5, weight decay 0.1, cosine schedule decaying to 0.1 x the
    peak, clip 1.0 over reader and retriever jointly, τs = τg = 0.01); the loop's own fields are
    documented on :class:`~atlas_kit.train.loop.LoopConfig`.

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
    How examples are evaluated is the task's business (:mod:`atlas_kit.tasks`), not the config's.
    """

    n_context: int = 5
    reader_lr: float = 1e-4
    retriever_lr: float = 1e-5
    retriever_loss: str = "pdist"
    temperature_score: float = 0.01
    temperature_gold: float = 0.01
    signal_options: dict[str, Any] = field(default_factory=dict)  # kwargs for the reader signal, e.g. {"aggregation": "probssum"} (adist)
    refresh: str = "none"
    refresh_schedule: str = "0-1000000:500"
    rerank_candidates: int = 20
    gradient_checkpointing: bool = False
    retriever_dropout: float | None = None  # None: the retriever's own; 0 turns it off (2.1x faster both-side steps on CPU)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refresh not in REFRESH:
            raise ValueError(f"refresh must be one of {REFRESH}, got {self.refresh!r}")
        if self.n_context < 1:
            raise ValueError("n_context must be >= 1")
        parse_schedule(self.refresh_schedule)
        if self.retriever_dropout is not None and not 0.0 <= self.retriever_dropout < 1.0:
            raise ValueError(f"retriever_dropout must be in [0, 1) or None, got {self.retriever_dropout!r}")

    @property
    def trains_retriever(self) -> bool:
        return self.retriever_loss != "none" and self.retriever_lr > 0


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
