"""Clip modes: hand-computed ranges, ACIQ alphas against an independent minimisation, histogram modes."""

from __future__ import annotations

import math

import pytest

from compress.errors import QuantizationError
from compress.quant.numerics.clipping import (
    ClipMode,
    aciq_alpha,
    aciq_expected_mse,
    clip_range,
    histogram_mse_range,
    histogram_percentile_range,
    parse_clip_mode,
)

REC = {"min": -10.0, "max": 8.0, "avg_min": -3.0, "avg_max": 2.5, "mean": 0.5, "std": 2.0, "b": 1.5}


def test_none_and_avg():
    assert clip_range(REC, "none", bits=8) == (-10.0, 8.0)
    assert clip_range(REC, "AVG", bits=8) == (-3.0, 2.5)
    assert clip_range(REC, None, bits=8) == (-10.0, 8.0)


def test_n_std_intersects_with_min_max():
    # mean 0.5 +- 2*2 = [-3.5, 4.5], inside [-10, 8].
    assert clip_range(REC, "n_std", bits=8, n_stds=2) == (-3.5, 4.5)
    # +- 5*2 = [-9.5, 10.5] -> the max caps it at 8.
    assert clip_range(REC, "n_std", bits=8, n_stds=5) == (-9.5, 8.0)
    with pytest.raises(QuantizationError, match="clip_n_stds"):
        clip_range(REC, "n_std", bits=8)


def test_half_range_raises_lo_to_zero():
    assert clip_range(REC, "none", bits=8, half_range=True) == (0.0, 8.0)
    assert clip_range({"min": -3.0, "max": -1.0}, "none", bits=8, half_range=True) == (0.0, 0.0)


def test_missing_key_names_the_key_and_mode():
    with pytest.raises(QuantizationError, match="avg_min, avg_max.*avg_max is missing"):
        clip_range({"min": 0.0, "max": 1.0, "avg_min": 0.0}, "avg", bits=8, name="fc")


def test_never_ran_sentinel_is_an_error():
    with pytest.raises(QuantizationError, match="never ran"):
        clip_range({"min": 1.7e308, "max": -1.7e308}, "none", bits=8)
    with pytest.raises(QuantizationError, match="not finite"):
        clip_range({"min": float("inf"), "max": 1.0}, "none", bits=8)


def test_parse_clip_mode():
    assert parse_clip_mode("LAPLACE") is ClipMode.LAPLACE
    with pytest.raises(QuantizationError, match="percentile"):
        parse_clip_mode("kl")


# Published tables (Banner et al.; the old tool's copies): Laplace M=2..8 and Gauss M=1..8.
LAPLACE_TABLE = {2: 2.83, 3: 3.89, 4: 5.03, 5: 6.2, 6: 7.41, 7: 8.64, 8: 9.89}
GAUSS_TABLE = {1: 1.24, 2: 1.71, 3: 2.15, 4: 2.55, 5: 2.94, 6: 3.29, 7: 3.61, 8: 3.92}


def _grid_argmin(dist: str, bits: int) -> float:
    """Independent check: brute-force the expected MSE on a 1e-4 grid (no derivative, no bisection)."""
    grid = [0.5 + i * 1e-4 for i in range(150000)]
    return min(grid, key=lambda a: aciq_expected_mse(a, dist, bits))


@pytest.mark.parametrize(("dist", "table"), [("laplace", LAPLACE_TABLE), ("gauss", GAUSS_TABLE)])
def test_aciq_alpha_matches_published_tables(dist, table):
    for bits, alpha in table.items():
        # The tables print 2 decimals, some truncated (Laplace 8 bits: 9.8968 printed 9.89).
        assert aciq_alpha(dist, bits) == pytest.approx(alpha, abs=0.011), (dist, bits)


@pytest.mark.parametrize(("dist", "bits"), [("laplace", 2), ("laplace", 4), ("laplace", 8), ("gauss", 4), ("gauss", 8)])
def test_aciq_alpha_is_the_minimum_of_the_expected_mse(dist, bits):
    assert aciq_alpha(dist, bits) == pytest.approx(_grid_argmin(dist, bits), abs=2e-4)


def test_aciq_golden_values():
    assert round(aciq_alpha("laplace", 8), 2) == 9.90  # 9.8968
    assert round(aciq_alpha("laplace", 4), 2) == 5.03
    assert round(aciq_alpha("laplace", 2), 2) == 2.83
    # Gauss: 3.92 at 8 bits (4.24 is not a minimum of the Gaussian error), 2.56 at 4 bits.
    assert round(aciq_alpha("gauss", 8), 2) == 3.92
    assert round(aciq_alpha("gauss", 4), 2) == 2.56


def test_aciq_half_range_is_one_more_bit():
    assert aciq_alpha("laplace", 4, half_range=True) == aciq_alpha("laplace", 5)
    assert aciq_alpha("gauss", 7, half_range=True) == aciq_alpha("gauss", 8)


def test_aciq_ranges():
    # laplace at 4 bits: alpha = b * 5.0286 = 1.5 * 5.0286 = 7.54 -> [0.5-7.54, 0.5+7.54] ∩ [-10, 8].
    lo, hi = clip_range(REC, "laplace", bits=4)
    alpha = 1.5 * aciq_alpha("laplace", 4)
    assert (lo, hi) == (pytest.approx(0.5 - alpha), 8.0)
    # gauss at 8 bits: alpha = std * 3.924 = 7.848 -> [-7.348, 8.348] ∩ [-10, 8] = [-7.348, 8].
    lo, hi = clip_range(REC, "gauss", bits=8)
    assert (lo, hi) == (pytest.approx(-7.348, abs=1e-3), 8.0)
    with pytest.raises(QuantizationError, match="b is missing"):
        clip_range({"min": -1.0, "max": 1.0, "mean": 0.0, "std": 1.0}, "laplace", bits=8)


HIST = {"histogram": {"lo": 0.0, "hi": 10.0, "counts": [10] * 10}}


def test_percentile_from_uniform_histogram():
    # Uniform over [0, 10]: P(5) = 0.5, P(95) = 9.5.
    assert histogram_percentile_range(HIST, 95.0) == (pytest.approx(0.5), pytest.approx(9.5))
    assert clip_range({"min": 0.0, "max": 10.0, **HIST}, "percentile", bits=8, percentile=90.0) == (
        pytest.approx(1.0),
        pytest.approx(9.0),
    )


def test_histogram_modes_without_histogram_say_how_to_collect():
    with pytest.raises(QuantizationError, match="histogram_bins"):
        clip_range(REC, "percentile", bits=8, name="fc")
    with pytest.raises(QuantizationError, match="histogram_bins"):
        clip_range(REC, "mse", bits=8)


def test_mse_clips_rare_outliers_at_low_bits():
    # 2000 values at +-0.1 and one outlier at +-9.9. Symmetric 4 bits over [-a, a]: step a/7.5, so
    # cost(a) = 2000 (a/7.5)^2/12 + 2 (9.9 - a)^2; d/da = 0 at 5.926a + 4a = 39.6 -> a = 3.99.
    counts = [1] + [0] * 48 + [1000, 1000] + [0] * 48 + [1]
    rec = {"histogram": {"lo": -10.0, "hi": 10.0, "counts": counts}}
    lo, hi = histogram_mse_range(rec, 4, "symmetric")
    assert hi == pytest.approx(3.99, abs=0.05) and lo == -hi
    # A flat histogram gains nothing from clipping: every bin centre (outermost +-9.9) stays inside.
    flat = {"histogram": {"lo": -10.0, "hi": 10.0, "counts": [5] * 100}}
    lo, hi = histogram_mse_range(flat, 8, "asymmetric_unsigned")
    assert lo <= -9.9 and hi >= 9.9


def test_expected_mse_formula_by_hand():
    # Laplace, a = 3, M = 2: 2 e^-3 + 9 / (3 * 16) = 0.099574 + 0.1875.
    assert aciq_expected_mse(3.0, "laplace", 2) == pytest.approx(2 * math.exp(-3) + 0.1875)
