"""The generic training loop, shared by every model family of the library.

What a family does per micro-batch lives in a :class:`TrainStep` (Atlas's retrieve -> reader loss
+ retriever objective -> refresh is :class:`~atlas_kit.train.atlas_step.AtlasStep`; the memory
models provide their own). :class:`TrainLoop` does the rest, the same way for all of them:

* the data order: micro-batch ``m`` of optimizer step ``s`` on rank ``r`` is a pure function of
  ``(seed, s, m, r)`` (seeded permutations, one per epoch), so a resumed run sees exactly the
  batches the uninterrupted one would have, and N ranks x batch b see per step the examples one
  process sees with batch N*b;
* AdamW over the step's parameter groups (each with its own learning rate), the learning-rate
  schedule, gradient accumulation, clipping (one norm over all groups, as Atlas does, or one per
  group), AMP on CUDA (bf16, or fp16 with a gradient scaler);
* data parallelism: gradients all-reduced (mean) across ranks in one flat buffer per device and
  dtype, parameters broadcast from rank 0 at the start;
* the run folder: ``config.json``, ``train_log.jsonl`` (exactly the steps behind the current
  weights), TensorBoard scalars, ``loss.png``, ``checkpoint-N/`` folders (the step's weights plus
  optimizer, scheduler, RNG and step state: resuming reproduces the uninterrupted run exactly) and
  the final metrics;
* periodic evaluation through the step's own ``evaluate``.

Where it deliberately differs from the obvious library choices, and why:

* Data parallelism is an explicit gradient all-reduce, not ``DistributedDataParallel`` (nor
  ``accelerate``'s ``prepare``, which wraps models in it): one Atlas step runs several custom
  forwards through different modules (FiD reader, reader signal, query and passage encoders), and
  a memory model's step runs one forward per segment; DDP hooks assume one forward per backward
  through the wrapper. The all-reduce is tested to match one process with the global batch
  (``tests/train/test_distributed.py``).
* Schedules: ``linear`` / ``cosine`` / ``constant`` are Atlas's (``src/util.py``: decay from the
  peak to ``lr_min_ratio`` x the peak, cosine along a quarter period), which no
  ``transformers`` schedule reproduces (its ``cosine_with_min_lr`` is a half period; its ``linear``
  ends at 0); any other name goes to :func:`transformers.get_scheduler` (``inverse_sqrt``,
  ``polynomial``, ``cosine_with_min_lr``, ...). Warm-up is (step + 1) / warmup_steps for Atlas's
  schedules so the first update is not taken at learning rate 0.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from atlas_kit.storage import atomic_dir, atomic_write_json, atomic_write_text, read_json

__all__ = ["LoopConfig", "TrainStep", "TrainLoop", "init_distributed", "lr_lambda", "ATLAS_SCHEDULERS"]

log = logging.getLogger(__name__)

ATLAS_SCHEDULERS = ("linear", "cosine", "constant")
CLIP_GROUPS = ("joint", "separate")
AMP = (None, "bf16", "fp16")


@dataclass
class LoopConfig:
    """What every training run needs, whatever the model. Defaults follow Atlas's
    ``src/options.py`` where it has one (weight decay 0.1, cosine decay to 0.1 x the peak, clip 1.0
    over all parameters jointly); ``warmup_steps`` defaults to 10, not Atlas's 1000, because
    few-shot runs here are 100-1000 steps."""

    steps: int = 100
    batch_size: int = 4  # examples per micro-batch per process
    accumulation: int = 1
    weight_decay: float = 0.1
    warmup_steps: int = 10
    scheduler: str = "cosine"  # Atlas's linear | cosine | constant, or any transformers.get_scheduler name
    lr_min_ratio: float = 0.1  # Atlas's schedules end at lr_min_ratio x the peak (Atlas's "ratio")
    clip_norm: float = 1.0
    clip_groups: str = "joint"  # joint (one norm over every group) | separate (one norm per group)
    eval_every: int = 0
    save_every: int = 0
    eval_batch_size: int = 16
    amp: str | None = None  # "bf16" / "fp16" on CUDA; ignored on CPU
    seed: int = 0
    output_dir: str | None = None
    log_every: int = 10
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.clip_groups not in CLIP_GROUPS:
            raise ValueError(f"clip_groups must be one of {CLIP_GROUPS}, got {self.clip_groups!r}")
        if self.amp not in AMP:
            raise ValueError(f"amp must be bf16, fp16 or None, got {self.amp!r}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError(f"lr_min_ratio must be in [0, 1], got {self.lr_min_ratio!r}")
        if self.accumulation < 1 or self.batch_size < 1 or self.steps < 0:
            raise ValueError("batch_size and accumulation must be >= 1 and steps >= 0")
        if self.scheduler not in ATLAS_SCHEDULERS:
            from transformers.trainer_utils import SchedulerType

            known = [s.value for s in SchedulerType]
            if self.scheduler not in known:
                raise ValueError(f"scheduler must be one of {ATLAS_SCHEDULERS} (Atlas's) or a transformers "
                                 f"schedule ({', '.join(known)}), got {self.scheduler!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**values)


def lr_lambda(cfg: LoopConfig):
    """Atlas's schedules (``src/util.py``) as a LambdaLR factor: after warm-up, ``linear`` falls in
    a straight line and ``cosine`` along a quarter cosine, both from the peak to ``lr_min_ratio`` x
    the peak at ``cfg.steps``; ``constant`` stays at the peak. Warm-up is (step + 1) / warmup_steps."""
    floor = cfg.lr_min_ratio

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        if cfg.scheduler == "cosine":
            return floor + (1.0 - floor) * math.cos(0.5 * math.pi * progress)
        return 1.0 - (1.0 - floor) * progress

    return f


def _scheduler(cfg: LoopConfig, optimizer: torch.optim.Optimizer):
    if cfg.scheduler in ATLAS_SCHEDULERS:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    from transformers import get_scheduler

    extra = {"min_lr_rate": cfg.lr_min_ratio} if cfg.scheduler == "cosine_with_min_lr" else None
    return get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=max(1, cfg.steps), scheduler_specific_kwargs=extra)


def init_distributed() -> tuple[int, int]:
    """(rank, world size). Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) the
    process group is initialised here if the launcher has not done it: NCCL on GPUs, Gloo on CPU."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class TrainStep:
    """What one model family does in training; :class:`TrainLoop` does everything else.

    Subclasses implement :meth:`modules`, :meth:`param_groups` and :meth:`loss`; the rest has
    defaults. ``primary_log`` names the log entry shown on the progress bar and plotted."""

    primary_log = "loss"

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every module trained or saved, by name (broadcast from rank 0 under data parallelism)."""
        raise NotImplementedError

    def param_groups(self, cfg: LoopConfig) -> list[dict[str, Any]]:
        """Optimizer groups: ``[{"name": ..., "params": [...], "lr": ...}]``. Default: one group per
        module with its trainable parameters, at ``cfg.lr`` (a family's config, a subclass of
        :class:`LoopConfig`, defines its learning rates: Atlas's has ``reader_lr`` and
        ``retriever_lr`` and overrides this)."""
        lr = getattr(cfg, "lr", None)
        if lr is None:
            raise TypeError(f"{type(cfg).__name__} has no 'lr': give param_groups their learning rates")
        groups = []
        for name, module in self.modules().items():
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                groups.append({"name": name, "params": params, "lr": lr})
        return groups

    def train_mode(self) -> None:
        for module in self.modules().values():
            module.train()

    def loss(self, batch: list[Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch: the loss to backpropagate and float logs (averaged over micro-batches
        and ranks by the loop)."""
        raise NotImplementedError

    def after_step(self, step: int) -> dict[str, float]:
        """Called after each optimizer step (``step`` = steps done); e.g. refresh an index."""
        return {}

    def evaluate(self, examples: Sequence[Any], step: int, out: Path | None = None) -> dict[str, Any]:
        """Metrics on ``examples``; with ``out`` also a report in that folder."""
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def device(self) -> torch.device:
        for module in self.modules().values():
            for p in module.parameters():
                return p.device
        return torch.device("cpu")

    # weights
    def save(self, folder: Path) -> None:
        """Each module's ``save_pretrained`` when it has one, else ``NAME.safetensors``."""
        for name, module in self.modules().items():
            if hasattr(module, "save_pretrained"):
                module.save_pretrained(folder / name)
            else:
                state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
                save_file(state, str(folder / f"{name}.safetensors"))

    def load(self, folder: Path) -> None:
        """Inverse of :meth:`save` into the live modules (exact resume)."""
        for name, module in self.modules().items():
            file = folder / f"{name}.safetensors"
            if file.is_file():
                module.load_state_dict(load_file(str(file)))
                continue
            files = sorted((folder / name).glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{folder}: no weights for {name!r}; override TrainStep.load for this module")
            state: dict[str, torch.Tensor] = {}
            for f in files:
                state.update(load_file(str(f)))
            module.load_state_dict(state, strict=False)

    def state(self) -> dict[str, Any]:
        """Extra resumable state (JSON-able), saved with each checkpoint."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def amp_context(device: torch.device, amp: str | None):
    """Autocast in the requested dtype on CUDA; a no-op on CPU (where autocast would slow BERT
    down and change numerics) or without ``amp``. bf16 falls back to fp16 where unsupported."""
    if amp is None or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


class TrainLoop:
    """Runs a :class:`TrainStep` for ``cfg.steps`` optimizer steps (see the module docstring)."""

    def __init__(self, step: TrainStep, config: LoopConfig) -> None:
        self.task_step = step
        self.cfg = config
        self.rank, self.world_size = init_distributed()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        groups = step.param_groups(self.cfg)
        if not groups:
            raise ValueError(f"{type(step).__name__} has no trainable parameters")
        for i, g in enumerate(groups):
            g.setdefault("name", f"group{i}")
            if "lr" not in g:
                raise ValueError(f"parameter group {g['name']!r} has no learning rate ('lr')")
            if not g["params"]:
                raise ValueError(f"parameter group {g['name']!r} is empty (requires_grad is off everywhere)")
        self.optimizer = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)
        self.scheduler = _scheduler(self.cfg, self.optimizer)
        device = step.device()
        self.scaler = torch.amp.GradScaler("cuda") if self.cfg.amp == "fp16" and device.type == "cuda" else None
        # rank 0 alone writes the run folder, evaluates and checkpoints
        self.out = Path(self.cfg.output_dir) if self.cfg.output_dir and self.rank == 0 else None
        if self.world_size > 1:
            self._broadcast_parameters()
        self._tb = None

    # ------------------------------------------------------------------ data order
    def batch(self, examples: Sequence[Any], step: int, micro: int) -> list[Any]:
        """Examples of micro-batch ``micro`` of optimizer step ``step``: a pure function of the seed."""
        # global micro-batch number: ranks take consecutive slices, so N ranks x batch b see the
        # same examples per step as one process with batch N*b
        size = self.cfg.batch_size
        g = (step * self.cfg.accumulation + micro) * self.world_size + self.rank
        epoch, offset = divmod(g * size, len(examples))
        out: list[Any] = []
        while len(out) < size:
            perm = np.random.default_rng(self.cfg.seed * 1_000_003 + epoch).permutation(len(examples))
            take = perm[offset : offset + size - len(out)]
            out.extend(examples[int(i)] for i in take)
            epoch, offset = epoch + 1, 0
        return out

    # ------------------------------------------------------------------ one step
    def train_step(self, examples: Sequence[Any]) -> dict[str, float]:
        step = self.task_step
        step.train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        device = step.device()
        logs: dict[str, float] = {}
        for micro in range(self.cfg.accumulation):
            batch = self.batch(examples, self.step, micro)
            with amp_context(device, self.cfg.amp):
                loss, micro_logs = step.loss(batch, self.step)
            scaled = loss / self.cfg.accumulation
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            for key, value in micro_logs.items():
                logs[key] = logs.get(key, 0.0) + float(value) / self.cfg.accumulation
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.world_size > 1:
            self._average_gradients(params)
            logs = self._average_logs(logs)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_groups == "joint":
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_norm))
        else:  # each group clipped on its own: one group's gradient scale cannot shrink another's step
            norms = [float(torch.nn.utils.clip_grad_norm_(g["params"], self.cfg.clip_norm))
                     for g in self.optimizer.param_groups]
            logs["grad_norm"] = math.sqrt(sum(n * n for n in norms))
            for g, n in zip(self.optimizer.param_groups, norms):
                logs[f"grad_norm_{g['name']}"] = n
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        logs[f"lr_{self.optimizer.param_groups[0]['name']}"] = self.optimizer.param_groups[0]["lr"]
        logs.update(step.after_step(self.step))
        return logs

    # ------------------------------------------------------------------ distributed
    def _broadcast_parameters(self) -> None:
        """Every rank starts from rank 0's weights (random inits may differ between processes)."""
        import torch.distributed as dist

        for module in self.task_step.modules().values():
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce (mean) of the gradients in one flat buffer per device and dtype."""
        import torch.distributed as dist

        buckets: dict[tuple[Any, Any], list[torch.nn.Parameter]] = {}
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p)
        for group in buckets.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
                offset += n

    def _average_logs(self, logs: dict[str, float]) -> dict[str, float]:
        import torch.distributed as dist

        keys = sorted(logs)
        t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=self.task_step.device())
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    # ------------------------------------------------------------------ loop
    def evaluate(self, examples: Sequence[Any], write: bool = False) -> dict[str, Any]:
        """The step's metrics on ``examples``; ``write`` also leaves its report in the run folder."""
        with torch.no_grad():
            return self.task_step.evaluate(examples, self.step, self.out if write else None)

    def fit(self, train: Sequence[Any], eval_examples: Sequence[Any] | None = None,
            resume_from: str | os.PathLike | None = None, show_progress: bool | None = None) -> dict[str, Any]:
        """Train for ``config.steps`` optimizer steps; returns the final metrics (evaluated on
        ``eval_examples`` when given)."""
        if not train:
            raise ValueError("no training examples")
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "config.json", self.cfg.to_dict())
            # the log holds exactly the steps behind the current weights: a resumed run drops the
            # steps logged after its checkpoint (they are re-run), a fresh run starts a new log
            atomic_write_text(self.out / "train_log.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        primary = self.task_step.primary_log
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train",
                   disable=show_progress is False or self.rank != 0)
        while self.step < self.cfg.steps:
            logs = self.train_step(train)
            logs["step"] = self.step
            if self.cfg.eval_every and eval_examples and self.step % self.cfg.eval_every == 0:
                if self.rank == 0:
                    logs.update({f"eval_{k}": v for k, v in self.evaluate(eval_examples).items()})
                self.barrier()  # the other ranks wait here, not inside the next step's all-reduce
            self.history.append(logs)
            self._log(logs)
            if self.cfg.save_every and self.out is not None and self.step % self.cfg.save_every == 0:
                self.save_checkpoint(self.out / f"checkpoint-{self.step}")
            bar.update(1)
            if primary in logs:
                bar.set_postfix({primary: f"{logs[primary]:.3f}"})
        bar.close()
        final: dict[str, Any] = {"step": self.step}
        if eval_examples and self.rank == 0:
            final.update(self.evaluate(eval_examples, write=True))
        self.barrier()
        if self.out is not None:
            if not eval_examples:
                atomic_write_json(self.out / "metrics.json", final)
            self._plot()
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return final

    def _log(self, logs: dict[str, Any]) -> None:
        if self.step % max(1, self.cfg.log_every) == 0 or self.step == self.cfg.steps:
            shown = {k: round(v, 4) for k, v in logs.items() if isinstance(v, float)}
            log.debug("step %d: %s", self.step, shown)
        if self.out is None:
            return
        with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(logs) + "\n")
        if self.cfg.tensorboard:
            if self._tb is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # tensorboard is an optional extra
                    self.cfg.tensorboard = False
                    return
                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            for key, value in logs.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, logs["step"])

    def _plot(self) -> None:
        """``loss.png``: the step's primary log entry and every ``*loss`` entry against the step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [h["step"] for h in self.history]
        primary = self.task_step.primary_log
        keys = [k for k in dict.fromkeys(k for h in self.history for k in h) if (k.endswith("loss") or k == primary)
                and any(h.get(k) for h in self.history)]
        if not steps or not keys:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            pts = [(h["step"], h[key]) for h in self.history if key in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key.replace("_", " "))
        ax.set_xlabel("step")
        ax.legend()
        fig.tight_layout()
        tmp = self.out / f".loss.{os.getpid()}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, self.out / "loss.png")

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, folder: str | os.PathLike) -> None:
        """The step's weights, optimizer/scheduler/RNG state and the step; atomic."""
        with atomic_dir(folder) as tmp:
            self.task_step.save(tmp)
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "torch_rng": torch.get_rng_state()}
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            torch.save(state, tmp / "trainer_state.pt")
            atomic_write_json(tmp / "trainer_state.json", {"step": self.step, "config": self.cfg.to_dict(),
                                                            "history": self.history,
                                                            "step_state": self.task_step.state()})

    def load_checkpoint(self, folder: str | os.PathLike) -> None:
        """Restore a checkpoint into the live modules, optimizer and scheduler (exact resume)."""
        folder = Path(folder)
        meta = read_json(folder / "trainer_state.json")
        self.task_step.load(folder)
        # our own file: weights_only loading refuses anything but tensors and plain containers
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(meta["step"])
        self.history = list(meta.get("history", []))
        self.task_step.load_state(meta.get("step_state") or {})
