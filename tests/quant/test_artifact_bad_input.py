"""Every corrupt, truncated or inconsistent artifact is an ArtifactError naming the file, before a large allocation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from compress.errors import ArtifactError, CompressError
from compress.quant import load_quantized, save_quantized
from compress.quant.artifact.integrity import payload_digest
from tests.quant.test_export import INT8_FULL, converted, perf_batch, perf_model, quantized


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = converted(perf_model(hidden_dim=8, num_layers=1))
    batch = perf_batch()
    path = tmp_path_factory.mktemp("art") / "int8.qpt"
    save_quantized(quantized(model, lambda m: m.forward_batch(batch), **INT8_FULL), path)
    return path


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def _resealed(obj: dict[str, Any]) -> dict[str, Any]:
    """A tampered artifact with a recomputed digest: only the structural checks can find what is wrong."""
    return {**obj, "sha256": payload_digest(obj)}


def _first_grid(obj: dict[str, Any]) -> dict[str, Any]:
    return next(rec["grids"] for rec in obj["layers"] if rec.get("grids"))


def _set_grid(obj: dict[str, Any], **values: Any) -> dict[str, Any]:
    grids = _first_grid(obj)
    name = next(iter(grids))
    grids[name] = {**grids[name], **values}
    return obj


TAMPERED: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    (
        "value_changed_digest_kept",
        lambda o: {**o, "model": {**o["model"], "args": {**o["model"]["args"]}}} | {"converters": []},
        "does not match the digest",
    ),  # fmt: skip
    ("no_digest", lambda o: {k: v for k, v in o.items() if k != "sha256"}, "no payload digest"),
    ("missing_layers", lambda o: _resealed({k: v for k, v in o.items() if k != "layers"}), "lacks 'layers'"),
    ("nan_scale", lambda o: _resealed(_set_grid(o, scale=float("nan"))), "not a finite number"),
    ("negative_scale", lambda o: _resealed(_set_grid(o, scale=-1.0)), "scale must be > 0"),
    ("qmin_above_qmax", lambda o: _resealed(_set_grid(o, qmin=10, qmax=-10)), "qmin <= qmax"),
    (
        "huge_hidden_dim",
        lambda o: _resealed(
            {**o, "model": {**o["model"], "args": {**o["model"]["args"], "hidden_dim": 16384, "num_layers": 32}}}
        ),
        "parameters",
    ),  # fmt: skip
    (
        "hidden_dim_beyond_the_stored_weights",
        lambda o: _resealed({**o, "model": {**o["model"], "args": {**o["model"]["args"], "hidden_dim": 2000}}}),
        "parameters but the file stores",
    ),
    ("unknown_model", lambda o: _resealed({**o, "model": {"name": "nope", "args": {}}}), "not registered"),
    ("model_args_wrong", lambda o: _resealed({**o, "model": {**o["model"], "args": {"hidden_dim": "x"}}}), "args"),
    ("weights_not_mapping", lambda o: _resealed({**o, "weights": [1]}), "'weights' must be a mapping"),
    ("float_state_not_tensors", lambda o: _resealed({**o, "float_state": {"a": 1}}), "'float_state' must map"),
    (
        "weight_scale_nan",
        lambda o: _resealed(
            {**o, "weights": {k: {**r, "scale": r["scale"] * float("nan")} for k, r in o["weights"].items()}}
        ),
        "scale that is not finite",
    ),  # fmt: skip
    (
        "float_state_wrong_shape",
        lambda o: _resealed({**o, "float_state": {"output_fc.bias": torch.zeros(3, 3, 3)}}),
        "has shape (3, 3, 3)",
    ),  # fmt: skip
    (
        "unknown_wrapper",
        lambda o: _resealed({**o, "layers": [{**o["layers"][0], "wrapper": "Evil", "grids": {}}]}),
        "Unknown wrapper",
    ),  # fmt: skip
    ("not_a_dict", lambda o: [1, 2, 3], "not a compress quantized artifact"),  # type: ignore[dict-item]
    ("future_version", lambda o: {**o, "version": 99}, "artifact version 99"),
]


@pytest.mark.parametrize(("tamper", "message"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_tampered_artifact(artifact: Path, tmp_path: Path, tamper: Callable, message: str) -> None:
    bad = tmp_path / "bad.qpt"
    torch.save(tamper(_load(artifact)), bad)
    with pytest.raises(ArtifactError) as info:
        load_quantized(bad)
    assert "bad.qpt" in str(info.value) and message in str(info.value), info.value


@pytest.mark.parametrize("cut", [0, 10, 500, -300, -1])
def test_truncated_artifact(artifact: Path, tmp_path: Path, cut: int) -> None:
    bad = tmp_path / "cut.qpt"
    data = artifact.read_bytes()
    bad.write_bytes(data[:cut] if cut else b"")
    with pytest.raises(ArtifactError, match="cut.qpt"):
        load_quantized(bad)


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7, 0.9])
def test_flipped_bytes_are_found(artifact: Path, tmp_path: Path, where: float) -> None:
    data = bytearray(artifact.read_bytes())
    start = int(len(data) * where)
    for i in range(start, start + 20):
        data[i] ^= 0xFF
    bad = tmp_path / "flipped.qpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CompressError, match="flipped.qpt"):
        load_quantized(bad)


def test_special_files_are_refused() -> None:
    with pytest.raises(ArtifactError, match="not a regular file"):
        load_quantized("/dev/zero")


def test_an_intact_artifact_still_loads(artifact: Path) -> None:
    assert load_quantized(artifact) is not None
