"""Integer execution benchmark: compress's int8 path against its float64 emulation, fp32 nn.LSTM and PyTorch int8.

For each shipped model (``perf_rnn_lstm.pt``; ``word_lm.pt`` when present) and the ``int8_full``
settings (asymmetric_signed, per-channel weights, clip_acts avg, calibrated on training batches):

* teacher-forced evaluation throughput (events or tokens per second over the evaluation split, with
  compress's ``perplexity`` evaluator) of: fp32 ``nn.LSTM`` (the unconverted model), compress
  simulated (``integer_kernels: off``), compress integer path (``auto``) and
  ``torch.ao.quantization.quantize_dynamic`` int8 (LSTM + Linear) of the unconverted model;
* single-sequence generation latency: batch 1, one step per call, greedy, ``--steps`` steps;
* sizes: fp32 state dict bytes, the compress int8 artifact (``save_quantized``) and the dynamic
  int8 state dict as ``torch.save`` writes them.

Every variant runs once per round (interleaved), ratios to fp32 are taken inside a round and the
medians over rounds are reported, so a noisy neighbour slows a whole round alike.

Every int8 backend (``int_mm``, ``fp32``, ``c``) is also measured forced, next to ``auto``, and the
section starts with this CPU's flags and ``python -m compress --kernels``' choice per shape class.
``--isa avx2`` reruns the whole measurement with oneDNN, MKL, ATen and the C kernels limited to AVX2
(environment variables set before torch loads): an approximation of an AVX2-only CPU on a newer one, not
a measurement of one (caches, ports and clocks stay the newer CPU's; and oneDNN capped this way was
measured returning inexact ``_int_mm`` sums, which the probe then refuses).

Run: ``python benchmarks/integer_path.py [--threads 2] [--rounds 5] [--isa avx2] [--write]`` (``--write``
replaces this CPU class's "## Integer execution (CLASS, VENDOR)" section of benchmarks/RESULTS.md, or its
"(AVX2 cap on ...)" twin).
``--compat`` measures only fp32 and the default quantized model, so the script also runs against a compress
without ``integer_kernels``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP: idle threads sleep, not spin

import torch  # noqa: E402
from static_int8 import static_int8  # noqa: E402
from torch import nn  # noqa: E402

import compress  # noqa: E402
import compress.quant.fused.lstm as fused_lstm  # noqa: E402
from compress.quant.kernels import backends, cpaths, dispatch  # noqa: E402
from compress.registry import EVALUATORS, STATS_SOURCES  # noqa: E402
from compress.stats import StatsContext  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Integer execution"
INT8_FULL = {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg", "missing_stats": "warn"}
MODELS = {
    "perf_rnn": {
        "model": "performance_rnn",
        "checkpoint": compress.checkpoint_path("perf_rnn_lstm.pt"),
        "data": ("bach_chorales", {"evaluation_split": "validation", "window": 200, "batch_size": 64}),
        "calibration_batches": 1,
        "unit": "events",
    },
    "word_lm": {
        "model": "word_lm",
        "checkpoint": compress.checkpoint_path("word_lm.pt"),
        "data": ("gensim_wiki", {"evaluation_split": "valid", "eval_batch_size": 10, "bptt": 35}),
        "calibration_batches": 16,
        "unit": "tokens",
    },
}
# --quick: the tiny test fixture on a few chorales, to check that the script runs (numbers meaningless).
QUICK = {
    "perf_rnn": {
        **MODELS["perf_rnn"],
        "checkpoint": ROOT / "tests" / "fixtures" / "perf_rnn_tiny.pt",
        "data": (
            "bach_chorales",
            {"evaluation_split": "validation", "window": 30, "batch_size": 4, "max_files": 12, "evaluation_batches": 1},
        ),  # fmt: skip
    }
}


def build(spec: dict[str, Any], compat: bool) -> tuple[dict[str, nn.Module], Any, dict[str, Any]]:
    """The variants of one model, its dataset, and facts (sizes, calibration) about it."""
    ckpt = spec["checkpoint"]
    fp32 = compress.build_model(spec["model"], checkpoint=ckpt).eval()
    data_name, data_args = spec["data"]
    if data_name == "gensim_wiki":
        data_args = {**data_args, "vocab_from_checkpoint": str(ckpt)}
    data = compress.build_dataset(data_name, calibration_batches=spec["calibration_batches"], **data_args)
    modular, _ = compress.convert_rnns(copy.deepcopy(fp32))
    modular.eval()
    ctx = StatsContext(modular, data, "cpu", seed=0, progress=False, base_dir=ROOT)
    stats = STATS_SOURCES.get("collect").obj(ctx, batches=spec["calibration_batches"])
    variants = {"fp32 nn.LSTM": fp32}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # output_fc_activation never runs when scoring: left float
        if compat:
            variants["compress quantized"] = quantize(modular, stats, {})
        else:
            variants["compress simulated"] = quantize(modular, stats, {"integer_kernels": "off"})
            variants["compress integer"] = quantize(modular, stats, {"integer_kernels": "auto"})
            for backend in backends.BACKENDS:  # each backend forced: what auto chose from, side by side
                if not backends.unavailable(backend, torch.device("cpu")):
                    variants[f"compress integer ({backend})"] = quantize(modular, stats, {"integer_kernels": backend})
            variants["PyTorch dynamic int8"] = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(fp32), {nn.LSTM, nn.Linear}, dtype=torch.qint8
            )
            variants["PyTorch static int8 LSTM"] = static_int8(fp32, data.batches("calibration"))
    facts = {"checkpoint": ckpt, "fp32_bytes": state_bytes(fp32), "calibration_batches": spec["calibration_batches"]}
    return variants, data, facts


def quantize(model: nn.Module, stats: Any, extra: dict[str, Any]) -> nn.Module:
    return compress.PostTrainLinearQuantizer(model, stats, **INT8_FULL, **extra).prepare_model().eval()


def state_bytes(model: nn.Module) -> int:
    """Bytes of the state dict's tensors, tied ones (the word LM's embedding/decoder) once."""
    tensors = {t.data_ptr(): t for t in model.state_dict().values()}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def saved_bytes(obj: Any) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return len(buf.getvalue())


def evaluate(model: nn.Module, data: Any) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    result = EVALUATORS.get("perplexity").obj(model, data, progress=False)
    return time.perf_counter() - start, result


def generation_step(model: nn.Module) -> Callable[[], Callable[[], None]]:
    """A factory of one-step closures: greedy batch-1 generation that carries its own state."""
    if hasattr(model, "inithid_fc"):  # Performance RNN: event + controls per step, state from z

        def start() -> Callable[[], None]:
            state = model.init_state(torch.zeros(1, model.init_dim))
            event = torch.full((1, 1), model.start_event, dtype=torch.long)
            control = torch.zeros(1, 1, model.control_dim)
            box = [event, state]

            def step() -> None:
                logits, box[1] = model.step(box[0], control, box[1])
                box[0] = logits.argmax(-1)

            return step

        return start

    def start_lm() -> Callable[[], None]:
        box = [torch.zeros(1, 1, dtype=torch.long), None]

        def step() -> None:
            logits, box[1] = model(box[0], box[1])
            box[0] = logits.argmax(-1)

        return step

    return start_lm


def generation_ms(model: nn.Module, steps: int) -> float:
    step = generation_step(model)()
    with torch.no_grad():
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step()
    return (time.perf_counter() - start) / steps * 1e3


def measure(name: str, spec: dict[str, Any], rounds: int, steps: int, compat: bool) -> dict[str, Any]:
    variants, data, facts = build(spec, compat)
    first = {k: evaluate(m, data)[1] for k, m in variants.items()}  # warm-up, and the metrics
    units = int(first["fp32 nn.LSTM"]["metrics"]["tokens"])
    evals: dict[str, list[float]] = {k: [] for k in variants}
    gens: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for key, model in variants.items():
            evals[key].append(evaluate(model, data)[0])
            gens[key].append(generation_ms(model, steps))
    facts["fp32_file_bytes"] = saved_bytes(variants["fp32 nn.LSTM"].state_dict())
    if "compress integer" in variants:
        facts["split"] = time_split(variants["compress integer"], data)
    if not compat:
        artifact = Path(tempfile.mkdtemp()) / f"{name}.qpt"
        facts["artifact_bytes"] = compress.save_quantized(variants["compress integer"], artifact)
        facts["dynamic_bytes"] = saved_bytes(variants["PyTorch dynamic int8"].state_dict())
    return {"name": name, "unit": spec["unit"], "units": units, "metrics": first, "evals": evals,
            "gens": gens, "facts": facts, "steps": steps}  # fmt: skip


@contextlib.contextmanager
def _timed(module: Any, name: str, into: dict[str, float], key: str):
    """Accumulate the wall time of ``module.name`` calls into ``into[key]`` while the block runs."""
    real = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - start

    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, real)


def time_split(model: nn.Module, data: Any) -> dict[str, float]:
    """Where the integer path's evaluation time goes: LSTM input projections, time loops, everything else (s)."""
    split: dict[str, float] = {}
    with (
        _timed(fused_lstm, "_gate_base", split, "input projection"),
        _timed(cpaths, "linear_byte_codes", split, "input projection"),
        _timed(fused_lstm, "_run", split, "layers"),
        _timed(fused_lstm, "_run_c", split, "layers"),
    ):
        total = evaluate(model, data)[0]
    layers, projection = split.get("layers", 0.0), split.get("input projection", 0.0)
    return {"total": total, "input projection": projection, "time loop": layers - projection, "rest": total - layers}


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``den / num`` (speed-up of ``num``'s variant over ``den``'s, per round)."""
    return statistics.median(d / n for n, d in zip(num, den, strict=True))


def model_section(m: dict[str, Any]) -> list[str]:
    ref = m["evals"]["fp32 nn.LSTM"]
    gref = m["gens"]["fp32 nn.LSTM"]
    lines = [
        f"### {m['name']}, {m['threads']} thread(s) ({m['units']} {m['unit']} per evaluation)",
        "",
        f"| variant | perplexity | eval s (median) | {m['unit']}/s | × fp32 nn.LSTM | "
        f"generation ms/step | × fp32 nn.LSTM |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, times in m["evals"].items():
        ppl = m["metrics"][key]["value"]
        sec, gen = statistics.median(times), statistics.median(m["gens"][key])
        lines.append(
            f"| {key} | {ppl:.4f} | {sec:.3f} | {m['units'] / sec:,.0f} | **{median_ratio(times, ref):.2f}** | "
            f"{gen:.2f} | {median_ratio(m['gens'][key], gref):.2f} |"
        )
    f = m["facts"]
    sizes = [f"fp32 state dict {f['fp32_bytes']:,} B (torch.save file {f['fp32_file_bytes']:,} B)"]
    if "artifact_bytes" in f:
        ratio = f["fp32_bytes"] / f["artifact_bytes"]
        sizes.append(f"compress int8 artifact {f['artifact_bytes']:,} B (**{ratio:.2f}×** smaller)")
        ratio = f["fp32_bytes"] / f["dynamic_bytes"]
        sizes.append(f"PyTorch dynamic int8 state dict {f['dynamic_bytes']:,} B ({ratio:.2f}× smaller)")
    same = _same_metrics(m["metrics"])
    return lines + ["", "Sizes: " + "; ".join(sizes) + ".", "", same, *_split_lines(f.get("split")), ""]


def _split_lines(split: dict[str, float] | None) -> list[str]:
    if not split:
        return []
    total = split["total"]
    parts = ", ".join(f"{k} {v:.3f} s ({100 * v / total:.0f}%)" for k, v in split.items() if k != "total")
    return [
        "",
        f"Where the integer path's evaluation time goes (one extra run, {total:.3f} s): {parts}. The rest is "
        "the model around the LSTM (embedding, input and output layers) and the evaluator's log-softmax.",
    ]


def _same_metrics(metrics: dict[str, dict[str, Any]]) -> str:
    if "compress integer" not in metrics:
        return ""
    sim = metrics["compress simulated"]["metrics"]
    same = {k: v["metrics"] == sim for k, v in metrics.items() if k.startswith("compress integer")}
    verdict = ", ".join(f"{k.removeprefix('compress integer').strip() or 'auto'}: {v}" for k, v in same.items())
    return f"Identical metrics to the simulation (every NLL sum bit for bit): {verdict}."


ISA_CAPS = {  # --isa avx2: every library limited to AVX2, as on an AVX2-only CPU (an approximation of one)
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "COMPRESS_CKERNELS_MARCH": "x86-64-v3",
    }
}


def section_heading(isa: str | None) -> str:
    """One section per CPU class and vendor, so a new machine adds its numbers instead of replacing others'."""
    vendor = " ".join(dispatch.cpu_info()["model"].replace("(R)", "").split()[:2])
    cls = dispatch.cpu_class()
    return f"{SECTION} ({isa.upper()} cap on {cls}, {vendor})" if isa else f"{SECTION} ({cls}, {vendor})"


def machine() -> str:
    info = dispatch.cpu_info()
    caps = {k: os.environ[k] for k in ISA_CAPS["avx2"] if k in os.environ}
    capped = f"; ISA capped by {', '.join(f'{k}={v}' for k, v in caps.items())}" if caps else ""
    return (
        f"{datetime.date.today().isoformat()}: {info['model']} ({info['family'] or 'family unknown'}; 2 cores, shared "
        f"machine, load average "
        f"{os.getloadavg()[0]:.1f} at the end), ISA flags "
        f"{' '.join(info['flags'])}{capped}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"{platform.system()}, Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()})."
    )


def section(results: list[dict[str, Any]], rounds: int, heading: str = SECTION) -> str:
    lines = [heading, "", machine(), "", "Integer backends as `python -m compress --kernels` shows them:", "", "```"]
    lines += [dispatch.describe(), "```", ""]
    lines += [
        f"int8_full settings (asymmetric_signed, per-channel weights, clip_acts avg), calibrated with `collect` "
        f"on training batches; teacher-forced evaluation of the whole evaluation split with compress's "
        f"`perplexity` evaluator; generation: batch 1, greedy, one step per call. Medians of {rounds} interleaved "
        "rounds; ratios to fp32 `nn.LSTM` taken inside each round (> 1: faster than fp32).",
        "",
        "PyTorch static int8 LSTM: `benchmarks/static_int8.py` (eager custom-module flow, quantizable -> quantized "
        "LSTM run layer by layer, quantized Linears, moving-average min/max, the same calibration batches). Its "
        "speed is the comparable figure; its perplexity in this configuration is worse than the +0.57-0.62% that "
        "../shared/reference/measurements.md reports for the word LM with a setup we did not reproduce.",
        "",
    ]
    for m in results:
        lines += model_section(m)
    return "\n".join(lines).rstrip() + "\n"


def write_section(text: str, section: str = SECTION) -> None:
    """Replace (or append) a benchmark's section of RESULTS.md, leaving every other section as it is."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(section + "\n")
    if start < 0:
        new = old.rstrip() + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(section))
        new = old[:start] + text + (old[nxt + 1 :] if nxt >= 0 else "")
    RESULTS.write_text(new if new.endswith("\n") else new + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="generated steps per latency measurement")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--compat", action="store_true", help="fp32 and the default quantized model only")
    parser.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="tiny fixture, 1 round, 5 steps: a smoke test")
    parser.add_argument("--isa", choices=list(ISA_CAPS), help="rerun with every library capped to this ISA")
    args = parser.parse_args()
    if args.isa and not all(os.environ.get(k) == v for k, v in ISA_CAPS[args.isa].items()):
        env = {**os.environ, **ISA_CAPS[args.isa]}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)  # the caps must be set before torch loads
    table = QUICK if args.quick else MODELS
    rounds, steps = (1, 5) if args.quick else (args.rounds, args.steps)
    if args.quick and args.write:
        parser.error("--quick numbers are not results; drop --write")
    results = []
    for name in [n for n in args.models if n in table]:
        if not Path(table[name]["checkpoint"]).is_file():
            print(f"skipping {name}: no checkpoint at {table[name]['checkpoint']}")
            continue
        for threads in args.threads:
            torch.set_num_threads(threads)
            results.append({**measure(name, table[name], rounds, steps, args.compat), "threads": threads})
    heading = section_heading(args.isa)
    text = section(results, rounds, heading)
    print(text)
    if args.write:
        write_section(text, heading)


if __name__ == "__main__":
    main()
