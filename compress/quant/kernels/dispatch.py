"""Which backend computes an exact int8 product, per machine and shape class (backends.py has the backends).

``integer_kernels`` (a quantizer argument) is ``auto``, a backend name (``int_mm``, ``fp32``, ``c``) or ``off``
(the float64 emulation). The ``COMPRESS_INTEGER_KERNELS`` environment variable, when set, replaces it for
every layer that is not ``off`` (so it can force a backend, or turn integer execution off, machine-wide).
Every backend gives the same bits, so the choice is speed only:

- ``auto`` on CUDA: ``int_mm``.
- ``auto`` on the CPU: a short probe on first use times every available backend on one representative
  shape per class of row count (``gemv``: 1-8 rows, batch-1 generation; ``small``: 9-256 rows, a recurrent
  step; ``large``: more, a whole sequence's input projection or a decoder), checks each result against an
  int64 reference (a backend that is not exact here is never used: oneDNN limited to AVX2 was measured
  returning wrong ``_int_mm`` sums), and keeps the fastest per class. The result is cached per CPU, torch
  version, thread count and kernel source in ``$COMPRESS_CACHE/kernels/`` and reused by later runs.
- A named backend that cannot run here (no C compiler, a CUDA tensor for ``c``) falls back to ``auto``
  with one warning.

``python -m compress --kernels`` prints the CPU, its ISA flags and the choice per class (:func:`describe`).

Example:
    >>> shape_class(1), shape_class(64), shape_class(12800)
    ('gemv', 'small', 'large')
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from compress.errors import QuantizationError
from compress.quant.kernels import backends, ckernels
from compress.utils import cache_dir

__all__ = [
    "MODES",
    "ENV",
    "CLASSES",
    "check_mode",
    "shape_class",
    "requested_mode",
    "choose",
    "probe",
    "cpu_info",
    "describe",
]

MODES = ("auto", *backends.BACKENDS, "off")
ENV = "COMPRESS_INTEGER_KERNELS"
# Representative (rows, K, N) per class: the shipped models' recurrent products (256 -> 1024, 200 -> 800).
CLASSES = {"gemv": (1, 256, 1024), "small": (64, 256, 1024), "large": (1024, 256, 1024)}
_GEMV_ROWS, _SMALL_ROWS = 8, 256
_REPEATS = 5
_ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_DEFAULT_FPMATH_MODE")
_state: dict[str, Any] = {}


def shape_class(rows: int) -> str:
    """The class of a product with ``rows`` rows: ``gemv``, ``small`` or ``large``."""
    return "gemv" if rows <= _GEMV_ROWS else "small" if rows <= _SMALL_ROWS else "large"


def check_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`MODES`, else a :class:`QuantizationError` listing them.

    Example:
        >>> check_mode("fp32")
        'fp32'
    """
    if mode not in MODES:
        raise QuantizationError(f"integer_kernels must be one of {', '.join(MODES)}; got {mode!r}.")
    return mode


def requested_mode(mode: str) -> str:
    """The mode in force for a layer configured with ``mode``.

    ``off`` (the emulation) stays off; otherwise the ``COMPRESS_INTEGER_KERNELS`` environment variable,
    when set, picks the backend (or ``off``) for every layer, else ``mode`` does.

    Example:
        >>> requested_mode("off")
        'off'
    """
    env = os.environ.get(ENV, "").strip()
    if env and env not in MODES:
        raise QuantizationError(f"{ENV}={env!r} is not one of {', '.join(MODES)}; unset it or pick one of those.")
    return "off" if check_mode(mode) == "off" else env or mode


def choose(mode: str, device: torch.device, rows: int) -> str:
    """The backend that computes a product of ``rows`` rows on ``device`` under ``mode`` (not ``off``).

    Example:
        >>> choose("fp32", torch.device("cpu"), 64)
        'fp32'
    """
    if mode != "auto":
        why = backends.unavailable(mode, device)
        if not why:
            return mode
        _warn_once(mode, f"compress: integer_kernels '{mode}' cannot run on {device.type} ({why}); using 'auto'.")
    if device.type != "cpu":
        return "int_mm"
    result, cls = probe(), shape_class(rows)
    choice = result["choice"][cls]
    if not backends.unavailable(choice, device):
        return choice
    # Measured with the C kernels, run without them (COMPRESS_CKERNELS=0, no compiler now): next fastest exact one.
    times = {n: t for n, t in result["seconds"][cls].items() if n not in result["inexact"]}
    usable = [n for n in sorted(times, key=times.get) if not backends.unavailable(n, device)]
    return usable[0] if usable else "int_mm"


def _warn_once(key: str, message: str) -> None:
    warned = _state.setdefault("warned", set())
    if key not in warned:
        warned.add(key)
        warnings.warn(message, stacklevel=3)


def cpu_info() -> dict[str, Any]:
    """This CPU's model name, its family/model numbers (x86: they tell, say, Zen 4 from Zen 5 when a VM names
    only "AMD EPYC") and the ISA flags that decide the integer backends.

    Example:
        >>> sorted(cpu_info())
        ['family', 'flags', 'machine', 'model']
    """
    model, flags, numbers = platform.processor() or platform.machine(), set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key in ("cpu family", "model") and key not in numbers:
                numbers[key] = value
    except OSError:
        pass
    family = f"family {numbers['cpu family']} model {numbers['model']}" if len(numbers) == 2 else ""
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp")
    return {"model": model, "family": family, "machine": platform.machine(), "flags": [f for f in wanted if f in flags]}


def cpu_class(flags: list[str] | None = None) -> str:
    """The integer-relevant class of a CPU, the name benchmarks and the README file numbers under.

    Example:
        >>> cpu_class(["avx2", "fma"])
        'AVX2'
        >>> cpu_class(["avx2", "avx512f", "avx512_vnni", "amx_int8"])
        'AMX + AVX-512 VNNI'
    """
    have = set(cpu_info()["flags"] if flags is None else flags)
    if "amx_int8" in have:
        return "AMX + AVX-512 VNNI" if "avx512_vnni" in have else "AMX"
    for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx512f", "AVX-512")):
        if flag in have:
            return name
    for flag, name in (("avx2", "AVX2"), ("asimddp", "ARM dot product"), ("asimd", "ARM NEON")):
        if flag in have:
            return name
    return "baseline " + platform.machine()


def _cache_file() -> Path:
    source = hashlib.sha256(ckernels.SOURCE.read_bytes() + Path(backends.__file__).read_bytes()).hexdigest()
    info = cpu_info()
    built = ckernels.library() is not None  # a probe without the C kernels must not stand for one with them
    caps = [os.environ.get(k, "") for k in _ISA_CAPS]  # libraries limited below the CPU's ISA compute otherwise
    key = f"{info}|{torch.__version__}|{torch.get_num_threads()}|{source}|{ckernels.FLAGS}|{built}|{caps}"
    return cache_dir() / "kernels" / f"probe-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def probe(*, refresh: bool = False) -> dict[str, Any]:
    """The measured backend choice per shape class on this CPU (cached; ``refresh`` measures again).

    Returns ``{"choice": {class: backend}, "seconds": {class: {backend: s}}, "inexact": [backend, ...], "cpu": ...}``.
    """
    if "probe" in _state and not refresh:
        return _state["probe"]
    path = _cache_file()
    result = None if refresh else _read_cached(path)
    if result is None:
        result = _measure()
        _write_cached(path, result)
    for name in result["inexact"]:
        _warn_once(f"inexact:{name}", f"compress: the '{name}' integer backend is not exact on this CPU; not used.")
    _state["probe"] = result
    return result


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(result, dict) and set(result.get("choice", {})) == set(CLASSES)
    return result if ok and all(v in backends.BACKENDS for v in result["choice"].values()) else None


def _write_cached(path: Path, result: dict[str, Any]) -> None:
    try:  # the cache is an optimisation: a read-only cache folder only costs a probe per process
        from compress.fileio import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
    except OSError:
        pass


def _operands(rows: int, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded codes over the whole int8 range, extremes included (where saturating kernels go wrong)."""
    g = torch.Generator().manual_seed(rows * 7919 + k * 31 + n)
    a = torch.randint(-128, 128, (rows, k), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    a[0, : k // 2], b[0, : k // 2] = -128, -128
    return a, b


def _time(product: backends.Product, a: torch.Tensor, out: torch.Tensor) -> float:
    product(a, out)
    times = []
    for _ in range(_REPEATS):
        start = time.perf_counter()
        product(a, out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure() -> dict[str, Any]:
    cpu = torch.device("cpu")
    names = [b for b in backends.BACKENDS if not backends.unavailable(b, cpu)]
    seconds: dict[str, dict[str, float]] = {}
    inexact: set[str] = set()
    for cls, (rows, k, n) in CLASSES.items():
        a, b = _operands(rows, k, n)
        reference = (a.to(torch.int64) @ b.to(torch.int64).t()).to(torch.int32)
        seconds[cls] = {}
        for name in names:
            product, out = backends.prepare(name, b, 128), torch.empty(rows, n, dtype=torch.int32)
            if not torch.equal(product(a, out), reference):
                inexact.add(name)
                continue
            seconds[cls][name] = _time(product, a, out)
    choice = {}
    for cls, times in seconds.items():
        usable = {name: s for name, s in times.items() if name not in inexact}
        choice[cls] = min(usable, key=usable.get) if usable else "int_mm"
    return {"choice": choice, "seconds": seconds, "inexact": sorted(inexact), "cpu": cpu_info()}


def describe() -> str:
    """Lines for ``python -m compress --kernels``: the CPU, its ISA flags, the probe and the choice per class."""
    info, result = cpu_info(), probe()
    where = ", ".join(p for p in (info["machine"], info["family"]) if p)
    lines = [f"CPU: {info['model']} ({where}); ISA flags: {' '.join(info['flags']) or 'none of interest'}"]
    lib = ckernels.library()
    isa = {0: "scalar", 1: "AVX2 vpmaddwd"}
    c_state = "not built" if lib is None else f"built ({isa.get(lib.gemm_s8s32_isa(), '?')})"
    lines += [f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); C kernels: {c_state}"]
    env = os.environ.get(ENV)
    lines += [f"{ENV}={env}: used by every layer not set to off" if env else f"{ENV} not set: schedules decide"]
    for cls, (rows, k, n) in CLASSES.items():
        times = ", ".join(f"{name} {s * 1e6:.0f} us" for name, s in sorted(result["seconds"][cls].items()))
        lines.append(f"  {cls:<5} ({rows} x {k} x {n}): auto -> {result['choice'][cls]:<6}  [{times}]")
    if result["inexact"]:
        lines.append(f"  not exact on this CPU, never used: {', '.join(result['inexact'])}")
    return "\n".join(lines)
