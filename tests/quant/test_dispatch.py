"""Backend selection: forced backends run, unavailable ones fall back once, the probe is exact-checked and cached."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from compress.errors import QuantizationError
from compress.quant.kernels import backends, ckernels, dispatch
from compress.quant.kernels.intmatmul import plan_int_matmul


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """An empty probe cache folder and no remembered probe or warnings."""
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    monkeypatch.delenv(dispatch.ENV, raising=False)
    monkeypatch.setattr(dispatch, "_state", {})


def small_matmul(mode: str):
    w = torch.randint(-128, 128, (16, 40), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    mm, why = plan_int_matmul(w, torch.tensor(0.0), (-128, 127), None, 0.0, None, mode)
    assert mm is not None, why
    return mm


@pytest.mark.parametrize("name", backends.BACKENDS)
def test_a_forced_backend_is_the_one_that_runs(name: str, fresh_probe: None) -> None:
    if backends.unavailable(name, torch.device("cpu")):
        pytest.skip("not available here")
    mm = small_matmul(name)
    a8 = torch.randint(-128, 128, (3, 40), dtype=torch.int8)
    mm.accumulate(a8)
    assert mm.used == {name: 1} and mm.kernel_name() == name


def test_unavailable_backend_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setitem(ckernels._state, "lib", None)  # no C kernels
    mm = small_matmul("c")
    a8 = torch.randint(-128, 128, (2, 40), dtype=torch.int8)
    with pytest.warns(UserWarning, match="'c' cannot run on cpu"):
        first = mm.accumulate(a8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the second call is silent
        assert torch.equal(mm.accumulate(a8), first)
    assert "c" not in mm.used and sum(mm.used.values()) == 2


def test_probe_is_cached_per_machine_and_reused(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    first = dispatch.probe()
    assert set(first["choice"]) == set(dispatch.CLASSES) and first["cpu"] == dispatch.cpu_info()
    cached = list((dispatch.cache_dir() / "kernels").glob("probe-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["choice"] == first["choice"]
    monkeypatch.setattr(dispatch, "_state", {})
    monkeypatch.setattr(dispatch, "_measure", lambda: pytest.fail("measured again instead of reading the cache"))
    assert dispatch.probe()["choice"] == first["choice"]


def test_inexact_backend_is_never_chosen(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    real = backends.prepare

    def broken_int_mm(name: str, b: torch.Tensor, a_max: int):
        product = real(name, b, a_max)
        if name != "int_mm":
            return product
        return lambda a8, out: product(a8, out).clamp_(-(2**15), 2**15 - 1)  # saturates like an int16 kernel

    monkeypatch.setattr(backends, "prepare", broken_int_mm)
    with pytest.warns(UserWarning, match="'int_mm' integer backend is not exact"):
        result = dispatch.probe()
    assert result["inexact"] == ["int_mm"] and "int_mm" not in result["choice"].values()


def test_mode_validation_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(QuantizationError, match="integer_kernels must be one of auto, int_mm, fp32, c, off"):
        dispatch.check_mode("fast")
    monkeypatch.setenv(dispatch.ENV, "fp32")
    assert dispatch.requested_mode("auto") == "fp32" and dispatch.requested_mode("int_mm") == "fp32"
    assert dispatch.requested_mode("off") == "off"  # the emulation a schedule asked for stays
    monkeypatch.setenv(dispatch.ENV, "bogus")
    with pytest.raises(QuantizationError, match="COMPRESS_INTEGER_KERNELS='bogus'"):
        dispatch.requested_mode("auto")


def test_cuda_tensors_use_int_mm_and_classes() -> None:
    assert dispatch.choose("auto", torch.device("cuda"), 64) == "int_mm"
    assert [dispatch.shape_class(r) for r in (1, 8, 9, 256, 257)] == ["gemv", "gemv", "small", "small", "large"]


def test_describe_names_cpu_flags_and_each_class(fresh_probe: None) -> None:
    text = dispatch.describe()
    assert text.startswith("CPU: ") and "ISA flags:" in text
    for cls in dispatch.CLASSES:
        assert f"{cls}" in text and "auto -> " in text


def test_a_cached_choice_that_cannot_run_now_takes_the_next_fastest(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None
) -> None:
    """A probe cached with the C kernels (an AVX2 machine picks ``c``) read by a process without them."""
    fake = {
        "choice": {cls: "c" for cls in dispatch.CLASSES},
        "seconds": {cls: {"c": 1.0, "fp32": 2.0, "int_mm": 9.0} for cls in dispatch.CLASSES},
        "inexact": [],
        "cpu": dispatch.cpu_info(),
    }
    monkeypatch.setitem(dispatch._state, "probe", fake)
    monkeypatch.setitem(ckernels._state, "lib", None)
    assert dispatch.choose("auto", torch.device("cpu"), 64) == "fp32"
    fake["inexact"] = ["fp32"]
    assert dispatch.choose("auto", torch.device("cpu"), 1) == "int_mm"
