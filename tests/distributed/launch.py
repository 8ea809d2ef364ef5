"""Start N compress processes on the loopback interface, as torchrun would (RANK, WORLD_SIZE, MASTER_*)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "fixtures" / "plugins"


@dataclass
class Ranks:
    codes: list[int]
    stdout: list[str]
    stderr: list[str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], n: int = 2, extra_env: dict[str, str] | None = None, timeout: float = 180) -> Ranks:
    """Run ``python -m compress ARGS`` as ``n`` ranks of one gloo group; every rank is killed after ``timeout``."""
    port = str(_free_port())
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(PLUGINS), base.get("PYTHONPATH", "")])
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, COMPRESS_DIST_TIMEOUT="90", WORLD_SIZE=str(n))
    base.update(extra_env or {})
    procs = []
    for r in range(n):
        env = dict(base, RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(n))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "compress", *args],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return Ranks([p.returncode for p in procs], [o for o, _ in outs], [e for _, e in outs])
