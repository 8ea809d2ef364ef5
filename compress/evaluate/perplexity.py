"""Perplexity of a sequence model on the evaluation split, from its per-group NLL sums.

Example:
    >>> import math
    >>> summarize({"all": (2.0 * math.log(3.0), 2)})["perplexity"]
    3.0000000000000004
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm import tqdm

from compress.registry import EVALUATORS

__all__ = ["evaluate_perplexity", "summarize"]

SCHEMA = {
    "type": "object",
    "properties": {
        "max_batches": {
            "type": "integer",
            "minimum": 1,
            "maximum": 1_000_000,
            "description": "Evaluate only the first N batches.",
        }
    },
    "additionalProperties": False,
}


def summarize(sums: dict[str, tuple[float, int]]) -> dict[str, float]:
    """``{group: (nll_sum, count)}`` -> ``nll``/``perplexity`` per group (``_<group>`` suffix except 'all')."""
    out: dict[str, float] = {}
    for group, (total, count) in sums.items():
        suffix = "" if group == "all" else f"_{group}"
        nll = total / max(count, 1)
        out[f"nll{suffix}"] = nll
        out[f"perplexity{suffix}"] = math.exp(nll) if nll < 700 else math.inf
        out[f"tokens{suffix}"] = float(count)
    return out


@EVALUATORS.register("perplexity", schema=SCHEMA, description="Teacher-forced NLL and perplexity = exp(mean NLL).")
def evaluate_perplexity(
    model: torch.nn.Module, data: Any, *, progress: bool = False, max_batches: int | None = None
) -> dict[str, Any]:
    """Sum the model's ``score_batch`` NLL over the evaluation split (float64) and return perplexities.

    Example:
        >>> # result = evaluate_perplexity(model, data)  # {"metric": "perplexity", "value": 142.3, ...}
    """
    sums: dict[str, list[float]] = {}
    state = None
    total = data.num_batches("evaluation")
    if max_batches is not None:
        total = min(total, max_batches)
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(
            tqdm(data.batches("evaluation"), total=total, disable=not progress, desc="evaluate", leave=False)
        ):
            if i >= total:
                break
            groups, state = model.score_batch(batch, state)
            for g, (s, n) in groups.items():
                acc = sums.setdefault(g, [0.0, 0])
                acc[0] += float(s)
                acc[1] += int(n)
    return _result({g: (s, int(n)) for g, (s, n) in sums.items()})


def _result(sums: dict[str, tuple[float, int]]) -> dict[str, Any]:
    metrics = summarize(sums)
    # "sums" lets shards of the split be merged exactly (combine); a shard with no batch has no metric yet.
    return {
        "metric": "perplexity",
        "value": metrics.get("perplexity", math.nan),
        "metrics": metrics,
        "higher_is_better": False,
        "sums": sums,
    }


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The result over the union of disjoint shards of the evaluation split: float64 sums added.

    Example:
        >>> a, b = _result({"all": (3.0, 2)}), _result({"all": (1.0, 2)})
        >>> combine([a, b])["metrics"]["nll"]
        1.0
    """
    total: dict[str, tuple[float, int]] = {}
    for r in results:
        for g, (s, n) in r["sums"].items():
            have = total.get(g, (0.0, 0))
            total[g] = (have[0] + float(s), have[1] + int(n))
    return _result(total)


# The engine may shard this evaluator over processes (compress.distributed): it merges shards with
# combine, and max_batches cuts the split before it is shared out.
evaluate_perplexity.combine = combine  # type: ignore[attr-defined]
evaluate_perplexity.shard_limit_arg = "max_batches"  # type: ignore[attr-defined]
