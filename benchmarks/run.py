"""compress against the tools users would pick instead, measured side by side: one command.

Sections written to ``benchmarks/RESULTS.md`` (other sections of that file are left alone):
accuracy vs PyTorch's dynamic int8 and bf16/fp16 autocast, weight bytes, evaluation speed, the wall
time of a whole study and its stages, calibration memory as the data grows, and how calibration and
evaluation scale with the data and the model.

Full mode uses the shipped checkpoints and schedules (about 20-25 minutes on 2 shared cores, with
``benchmarks/integer_path.py``, whose "## Integer execution" section is collected into the same file);
``--quick`` uses the tiny test fixtures with one repetition and writes to a temporary file unless
``--results`` names one (the smoke test runs it, in about 20-30 s).

OpenMP: on a machine shared with other jobs, OpenMP threads that spin while they wait for each other
can make a multi-threaded LSTM orders of magnitude slower (measured here: 50 x 8 x 32 LSTM, 0.1 ms
with 1 thread, 1.2 s with 2 threads and other jobs running). This script sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it; the machine line records it.

Example:
    python benchmarks/run.py                 # full run, updates benchmarks/RESULTS.md
    python benchmarks/run.py --quick         # tiny fixtures, writes a temporary file
    python benchmarks/run.py --quick --results /tmp/results.md --threads 1
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see the module docstring)

import argparse  # noqa: E402
import gc  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark modules, also when imported from elsewhere

import accuracy  # noqa: E402
import scaling  # noqa: E402
import speed  # noqa: E402
from accuracy import ModelAccuracy, accuracy_section, measure_accuracy, weight_bytes_section  # noqa: E402
from benchutil import ROOT, machine, today, trimmed_schedule, write_sections  # noqa: E402
from memory import is_flat, measure_memory, memory_section  # noqa: E402
from scaling import measure_data_scaling, measure_model_scaling, scaling_section  # noqa: E402
from speed import ModelSpeed, StudyTiming, measure_speed, measure_study, speed_section, study_section  # noqa: E402
from variants import load_case  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTIONS = (
    "## Benchmarks against the alternatives",
    "## Accuracy vs PyTorch dynamic int8",
    "## Weight bytes",
    "## Evaluation speed",
    "## Study wall time",
    "## Calibration memory vs data size",
    "## Scaling",
)


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one mode."""

    perf_schedule: Path
    word_schedule: Path
    keep: tuple[str, ...] | None  # experiments kept in the studies (None: all)
    repeats: int  # study runs, speed rounds and scaling rounds
    word_speed_batches: int | None  # word-LM evaluation batches per timed speed run (None: all)
    memory: tuple[int, int, int]  # stats_memory base batches, seq, batch
    data_factors: tuple[int, ...]
    model_configs: tuple[tuple[int, int], ...]


FULL = Config(
    perf_schedule=ROOT / "schedules" / "perf_rnn.yaml",
    word_schedule=ROOT / "schedules" / "word_lm.yaml",
    keep=None,
    repeats=3,
    word_speed_batches=32,
    memory=(4, 20, 8),
    data_factors=(1, 2, 4),
    model_configs=tuple((h, n) for n in (2, 3) for h in (128, 256, 512)),
)
QUICK = Config(
    perf_schedule=ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml",
    word_schedule=ROOT / "tests" / "schedules_tiny" / "word_lm_tiny.yaml",
    keep=("fp32", "bf16", "sym8", "int8_full"),
    repeats=1,
    word_speed_batches=2,
    memory=(1, 10, 4),
    data_factors=(1, 2, 4),
    model_configs=((16, 2), (32, 2), (16, 3), (32, 3)),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny fixtures, one repetition (smoke test)")
    parser.add_argument(
        "--results", type=Path, help="Markdown file to update (default RESULTS.md; --quick: a temp file)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads here and in the study subprocesses (2)")
    return parser.parse_args(argv)


def _schedules(cfg: Config, tmp: Path) -> tuple[Path, Path]:
    if cfg.keep is None:
        return cfg.perf_schedule, cfg.word_schedule
    return (
        trimmed_schedule(cfg.perf_schedule, tmp / "schedules", cfg.keep),
        trimmed_schedule(cfg.word_schedule, tmp / "schedules", cfg.keep),
    )


def _label(cfg: Config, path: Path) -> str:
    """How a schedule is named in the tables (relative to the repository; trimmed copies say so)."""
    text = path.relative_to(ROOT).as_posix()
    return text if cfg.keep is None else f"{text}, experiments {', '.join(cfg.keep)}"


def _log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)


def measure_models(
    cfg: Config, schedules: tuple[Path, Path], studies: list[StudyTiming], start: float
) -> tuple[list[ModelAccuracy], list[ModelSpeed]]:
    """Accuracy (whole evaluation split, once) and interleaved speed rounds of both shipped models."""
    accs, speeds = [], []
    specs = (("Performance RNN", "events", None), ("Word LM", "tokens", cfg.word_speed_batches))
    for (title, unit, speed_batches), schedule, study in zip(specs, schedules, studies, strict=True):
        case = load_case(schedule, title=title, unit=unit)
        _log(f"{title}: variants built; accuracy", start)
        accs.append(measure_accuracy(case, study.reports[0]))
        _log(f"{title}: speed", start)
        speeds.append(measure_speed(case, cfg.repeats, speed_batches))
        del case
        gc.collect()
    return accs, speeds


INTEGER_SECTION = "## Integer execution"


def run_integer_path(quick: bool, threads: int, repeats: int) -> tuple[str, tuple[str, str] | None]:
    """Run ``benchmarks/integer_path.py`` (another engineer's benchmark) when it exists.

    It prints its own "## Integer execution" section; that text is returned so it lands in the same
    results file as ours. Quick mode runs it only if it offers ``--quick`` (a full run takes minutes).
    Returns one line for the overview and the section's (heading, body) (None when it did not run); the heading
    is the one it printed (it names the CPU class and vendor: "## Integer execution (<class>, <vendor>)").
    """
    script = HERE / "integer_path.py"
    if not script.exists():
        return "`benchmarks/integer_path.py`: not present, not run.", None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    counts = sorted({1, threads})  # compress's default (1 thread) and this run's setting
    cmd = [sys.executable, str(script), "--threads", *map(str, counts), "--rounds", str(repeats)]
    if quick:
        usage = subprocess.run([sys.executable, str(script), "--help"], env=env, capture_output=True, text=True)
        if "--quick" not in usage.stdout:
            return "`benchmarks/integer_path.py`: skipped in quick mode (it has no --quick).", None
        cmd.append("--quick")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    found = re.search(rf"^{re.escape(INTEGER_SECTION)}( \(.+\))?$", proc.stdout, re.M)
    if proc.returncode != 0 or found is None:
        print(f"integer_path.py failed ({proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return f"`benchmarks/integer_path.py`: failed (exit {proc.returncode}); its section was not updated.", None
    body = proc.stdout[found.end() :].strip()
    return f"`{' '.join(['benchmarks/integer_path.py', *cmd[2:]])}`: ran; see *Integer execution*.", (found[0], body)


def overview(args: argparse.Namespace, cfg: Config, minutes: float, memory_flat: bool, lines: list[str]) -> str:
    """The first section: when, where, how, how long this run took, and the headline numbers."""
    mode = "quick (tiny fixtures, 1 repetition)" if args.quick else f"full ({cfg.repeats} repetitions per figure)"
    return (
        f"{today()}: {machine(args.threads)}.\n\n"
        f"`python benchmarks/run.py{' --quick' if args.quick else ''}`, mode {mode}, took {minutes:.1f} min. "
        "Figures are medians over interleaved repetitions; ratios are taken inside one repetition. Timings on "
        "this shared machine move by up to ~30% between invocations: compare ratios, not absolute seconds. "
        f"Calibration memory flat: {'yes' if memory_flat else 'NO'}.\n\n" + "\n".join(f"- {line}" for line in lines)
    )


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark and write the sections."""
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    results = args.results or (Path(tempfile.mkdtemp()) / "RESULTS.md" if args.quick else RESULTS)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compress-bench-") as tmp_name:
        tmp = Path(tmp_name)
        schedules = _schedules(cfg, tmp)
        _log("studies (python -m compress)", start)
        runs = tmp / "runs"
        perf_study = measure_study(schedules[0], cfg.repeats, args.threads, runs, _label(cfg, cfg.perf_schedule))
        word_study = measure_study(schedules[1], 1, args.threads, runs, _label(cfg, cfg.word_schedule))
        accs, speeds = measure_models(cfg, schedules, [perf_study, word_study], start)
    _log("calibration memory (stats_memory.py)", start)
    memory_rows = measure_memory(*cfg.memory)
    _log("scaling: data", start)
    data = measure_data_scaling(cfg.perf_schedule, cfg.data_factors, 1, cfg.repeats)
    _log("scaling: model", start)
    model = measure_model_scaling(cfg.perf_schedule, cfg.model_configs, cfg.repeats)
    _log("integer_path.py", start)
    integer_path, integer_body = run_integer_path(args.quick, args.threads, cfg.repeats)
    minutes = (time.perf_counter() - start) / 60
    lines = [accuracy.headline(a) for a in accs] + [speed.headline(s) for s in speeds]
    lines += [speed.study_headline(perf_study), scaling.headline(data, model), integer_path]
    bodies = [
        overview(args, cfg, minutes, is_flat(memory_rows), lines),
        accuracy_section(accs),
        weight_bytes_section(accs),
        speed_section(speeds, cfg.repeats),
        study_section([perf_study, word_study], args.threads),
        memory_section(memory_rows, *cfg.memory),
        scaling_section(data, model, cfg.model_configs, cfg.repeats),
    ]
    sections = dict(zip(SECTIONS, bodies, strict=True))
    if integer_body is not None:
        sections[integer_body[0]] = integer_body[1]
    write_sections(results, sections)
    _log(f"wrote {results}", start)


if __name__ == "__main__":
    main()
