"""Evaluators: turn a model and the evaluation split into metrics."""

from compress.evaluate.perplexity import evaluate_perplexity

__all__ = ["evaluate_perplexity"]
