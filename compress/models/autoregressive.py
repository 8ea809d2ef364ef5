"""The optional protocol of models that generate, one step at a time, and sampling with shared random numbers.

A model that implements it can be rolled out (``rollout`` evaluator), rendered (the schedule's ``render:``
block) and run by ``python -m compress generate``. Models that only score need none of it.

=====================  ===================================================================================
member                 meaning
=====================  ===================================================================================
``generates``          what a sequence is: ``"performance_events"`` (written as MIDI) or ``"words"`` (text)
``rollout_init``       ``(batch_size, generator) -> (first inputs [1, B] long, state)``; every random draw
                       (e.g. the Performance RNN's z) comes from ``generator``
``rollout_step``       ``(inputs [1, B], state) -> (logits [B, V], new state)``: one event per sequence
``rollout_hidden``     ``state -> [B, F]``: the recurrent hidden state of each sequence, flattened
=====================  ===================================================================================

Sampling draws one uniform number per step and sequence *before* the rollout and picks the event by
inverse CDF of ``softmax(logits / temperature)`` (in float64), so two models given the same seed use the
same random numbers: their sequences stay identical until their distributions disagree at that number.

Example:
    >>> from compress.models.performance_rnn import PerformanceRNN
    >>> m = PerformanceRNN(hidden_dim=8, num_layers=1).eval()
    >>> a, b = sample(m, 2, 5, seed=3), sample(m, 2, 5, seed=3)
    >>> tuple(a.shape), bool((a == b).all())
    ((5, 2), True)
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from compress.errors import ModelError

__all__ = ["PROTOCOL", "missing_members", "require_autoregressive", "shared_draws", "pick", "sample"]

PROTOCOL = ("generates", "rollout_init", "rollout_step", "rollout_hidden")
KINDS = ("performance_events", "words")


def missing_members(model: Any) -> list[str]:
    """The protocol members ``model`` lacks (``[]`` when it can be rolled out).

    Example:
        >>> missing_members(torch.nn.Linear(2, 2))
        ['generates', 'rollout_init', 'rollout_step', 'rollout_hidden']
    """
    return [name for name in PROTOCOL if getattr(model, name, None) is None]


def require_autoregressive(model: Any, what: str) -> None:
    """Raise :class:`ModelError` naming the missing members when ``model`` does not generate.

    Example:
        >>> require_autoregressive(torch.nn.Linear(2, 2), "the rollout evaluator")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        compress.errors.ModelError: the rollout evaluator needs a model that generates ...
    """
    missing = missing_members(model)
    if missing:
        raise ModelError(
            f"{what} needs a model that generates one step at a time, and {type(model).__name__} lacks "
            f"{', '.join(missing)} (see compress/models/autoregressive.py). Use a model that implements them, "
            "or another evaluator."
        )
    if model.generates not in KINDS:
        raise ModelError(f"{type(model).__name__}.generates is {model.generates!r}; use one of {list(KINDS)}.")


def shared_draws(model: Any, batch_size: int, steps: int, seed: int) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """The seeded start of a rollout: first inputs, initial state, then uniforms ``[steps, B]`` (float64).

    Example:
        >>> from compress.models.performance_rnn import PerformanceRNN
        >>> x, _, u = shared_draws(PerformanceRNN(hidden_dim=8, num_layers=1), 3, 4, seed=0)
        >>> tuple(x.shape), tuple(u.shape)
        ((1, 3), (4, 3))
    """
    generator = torch.Generator().manual_seed(int(seed))
    inputs, state = model.rollout_init(batch_size, generator)
    return inputs, state, torch.rand(steps, batch_size, generator=generator, dtype=torch.float64)


def pick(logits: torch.Tensor, uniform: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The event whose CDF interval holds ``uniform``: logits ``[B, V]``, uniforms ``[B]`` -> LongTensor ``[1, B]``.

    Example:
        >>> pick(torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([0.25, 0.75])).tolist()
        [[0, 1]]
    """
    probs = torch.softmax(logits.detach().double().cpu() / temperature, dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    u = (uniform.double() * cdf[:, -1]).unsqueeze(-1)  # scaled: a sum that rounds below 1 still covers u
    return torch.searchsorted(cdf, u).clamp_(max=probs.shape[-1] - 1).T


@torch.no_grad()
def sample(
    model: Any,
    batch_size: int,
    steps: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = False,
) -> torch.Tensor:
    """``steps`` events of ``batch_size`` sequences sampled with :func:`shared_draws` (CPU LongTensor ``[steps, B]``).

    Example:
        >>> from compress.models.word_lm import WordLM
        >>> tuple(sample(WordLM(20, 4, 4, 1).eval(), 2, 3, seed=1).shape)
        (3, 2)
    """
    require_autoregressive(model, "sampling")
    model.eval()
    inputs, state, uniforms = shared_draws(model, batch_size, steps, seed)
    out = []
    for t in tqdm(range(steps), disable=not progress, desc="generate", unit="step", leave=False):
        logits, state = model.rollout_step(inputs, state)
        token = pick(logits, uniforms[t], temperature)
        out.append(token[0])
        inputs = token.to(inputs.device)
    return torch.stack(out) if out else torch.zeros(0, batch_size, dtype=torch.long)
