"""Listening: the schedule's ``render:`` block writes generations of the float model and listed experiments.

Every model samples the same sequences' worth of draws (the same seed, the same uniform numbers:
compress/models/autoregressive.py), so ``render-float-0.mid`` and ``render-int8_full-0.mid`` differ only
where the quantized model's distributions do. Performance RNN sequences are written as MIDI (``.mid``),
word LM sequences as text (``.txt``). File names: ``render-<float|experiment>-<k>.<ext>``, in the report
folder; report.md links them.

.. code-block:: yaml

    render:
      experiments: [int8_full, eltwise_fp16]   # the float model is always rendered
      sequences: 2                             # per model (default 2)
      steps: 1000                              # events or words per sequence (default 1000)
      seed: 0                                  # default: the schedule's seed
      temperature: 1.0

Example:
    >>> from compress.models.word_lm import WordLM
    >>> import tempfile
    >>> m = WordLM(5, 4, 4, 1).eval()
    >>> m.vocab = ["a", "b", "c", "d", "<eos>"]
    >>> render_model({"sequences": 1, "steps": 4}, "float", m, tempfile.mkdtemp())
    ['render-float-0.txt']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from compress.fileio import atomic_write_text, output_file
from compress.models.autoregressive import require_autoregressive, sample
from compress.problems import Problem

__all__ = [
    "RENDER_SCHEMA",
    "FLOAT_LABEL",
    "extension",
    "render_if_listed",
    "render_model",
    "render_problems",
    "rendered",
    "write_sequence",
]

FLOAT_LABEL = "float"
WORDS_PER_LINE = 20

RENDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Write generations of the float model and of the listed experiments into the report folder.",
    "properties": {
        "experiments": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "sequences": {"type": "integer", "minimum": 1, "maximum": 64, "description": "Sequences per model (2)."},
        "steps": {"type": "integer", "minimum": 1, "maximum": 100_000, "description": "Steps per sequence (1000)."},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "description": "Default: the schedule's."},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "description": "Softmax T (1)."},
    },
    "additionalProperties": False,
}


def render_problems(data: dict[str, Any]) -> list[Problem]:
    """Listed experiments that do not exist (or are named like the float model's files).

    Example:
        >>> render_problems({"experiments": [{"name": "a"}], "render": {"experiments": ["b"]}})[0].path
        ('render', 'experiments', 0)
    """
    block = data.get("render")
    if not isinstance(block, dict):
        return []
    names = [e.get("name") for e in data.get("experiments") or [] if isinstance(e, dict)]
    problems = []
    for i, name in enumerate(block.get("experiments") or []):
        if name == FLOAT_LABEL:
            problems.append(Problem(("render", "experiments", i), f"'{FLOAT_LABEL}' names the float model's files, "
                                    "which are always written; rename the experiment or leave it out."))  # fmt: skip
        elif name not in names:
            problems.append(Problem(("render", "experiments", i), f"no experiment is named '{name}'."))
    return problems


def rendered(schedule_data: dict[str, Any], name: str | None) -> bool:
    """Whether the schedule renders the experiment ``name`` (``None``: the float model, when there is a block).

    Example:
        >>> rendered({"render": {"experiments": ["x"]}}, "x"), rendered({}, None)
        (True, False)
    """
    block = schedule_data.get("render")
    if not isinstance(block, dict):
        return False
    return name is None or name in (block.get("experiments") or [])


def write_sequence(model: Any, events: Sequence[int] | torch.Tensor, path: str | os.PathLike[str]) -> int:
    """Write one generated sequence as MIDI (Performance RNN) or text (word LM); returns the notes or words.

    Example:
        >>> from compress.models.performance_rnn import PerformanceRNN
        >>> import tempfile, pathlib
        >>> write_sequence(PerformanceRNN(hidden_dim=4, num_layers=1), [192, 39, 237, 127],
        ...                pathlib.Path(tempfile.mkdtemp()) / "x.mid")
        1
    """
    values = [int(v) for v in (events.tolist() if isinstance(events, torch.Tensor) else events)]
    if model.generates == "performance_events":
        from compress.data.midi import write_midi  # mido is needed only when music is written

        return len(write_midi(values, path))
    vocab = getattr(model, "vocab", None) or [str(i) for i in range(max(values, default=0) + 1)]
    words = [vocab[v] for v in values]
    lines = [" ".join(words[i : i + WORDS_PER_LINE]) for i in range(0, len(words), WORDS_PER_LINE)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(words)


def extension(model: Any) -> str:
    """``.mid`` for music, ``.txt`` for words.

    Example:
        >>> from compress.models.word_lm import WordLM
        >>> extension(WordLM(5, 2, 2, 1))
        '.txt'
    """
    return ".mid" if model.generates == "performance_events" else ".txt"


def render_model(
    block: dict[str, Any], label: str, model: Any, out_dir: str | os.PathLike[str], default_seed: int = 0
) -> list[str]:
    """Sample ``block['sequences']`` sequences from ``model`` and write them; returns the file names.

    Example:
        >>> # render_model(schedule.data["render"], "int8_full", qmodel, "runs/perf_rnn")
    """
    require_autoregressive(model, "the render block")
    seed = int(block.get("seed", default_seed))
    events = sample(model, int(block.get("sequences", 2)), int(block.get("steps", 1000)), seed=seed,
                    temperature=float(block.get("temperature", 1.0)))  # fmt: skip
    names = []
    for k in range(events.shape[1]):
        name = f"render-{label}-{k}{extension(model)}"
        write_sequence(model, events[:, k], output_file(Path(out_dir), name, "a rendered generation"))
        names.append(name)
    return names


def render_if_listed(
    schedule_data: dict[str, Any], name: str | None, model: Any, out_dir: Path
) -> dict[str, list[str]]:
    """``{label: files}`` for the float model (``name=None``) or an experiment the block lists, else ``{}``.

    Example:
        >>> render_if_listed({}, None, None, Path("."))
        {}
    """
    if not rendered(schedule_data, name):
        return {}
    label = FLOAT_LABEL if name is None else name
    seed = int(schedule_data.get("seed", 0))
    return {label: render_model(schedule_data["render"], label, model, out_dir, seed)}
