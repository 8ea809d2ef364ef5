"""An evaluator with a direction: next-character accuracy, where higher is better."""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm import tqdm

from compress.registry import EVALUATORS

SCHEMA = {
    "type": "object",
    "properties": {"top": {"type": "integer", "minimum": 2, "maximum": 20, "description": "k of top-k. Default 3."}},
    "additionalProperties": False,
}


@EVALUATORS.register("char_accuracy", schema=SCHEMA, description="Next-character accuracy (example plugin).")
def char_accuracy(model: torch.nn.Module, data: Any, *, progress: bool = False, top: int = 3) -> dict[str, Any]:
    """Top-1 and top-k accuracy of the teacher-forced next-character predictions, plus the NLL per character.

    ``metrics`` keys that start with ``accuracy_`` become report columns; ``nll`` is only in report.json.
    """
    model.eval()  # the contract: an evaluator puts the model in eval mode itself
    hits, hits_k, nll, count = 0, 0, 0.0, 0
    with torch.no_grad():
        # leave=False: the bar disappears when done, so the study's printed rows stay readable
        bar = tqdm(total=data.num_batches("evaluation"), disable=not progress, desc="accuracy", leave=False)
        for batch in data.batches("evaluation"):
            bar.update()
            logits, _ = model.forward_batch(batch, None)
            y = batch[1].to(logits.device)
            logits = logits.double()
            hits += int((logits.argmax(-1) == y).sum())
            hits_k += int((logits.topk(top, -1).indices == y.unsqueeze(-1)).any(-1).sum())
            nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            count += y.numel()
        bar.close()
    acc = hits / max(count, 1)
    metrics = {"accuracy": acc, f"accuracy_top{top}": hits_k / max(count, 1), "nll": nll / max(count, 1)}
    metrics["perplexity"] = math.exp(metrics["nll"])
    # unit "fraction": a bounded metric, so the report gives its Δ in points as well as in %
    return {"metric": "accuracy", "value": acc, "metrics": metrics, "higher_is_better": True, "unit": "fraction"}
