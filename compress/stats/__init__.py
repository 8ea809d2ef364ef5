"""Calibration statistics: collect, save, load, edit and merge per-module activation ranges.

Example:
    >>> import torch
    >>> from compress.stats import collect_stats
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sigmoid())
    >>> stats = collect_stats(model, [torch.randn(8, 4, generator=torch.Generator().manual_seed(0))])
    >>> sorted(stats["1"]["output"])[:4]
    ['avg_max', 'avg_min', 'b', 'max']
"""

from compress.stats.collector import StatsCollector, collect_stats, observed_modules
from compress.stats.edits import EDIT_RULE_SCHEMA, apply_edits
from compress.stats.merge import merge
from compress.stats.sources import StatsContext
from compress.stats.stats import FORMAT_VERSION, Stats, model_fingerprint
from compress.stats.statsfile import load_stats, save_stats

__all__ = [
    "EDIT_RULE_SCHEMA",
    "FORMAT_VERSION",
    "Stats",
    "StatsCollector",
    "StatsContext",
    "apply_edits",
    "collect_stats",
    "load_stats",
    "merge",
    "model_fingerprint",
    "observed_modules",
    "save_stats",
]
