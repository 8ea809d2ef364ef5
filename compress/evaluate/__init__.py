"""Evaluators: turn a model and the evaluation split into metrics."""

from compress.evaluate.perplexity import evaluate_perplexity
from compress.evaluate.rollout import evaluate_rollout

__all__ = ["evaluate_perplexity", "evaluate_rollout"]
