"""Wall time of the shipped studies with 1 and 2 processes, and the placement rule measured.

``python benchmarks/distributed.py`` runs every study once per variant (a whole study is minutes; the
machine is shared, so the load average is written next to the numbers) and replaces the "Many
processes" section of RESULTS.md. ``--quick`` runs the tiny test schedules instead and writes nothing.
The 2-process runs are started by ``torchrun`` on the loopback interface, as a user would.

Example:
    >>> _torchrun(2, 29500)[:4]  # doctest: +ELLIPSIS
    [...'-m', 'torch.distributed.run', '--nproc-per-node']
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import ROOT, cpu_flags, cpu_model, md_table, seconds, today, trimmed_schedule, write_sections  # noqa: E402

ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(n: int, port: int) -> list[str]:
    rdzv = ["--master-addr", "127.0.0.1", "--master-port", str(port)]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), *rdzv, "-m", "compress"]


def _run(schedule: Path, out: Path, processes: int, placement: str = "auto") -> tuple[float, dict]:
    head = [sys.executable, "-m", "compress"] if processes == 1 else _torchrun(processes, _port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPRESS_DIST_PLACEMENT": placement, "PYTHONPATH": str(ROOT)}
    cmd = [*head, str(schedule), "--out", str(out), "--quiet"]
    wall, proc = seconds(lambda: subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall, json.loads((out / "report.json").read_text())


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _max_rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for ea, eb in zip(a["experiments"], b["experiments"], strict=True):
        for k, v in ea["metrics"].items():
            w = eb["metrics"][k]
            worst = max(worst, abs(v - w) / max(abs(v), 1e-300))
    return worst


def measure(quick: bool, tmp: Path) -> tuple[list[list[str]], list[list[str]]]:
    folder = ROOT / ("tests/schedules_tiny" if quick else "schedules")
    names = ("perf_rnn_tiny", "word_lm_tiny") if quick else ("perf_rnn", "word_lm")
    studies = []
    for name in names:
        s = folder / f"{name}.yaml"
        one, r1 = _run(s, tmp / f"{name}-1", 1)
        load1 = _load()
        two, r2 = _run(s, tmp / f"{name}-2", 2)
        split = "; ".join(sorted(set(r2["distribution"]["experiments"].values())))
        studies.append(
            [
                f"`{name}`",
                f"{one:.1f}",
                f"{two:.1f}",
                f"×{one / two:.2f}",
                split,
                f"{_max_rel_diff(r1, r2):.1e}",
                f"{load1} / {_load()}",
            ]
        )
    perf = folder / f"{names[0]}.yaml"
    single = trimmed_schedule(perf, tmp / "single", ["asym8_per_channel"])
    rule = []
    for label, sched, procs, placement in (
        ("whole study, 1 process", perf, 1, "auto"),
        ("whole study, 2 processes, experiments spread (the rule)", perf, 2, "auto"),
        ("whole study, 2 processes, every experiment sharded", perf, 2, "shard"),
        ("one experiment, 1 process", single, 1, "auto"),
        ("one experiment, 2 processes, sharded (the rule)", single, 2, "auto"),
        ("one experiment, 2 processes, spread (one rank idle)", single, 2, "spread"),
    ):
        wall, _ = _run(sched, tmp / f"rule-{len(rule)}", procs, placement)
        rule.append([label, f"{wall:.1f}", _load()])
    return studies, rule


def section(studies: list[list[str]], rule: list[list[str]]) -> str:
    flags = " ".join(f for f in ISA if f in cpu_flags())
    return "\n".join(
        [
            f"Measured {today()} by `python benchmarks/distributed.py` on {cpu_model()} (ISA flags: {flags}), "
            f"{os.cpu_count()} cores shared with two other engineers' jobs: one run per variant, so read the "
            "ratios with the load averages (1, 5, 15 min) beside them. 2 processes = `torchrun --nproc-per-node 2` "
            "(gloo, loopback), one thread each.",
            "",
            md_table(
                [
                    "study",
                    "1 process s",
                    "2 processes s",
                    "speed-up",
                    "how it was split",
                    "max rel Δ metric",
                    "load after 1p / 2p",
                ],
                studies,
            ),
            "",
            "The placement rule (compress/distributed/placement.py): full rounds of units are spread over the "
            "ranks, only the last partial round is sharded. `COMPRESS_DIST_PLACEMENT` forces the alternatives:",
            "",
            md_table(["Performance RNN", "wall s", "load after"], rule),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny schedules, print only")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        studies, rule = measure(args.quick, Path(tmp))
    text = section(studies, rule)
    print(text)
    if not args.quick:
        write_sections(ROOT / "benchmarks" / "RESULTS.md", {"## Many processes": text})


if __name__ == "__main__":
    main()
