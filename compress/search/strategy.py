"""The ``greedy`` search strategy: sensitivity-ordered fallback up the ladder, then a pass that re-lowers.

1. **Base**: every group at rung 0 (the experiment's own configuration), on the search subset.
2. **Sensitivity** (sensitivity.py) orders the groups, worst first.
3. **Fallback**: while the target is not met, take the next group in that order and try its rungs
   upwards (cheapest to safest); stop at the first rung that meets the target. Otherwise, of the rungs
   that cost no more weight bytes, keep the lowest that buys at least :data:`KEEP_FRACTION` of the best
   one's improvement (the base rung if none helps) and go on with the next group. With a ladder whose
   rungs all cost the same (``int8_grid``) this is one pass of coordinate descent on the loss.
4. **Re-lower**: once the target is met, every widened group, least sensitive first, is tried again at
   each lower rung (cheapest first); the first that still meets the target is kept.
5. **Confirm** (search.py): the best configuration is re-measured on the whole evaluation split; if it
   misses the target there, steps 3-4 continue on the whole split while the budget lasts, step 3 in
   two stages: first only the rungs that keep every weight as it is (:func:`keeps_weights`: clip mode,
   activation precision), repeated while the loss falls (search.py), then the others. A miss on the
   whole split is usually a small one (the subset's sampling error), and a weight rung that closes it
   (the word LM's embedding in fp16) costs 2.4x the bytes where an activation rung on another group may
   close it for nothing.

Every step is a pure function of the measured numbers and the group order, so a search is
deterministic for a schedule (its seed fixes the data); only the minute budget depends on the clock.

Example:
    >>> with_rung((0, 0, 0), 1, 2)
    (0, 2, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from compress.search.session import BudgetSpent, Outcome, Session

__all__ = ["fallback", "relower", "with_rung", "keeps_weights", "KEEP_FRACTION", "WEIGHT_KEYS"]

# A rung that buys 90% of the best rung's improvement is kept instead of the safer (often dearer) one:
# taking fp32 where 16-bit activations nearly did as well costs bytes that re-lowering cannot win back
# when the target needs every group's share (tests/search/test_strategy.py has such a case).
KEEP_FRACTION = 0.9


# Settings of a rung that change how weights are stored (and so, on a group with weights, its bytes).
WEIGHT_KEYS = ("fp16", "fp32", "bits_parameters", "per_channel_wts")


def keeps_weights(rung: dict[str, object]) -> bool:
    """Whether a rung leaves every weight as the base stores it (it changes activations or clipping only).

    Example:
        >>> keeps_weights({"bits_activations": None}), keeps_weights({"fp16": True})
        (True, False)
    """
    return not any(k in rung for k in WEIGHT_KEYS)


def with_rung(config: tuple[int, ...], group: int, rung: int) -> tuple[int, ...]:
    """``config`` with one group moved to ``rung``."""
    return config[:group] + (rung,) + config[group + 1 :]


def _try(session: Session, config: tuple[int, ...], base: tuple[int, ...], phase: str, batches: int | None) -> Outcome:
    group, change = session.change_text(config, base)
    label = {"phase": phase, "group": group, "change": change}
    return session.run(session.config_overrides(config), batches, label, config)


def fallback(
    session: Session,
    config: tuple[int, ...],
    now: Outcome,
    order: Sequence[int],
    batches: int | None,
    rungs: Callable[[dict[str, object]], bool] | None = None,
) -> tuple[tuple[int, ...], Outcome]:
    """Step 3 from ``config`` (measured as ``now``); the configuration reached and its outcome.

    ``rungs``: which rungs this pass may try (None: all of them).
    """
    ladder = session.spec.ladder
    try:
        for g in order:
            if now.met:
                break
            tried: list[tuple[int, Outcome]] = []
            for rung in range(config[g] + 1, len(ladder)):
                if rungs is not None and not rungs(ladder[rung]):
                    continue
                o = _try(session, with_rung(config, g, rung), config, "fallback", batches)
                tried += [] if o.error else [(rung, o)]
                if o.met:
                    break
            rung, now = _keep(tried, config[g], now)
            config = with_rung(config, g, rung)
    except BudgetSpent as spent:
        session.stopped = str(spent)
    return config, now


def _keep(tried: list[tuple[int, Outcome]], rung: int, now: Outcome) -> tuple[int, Outcome]:
    """The rung a group keeps when none met the target (``rung``, ``now`` if none helps).

    A rung that costs weight bytes is kept only if it meets the target: the objective is the size, and
    paying bytes for part of the way is what made a per-module search of the word LM keep its embedding
    in fp16 (2.4x the bytes) for 0.03 points. Of the others, the lowest with KEEP_FRACTION of the best gain.
    """
    if tried and tried[-1][1].met:
        return tried[-1]
    tried = [(r, o) for r, o in tried if o.weight_bytes <= now.weight_bytes]
    best = max((now.loss - o.loss for _, o in tried), default=0.0)
    if not best > 0:
        return rung, now
    return next((r, o) for r, o in tried if now.loss - o.loss >= KEEP_FRACTION * best)


def relower(
    session: Session, config: tuple[int, ...], now: Outcome, order: Sequence[int], batches: int | None
) -> tuple[tuple[int, ...], Outcome]:
    """Step 4: for widened groups, least sensitive first, keep the lowest rung that still meets the target."""
    if not now.met:
        return config, now
    try:
        for g in reversed(list(order)):
            for rung in range(config[g]):
                o = _try(session, with_rung(config, g, rung), config, "re-lower", batches)
                if o.met:
                    config, now = with_rung(config, g, rung), o
                    break
    except BudgetSpent as spent:
        session.stopped = str(spent)
    return config, now
