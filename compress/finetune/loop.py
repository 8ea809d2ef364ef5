"""The training loop: optimizer, learning-rate schedule, progress bar with the running loss, checkpoints.

Everything that decides the result is a function of the spec and its seed: the batches come from the
dataset's ``training_batches(batch_size, seed, start)`` stream (a pure function of the step, so a resumed
run sees the batches an uninterrupted run would), the model runs in eval mode (no dropout, the mode it
was calibrated in), and the checkpoint restores optimizer, schedule and carried recurrent state. On the
CPU, with the same number of threads, two runs give bit-identical weights.

Example:
    >>> from torch import nn
    >>> opt = make_optimizer(FinetuneSpec(steps=10, lr=0.1, optimizer="sgd"), [nn.Parameter(torch.ones(1))])
    >>> type(opt).__name__, lr_factor(FinetuneSpec(steps=10, warmup_steps=2), 0)
    ('SGD', 0.5)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from compress.finetune.checkpoint import load_checkpoint, save_checkpoint
from compress.finetune.config import FinetuneSpec
from compress.finetune.ste import forget_weights

__all__ = ["make_optimizer", "lr_factor", "TrainLog", "train"]

# Weight of the newest loss in the running (exponential) average the progress bar shows.
RUNNING_WEIGHT = 0.05


def make_optimizer(spec: FinetuneSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer the spec names over ``params`` (example above)."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=spec.lr, weight_decay=spec.weight_decay)


def lr_factor(spec: FinetuneSpec, step: int) -> float:
    """Multiplier of ``lr`` at ``step`` (0-based): linear warm-up, then constant or cosine to 0.

    Example:
        >>> [round(lr_factor(FinetuneSpec(steps=4), s), 3) for s in range(4)]
        [1.0, 0.854, 0.5, 0.146]
    """
    if step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return 1.0
    span = max(spec.steps - spec.warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - spec.warmup_steps) / span))


@dataclass
class TrainLog:
    """What a training run did: steps, where it started, the loss at the start and end, the history."""

    steps: int = 0
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)  # mean loss of each step, in step order
    running: float | None = None
    seconds: float = 0.0  # wall time of the steps this run did (not those of a run it resumed)

    def summary(self) -> dict[str, Any]:
        """The numbers the report shows (first/last 10-step mean training loss)."""
        head, tail = self.losses[:10], self.losses[-10:]
        return {
            "steps": self.steps,
            "resumed_from_step": self.resumed_from,
            "seconds": round(self.seconds, 2),
            "train_loss_first": sum(head) / len(head) if head else None,
            "train_loss_last": sum(tail) / len(tail) if tail else None,
        }


def train(
    model: nn.Module,
    data: Any,
    spec: FinetuneSpec,
    checkpoint: tuple[Path, str] | None,
    progress: bool,
    desc: str = "finetune",
    on_step: Callable[[int], None] | None = None,
) -> TrainLog:
    """Fine-tune ``model`` in place for ``spec.steps`` steps (resuming from ``checkpoint`` when it matches).

    Args:
        model: the trainable model (its ``training_loss(batch, state) -> (loss, state)`` is minimized).
        data: the dataset (its ``training_batches(batch_size, seed, start)`` feeds the steps).
        spec: the resolved finetune block.
        checkpoint: (file, fingerprint) to save to and resume from; None writes nothing.
        progress: show a progress bar with the running loss.
        desc: the bar's label.
        on_step: called with the number of steps done after each step (tests interrupt a run with it).
    """
    torch.manual_seed(spec.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(spec, params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(spec, s))
    log, state = TrainLog(steps=spec.steps), None
    saved = load_checkpoint(*checkpoint) if checkpoint else None
    if saved is not None:
        state = _restore(saved, model, opt, sched, log)
    model.eval()
    bar = tqdm(total=spec.steps, initial=log.resumed_from, desc=desc, disable=not progress, leave=False)
    stream = data.training_batches(spec.batch_size, spec.seed, log.resumed_from)
    began = time.perf_counter()
    with torch.enable_grad(), bar:
        for step in range(log.resumed_from, spec.steps):
            state = _step(model, next(stream), state, opt, spec, log)
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{log.running:.4f}")
            done = step + 1
            if checkpoint and (done == spec.steps or (spec.save_every and done % spec.save_every == 0)):
                save_checkpoint(checkpoint[0], _payload(checkpoint[1], done, model, opt, sched, state, log))
            log.seconds = time.perf_counter() - began
            if on_step is not None:
                on_step(done)
    return log


def _step(
    model: nn.Module, batch: Any, state: Any, opt: torch.optim.Optimizer, spec: FinetuneSpec, log: TrainLog
) -> Any:
    forget_weights(model)  # the weights changed at the last step: fake-quantize them afresh
    loss, state = model.training_loss(batch, state)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if spec.grad_clip:
        nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], spec.grad_clip)
    opt.step()
    value = float(loss.detach())
    log.losses.append(value)
    log.running = value if log.running is None else (1 - RUNNING_WEIGHT) * log.running + RUNNING_WEIGHT * value
    return _detached(state)


def _detached(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(_detached(s) for s in state)
    return state


def _payload(fingerprint: str, done: int, model: nn.Module, opt: Any, sched: Any, state: Any, log: TrainLog) -> dict:
    return {
        "fingerprint": fingerprint,
        "step": done,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "state": state,
        "losses": list(log.losses),
        "running": log.running,
    }


def _restore(saved: dict[str, Any], model: nn.Module, opt: Any, sched: Any, log: TrainLog) -> Any:
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    log.resumed_from, log.losses, log.running = int(saved["step"]), list(saved["losses"]), saved["running"]
    return saved["state"]
