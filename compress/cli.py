"""Command line: ``python -m compress SCHEDULE [--plan] [--out DIR] [--quiet] [--debug]``, ``--kernels``, or
``python -m compress generate ARTIFACT.qpt --steps N --seed S --out FILE`` (compress/generation.py).

User errors print one paragraph to stderr and exit with code 2; ``--debug`` adds the traceback.

Example:
    >>> main(["--list", "converters"])  # doctest: +ELLIPSIS
    converters:
      rnn_to_modular ...
    0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from compress.distributed.team import RemoteFailure
from compress.errors import CompressError
from compress.fileio import prepare_output_dir

__all__ = ["main", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2
# The recurrent loop is thousands of small tensor ops; intra-op threads add a barrier to each of them and
# gain nothing at these sizes. Measured on our 2-core machine while another job ran: the perf_rnn study took
# 48 s with 1 thread and 15 min with 2 (one experiment 365 s instead of 1.6 s), with identical results.
DEFAULT_THREADS = 1
MAX_THREADS = 1024  # more than any machine's cores; torch refuses counts beyond int32 with a bare ValueError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m compress",
        description="Run a post-training quantization study described by a YAML schedule and write a report.",
        epilog="Generate from an exported artifact: python -m compress generate ARTIFACT.qpt --steps N --seed S "
        "--out FILE.mid|.txt (see python -m compress generate --help).",
    )
    p.add_argument("schedule", nargs="?", help="the schedule file (YAML)")
    p.add_argument(
        "--plan", action="store_true", help="validate, build and print the per-layer plan; no calibration or evaluation"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="report folder (default runs/<schedule name>/ in the current folder; its files are replaced by a rerun)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no per-experiment lines; the results table and the report path are still printed",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        default=DEFAULT_THREADS,
        help=f"CPU threads for PyTorch (default {DEFAULT_THREADS}: see the README's performance notes)",
    )
    p.add_argument("--schema", action="store_true", help="print the composed JSON schema of schedules and exit")
    p.add_argument(
        "--kernels",
        action="store_true",
        help="print this CPU, its ISA flags and the integer backend chosen per shape class (probed at --threads), "
        "and exit",
    )
    p.add_argument(
        "--list",
        nargs="?",
        const="all",
        metavar="KIND",
        help="list registered components (models, datasets, converters, stats_sources, quantizers, "
        "evaluators) and exit",
    )
    return p


def _load_builtins_and_plugins() -> None:
    import compress.components  # noqa: F401  (registers the built-ins)
    from compress.plugins import load_entry_point_plugins

    load_entry_point_plugins()


def _list(kind: str) -> str:
    from compress.registry import REGISTRIES, suggest

    if kind != "all" and kind not in REGISTRIES:
        raise CompressError(
            f"--list: unknown kind '{kind}'.{suggest(kind, list(REGISTRIES))} Kinds: {', '.join(REGISTRIES)}."
        )
    lines = []
    for name, reg in REGISTRIES.items():
        if kind in ("all", name):
            lines.append(f"{name}:")
            lines += [f"  {e.name:<22} {e.description}" for e in reg]
    return "\n".join(lines)


def _kernels(threads: int) -> str:
    import torch

    from compress.quant.kernels.dispatch import describe

    if threads < 1:
        raise CompressError(f"--threads must be at least 1, got {threads}.")
    torch.set_num_threads(threads)
    return describe()


def _run(args: argparse.Namespace) -> int:
    from compress.distributed import join

    set_threads(args.threads)
    # Joined before the schedule is read: an error on any rank, even a bad schedule, is then shown once.
    with join() as team:  # one process unless torchrun started this one (see compress.distributed)
        return team.guard(lambda: _study(args, team))


def _study(args: argparse.Namespace, team: Any) -> int:
    from compress import engine, report
    from compress.schedule import load_schedule

    schedule = load_schedule(args.schedule)
    if args.plan:
        result = engine.plan(schedule)
        if team.writer:
            print(_plan_text(result))
        return 0
    out_dir = prepare_output_dir(args.out or Path("runs") / schedule.name).resolve()
    done: list[engine.ExperimentResult] = []
    total = len(schedule.data["experiments"])
    show = team.writer and not args.quiet  # one voice: the writer rank prints

    def on_experiment(e: engine.ExperimentResult) -> None:  # flushed: `| tee` shows each row as it finishes
        done.append(e)
        if show:
            print(report.experiment_line(done, e, total), flush=True)

    if show:
        print(f"compress: {schedule.name}: {total} experiment(s); report in {out_dir}", flush=True)
    result = engine.run(schedule, out_dir=out_dir, progress=not args.quiet, team=team, on_experiment=on_experiment)
    # Only the writer writes, and only after every rank finished: a failure anywhere leaves no report.
    if team.writer:
        report.write_report(result, out_dir)
        print(report.render_terminal(result, out_dir), flush=True)
    return 0


def set_threads(n: int, what: str = "--threads") -> None:
    """Give PyTorch ``n`` intra-op threads, or a clear error for a count it cannot use.

    Example:
        >>> set_threads(0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.CompressError: --threads must be between 1 and 1024, got 0.
    """
    import torch

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise CompressError(f"{what} must be between 1 and {MAX_THREADS}, got {n!r}.")
    torch.set_num_threads(n)


def _plan_text(result: object) -> str:
    from compress import report

    parts = []
    for c in result.conversions:  # type: ignore[attr-defined]
        parts.append(f"{c['policy']}: " + "; ".join(c["replaced"]) + f" (max |Δ output| {c['max_abs_error']:.3g})")
    for e in result.experiments:  # type: ignore[attr-defined]
        q = e.settings.get("quantizer")
        parts += ["", f"experiment {e.name}: " + ("float model (no quantizer)" if q is None else q["name"])]
        if e.plan:
            parts.append(report.plan_table(e.plan))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["generate"]:  # a subcommand with its own options (a schedule named so: ./generate)
        from compress.generation import main as generate_main

        return generate_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        _load_builtins_and_plugins()
        if args.schema:
            from compress.schema import composed_schema

            print(json.dumps(composed_schema(), indent=2))
            return 0
        if args.list:
            print(_list(args.list))
            return 0
        if args.kernels:
            print(_kernels(args.threads))
            return 0
        if not args.schedule:
            _parser().print_usage(sys.stderr)
            print("error: give a schedule file, or --list / --schema.", file=sys.stderr)
            return EXIT_USER_ERROR
        return _run(args)
    except CompressError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RemoteFailure as exc:  # one process of a torchrun launch failed; rank 0 shows the error once
        if not exc.quiet:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; files already written are complete (every write is atomic).", file=sys.stderr)
        return 130
