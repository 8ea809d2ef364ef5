"""The Python API: the same components a schedule names, for notebook users.

Example:
    >>> import compress
    >>> model = compress.build_model("performance_rnn", checkpoint=compress.checkpoint_path("perf_rnn_lstm.pt"))
    >>> data = compress.build_dataset("bach_chorales")  # doctest: +SKIP
    >>> model, replaced = compress.convert_rnns(model)
    >>> stats = compress.collect_stats(model, lambda: data.batches("calibration"))  # doctest: +SKIP
    >>> q = compress.PostTrainLinearQuantizer(model, stats=stats, mode="asymmetric_signed")  # doctest: +SKIP
    >>> compress.evaluate_perplexity(q.prepare_model(), data)["value"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compress.registry import DATASETS, MODELS


def generate(artifact: str | Path, *, steps: int, out: str | Path, seed: int = 0, **options: Any) -> dict[str, Any]:
    """Generate from a quantized artifact exactly like ``python -m compress generate`` (see compress/generate.py).

    Example:
        >>> # compress.generate("runs/perf_rnn/int8_full.qpt", steps=1000, seed=0, out="int8.mid")["items"]
    """
    import compress.components  # noqa: F401
    from compress.generation import generate as run_generate

    return run_generate(artifact, steps=steps, out=out, seed=seed, **options)


__all__ = ["run", "build_model", "build_dataset", "checkpoint_path", "generate", "CHECKPOINTS"]

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def checkpoint_path(name: str) -> Path:
    """The path of a checkpoint shipped inside the package (``compress/checkpoints/<name>``)."""
    return CHECKPOINTS / name


def build_model(name: str, *, checkpoint: str | Path | None = None, **args: Any) -> torch.nn.Module:
    """Build a registered model (and load its checkpoint), in eval mode.

    Example:
        >>> m = build_model("word_lm", checkpoint=checkpoint_path("word_lm.pt"))  # doctest: +SKIP
    """
    import compress.components  # noqa: F401

    ckpt = Path(checkpoint) if checkpoint is not None else None
    return MODELS.get(name).obj(checkpoint=ckpt, **args).eval()


def build_dataset(name: str, **args: Any) -> Any:
    """Build a registered dataset (a DataSource with ``batches(split)``)."""
    import compress.components  # noqa: F401

    return DATASETS.get(name).obj(**args)


def run(schedule: str | Path, *, out: str | Path | None = None, progress: bool = True, threads: int | None = 1) -> Any:
    """Run a schedule file exactly like ``python -m compress`` and return the results.

    Example:
        >>> result = run("schedules/perf_rnn.yaml")  # doctest: +SKIP
        >>> [(e.name, round(e.value, 3)) for e in result.experiments]  # doctest: +SKIP
    """
    import compress.components  # noqa: F401
    from compress import engine, report
    from compress.distributed import join
    from compress.fileio import prepare_output_dir
    from compress.plugins import load_entry_point_plugins
    from compress.schedule import load_schedule

    if threads is not None:  # one thread by default, as the CLI (see compress.cli.DEFAULT_THREADS)
        from compress.cli import set_threads

        set_threads(threads, "threads")
    load_entry_point_plugins()
    s = load_schedule(schedule)
    out_dir = prepare_output_dir(Path(out) if out is not None else Path("runs") / s.name)
    with join() as team:  # one process unless torchrun started this one
        result = engine.run(s, out_dir=out_dir, progress=progress, team=team)
        if team.writer:
            report.write_report(result, out_dir)
    return result
