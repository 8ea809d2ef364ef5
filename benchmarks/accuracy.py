"""Accuracy and weight bytes of compress's experiments against PyTorch's built-in alternatives.

compress's rows come from the ``report.json`` of the study run in the same benchmark invocation;
the PyTorch rows (and compress's weight-only 8-bit row) are evaluated here by compress's own
evaluator on the same DataSource, so every row scores exactly the same targets. Metrics are
deterministic on the CPU, so each is one evaluation of the whole evaluation split.

Example:
    >>> # result = measure_accuracy(case, report)      # case from variants.load_case
    >>> # print(accuracy_section([result]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchutil import fmt_bytes, fmt_pct, md_table, pct_delta, seconds
from variants import BF16, DYNAMIC, FP16, INT8, INT8_EXPERIMENT, REFERENCE, W8, Case, evaluate, state_dict_bytes

# The variants evaluated here besides the study's experiments, in table order.
OWN_ROWS = (REFERENCE, W8, DYNAMIC, BF16, FP16)
TOOLS = {REFERENCE: "PyTorch", W8: "compress", DYNAMIC: "PyTorch", BF16: "PyTorch", FP16: "PyTorch"}


@dataclass
class ModelAccuracy:
    """Everything the accuracy and weight-bytes sections need about one model."""

    title: str
    unit: str
    data: str
    report: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_seconds: dict[str, float] = field(default_factory=dict)
    weight_bytes: dict[str, tuple[int, str]] = field(default_factory=dict)
    saved_fp32_bytes: int = 0
    variant_notes: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def metric_keys(self) -> list[str]:
        """``perplexity`` plus the per-group perplexities the evaluator reported (e.g. without velocity)."""
        ref = self.results[REFERENCE]["metrics"]
        return ["perplexity"] + sorted(k for k in ref if k.startswith("perplexity_"))


def measure_accuracy(case: Case, report: dict[str, Any]) -> ModelAccuracy:
    """Evaluate the PyTorch alternatives and compress's int8/W8 variants on the whole evaluation split."""
    out = ModelAccuracy(case.title, case.unit, case.data.describe(), report, notes=list(case.notes))
    for name in (*OWN_ROWS, INT8):
        try:
            out.eval_seconds[name], out.results[name] = seconds(lambda name=name: evaluate(case, name))
        except RuntimeError as exc:
            if name not in (BF16, FP16):
                raise
            # oneDNN has no fp16 LSTM primitive on some CPUs: the variant does not run here; say so.
            out.failures[name] = str(exc).splitlines()[0][:120]
    for name, variant in case.variants.items():
        out.weight_bytes[name] = (variant.weight_bytes, variant.bytes_note)
        out.variant_notes[name] = variant.note
    out.saved_fp32_bytes = state_dict_bytes(case.variants[REFERENCE].model)
    study = {e["name"]: e for e in report["experiments"]}
    if INT8_EXPERIMENT in study:
        same = study[INT8_EXPERIMENT]["value"] == out.results[INT8]["value"]
        out.notes.append(
            f"compress int8_full rebuilt here scores {out.results[INT8]['value']:.6g}"
            + (" (bit for bit the study's)" if same else f" (the study: {study[INT8_EXPERIMENT]['value']:.6g})")
        )
    return out


def _row(
    acc: ModelAccuracy, label: str, tool: str, metrics: dict[str, float] | None, nbytes: int, note: str
) -> list[str]:
    ref = acc.results[REFERENCE]["metrics"]
    cells = [label, tool]
    for key in acc.metric_keys:
        cells += (
            ["n/a", "n/a"] if metrics is None else [f"{metrics[key]:.4f}", fmt_pct(pct_delta(metrics[key], ref[key]))]
        )
    # PyTorch's packed int8 weights are only measurable serialized: compare them with the serialized fp32 model.
    ref_bytes = acc.saved_fp32_bytes if label == DYNAMIC else acc.weight_bytes[REFERENCE][0]
    return cells + [fmt_bytes(nbytes), f"{ref_bytes / nbytes:.2f}x", note]


def accuracy_rows(acc: ModelAccuracy) -> list[list[str]]:
    """One row per variant: the reference, the study's experiments, then the PyTorch alternatives."""
    rows = [_row(acc, REFERENCE, "PyTorch", acc.results[REFERENCE]["metrics"], acc.weight_bytes[REFERENCE][0], "")]
    for e in acc.report["experiments"]:
        metrics = {"perplexity": e["value"], **e["metrics"]}
        rows.append(_row(acc, f"`{e['name']}`", "compress (study)", metrics, e["weight_bytes"], _describe(e)))
    for name in OWN_ROWS[1:]:
        note = {
            W8: "per-tensor symmetric weights on Linear/LSTM, float activations, embeddings untouched",
            DYNAMIC: "default qconfig; activations quantized per call at run time",
        }.get(name, f"autocast: {acc.variant_notes.get(name, '')}")
        if name in acc.failures:
            note = f"**fails on this CPU**: `{acc.failures[name]}`"
        metrics = acc.results[name]["metrics"] if name in acc.results else None
        rows.append(_row(acc, name, TOOLS[name], metrics, acc.weight_bytes[name][0], note))
    return rows


def _describe(exp: dict[str, Any]) -> str:
    q = (exp.get("settings") or {}).get("quantizer")
    if q is None:
        return "converted model, float32"
    if q["name"] != "post_train_linear":
        return f"{q['name']} {q.get('args', {})}"
    args = q.get("args", {})
    text = f"{args.get('mode', 'symmetric')}, per-channel {bool(args.get('per_channel_wts'))}"
    text += f", clip {args.get('clip_acts', 'none')}"
    return text + (f", {len(q['overrides'])} override(s)" if q.get("overrides") else "")


def _quantized(exp: dict[str, Any]) -> bool:
    """An experiment of compress's range-linear quantizer (8-bit by default; some keep layers in fp16)."""
    q = (exp.get("settings") or {}).get("quantizer")
    return bool(q) and q["name"] == "post_train_linear"


def _smaller(acc: ModelAccuracy, nbytes: int, serialized: bool = False) -> str:
    ref = acc.saved_fp32_bytes if serialized else acc.weight_bytes[REFERENCE][0]
    return f"{ref / nbytes:.2f}x smaller weights" if nbytes <= ref else f"{nbytes / ref:.2f}x larger weights"


def verdicts(acc: ModelAccuracy) -> list[str]:
    """Plain sentences: where compress is less (or more) accurate than the PyTorch alternative."""
    ref = acc.results[REFERENCE]["value"]
    dyn = pct_delta(acc.results[DYNAMIC]["value"], ref)
    dyn_text = f"torch dynamic int8 {fmt_pct(dyn)} ({_smaller(acc, acc.weight_bytes[DYNAMIC][0], True)})"
    quantized = [e for e in acc.report["experiments"] if _quantized(e)]
    lines = []
    if quantized:
        best = min(quantized, key=lambda e: e["value"])
        delta = pct_delta(best["value"], ref)
        word = "less accurate than" if delta > dyn else "at least as accurate as"
        lines.append(
            f"Best compress quantized experiment `{best['name']}` ({_describe(best)}): {fmt_pct(delta)} "
            f"({_smaller(acc, best['weight_bytes'])}); {dyn_text}. compress's best is **{word}** `quantize_dynamic`."
        )
    full = next((e for e in quantized if e["name"] == INT8_EXPERIMENT), None)
    if full is not None:
        delta = pct_delta(full["value"], ref)
        word = "less accurate than" if delta > dyn else "at least as accurate as"
        lines.append(
            f"`int8_full` (every weight, activation, gate and element-wise op 8-bit, static ranges): {fmt_pct(delta)} "
            f"({_smaller(acc, full['weight_bytes'])}), **{word}** `quantize_dynamic`, whose gate math stays fp32 "
            "and whose matmul inputs get a fresh range at every call."
        )
    w8 = pct_delta(acc.results[W8]["value"], ref)
    lines.append(f"Like for like (8-bit weights, float activations): compress W8 {fmt_pct(w8)} vs {dyn_text}.")
    return lines


def headline(acc: ModelAccuracy) -> str:
    """One line: compress's int8_full and best 8-bit experiment against quantize_dynamic."""
    ref = acc.results[REFERENCE]["value"]
    quantized = [e for e in acc.report["experiments"] if _quantized(e)]
    dynamic = pct_delta(acc.results[DYNAMIC]["value"], ref)
    parts = [f"{acc.title} (perplexity {ref:.4g}): torch dynamic int8 {fmt_pct(dynamic)}"]
    parts += [
        f"compress `{e['name']}` {fmt_pct(pct_delta(e['value'], ref))}"
        for e in quantized
        if e["name"] == INT8_EXPERIMENT or e is min(quantized, key=lambda x: x["value"])
    ]
    parts.append(f"compress W8 weights only {fmt_pct(pct_delta(acc.results[W8]['value'], ref))}")
    return ", ".join(parts) + "."


def accuracy_section(models: list[ModelAccuracy]) -> str:
    """The '## Accuracy vs PyTorch dynamic int8' section body."""
    parts = [
        "Metric: perplexity = exp(mean NLL) from compress's evaluator (`compress.evaluate.evaluate_perplexity`) on "
        "the study's evaluation data; Δ is relative to the unconverted fp32 `nn.LSTM` model. compress's rows are "
        "the experiments of the study (`report.json` of the `python -m compress` run in this benchmark); the "
        "PyTorch rows start from the unconverted model. *× smaller* = fp32 weight bytes / the variant's "
        "(see the weight bytes section for how each is counted)."
    ]
    for acc in models:
        headers = ["variant", "tool"]
        for key in acc.metric_keys:
            headers += [key.replace("_", " "), "Δ"]
        headers += ["weight bytes", "× smaller", "settings"]
        align = "ll" + "rr" * len(acc.metric_keys) + "rrl"
        parts.append(f"### {acc.title}\n\n{acc.data}\n\n{md_table(headers, accuracy_rows(acc), align)}")
        parts.append("\n".join(f"- {line}" for line in verdicts(acc) + acc.notes))
    return "\n\n".join(parts)


def weight_bytes_section(models: list[ModelAccuracy]) -> str:
    """The '## Weight bytes' section body: fp32, fp16/bf16, compress int8 and PyTorch's dynamic int8."""
    parts = [
        "compress counts weights as deployed (`compress.utils.weight_bytes`: quantized layers at their bit "
        "width plus scales and zero points, float parameters as stored; the study's `weight_bytes`). PyTorch's "
        "dynamic int8 keeps its weights in packed objects that `parameters()` does not list, so its size is "
        "`torch.save(state_dict)`, compared with the same measure of the fp32 model."
    ]
    for acc in models:
        ref = acc.weight_bytes[REFERENCE][0]
        rows = [[REFERENCE, ref, fmt_bytes(ref), "1.00x", acc.weight_bytes[REFERENCE][1]]]
        for e in acc.report["experiments"]:
            rows.append(
                [
                    f"compress `{e['name']}`",
                    e["weight_bytes"],
                    fmt_bytes(e["weight_bytes"]),
                    f"{ref / e['weight_bytes']:.2f}x",
                    "study report",
                ]
            )
        rows.append(
            [
                W8,
                acc.weight_bytes[W8][0],
                fmt_bytes(acc.weight_bytes[W8][0]),
                f"{ref / acc.weight_bytes[W8][0]:.2f}x",
                acc.weight_bytes[W8][1],
            ]
        )
        dyn, note = acc.weight_bytes[DYNAMIC]
        saved = acc.saved_fp32_bytes
        rows.append([DYNAMIC, dyn, fmt_bytes(dyn), f"{saved / dyn:.2f}x", f"{note} (fp32 model: {fmt_bytes(saved)})"])
        table = md_table(["variant", "bytes", "", "fp32 / variant", "how counted"], rows, "lrrrl")
        parts.append(f"### {acc.title}\n\n{table}")
    return "\n\n".join(parts)
