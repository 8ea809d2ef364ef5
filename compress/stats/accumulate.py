"""Running sums for one observed tensor slot (one input index, or the output, of one module).

Collection makes two passes over the same calibration data:

* pass 1 keeps min/max, the sums of per-sample extremes, and the element count, mean and
  sum of squared deviations (merged batch by batch with Chan's parallel formula, so the
  variance is exact in float64 without the cancellation of ``E[x^2] - E[x]^2``);
* pass 2 knows the final mean, so it sums ``|x - mean|`` exactly (the Laplace scale ``b``)
  and fills the optional histogram over the fixed range ``[min, max]`` found by pass 1
  (fixed bins, no re-binning, exact counts).

Everything is held as 0-d float64 tensors on the activation's device, so no host sync
happens inside a hook and memory does not grow with the amount of data.

Example:
    >>> import torch
    >>> acc = TensorAccumulator()
    >>> acc.update_first(torch.tensor([[1.0, 3.0], [2.0, 6.0]]))
    >>> acc.start_second_pass()
    >>> acc.update_second(torch.tensor([[1.0, 3.0], [2.0, 6.0]]))
    >>> acc.finish_second_pass("m", "output")
    >>> r = acc.record()
    >>> r["avg_min"], r["avg_max"], r["mean"], r["b"]
    (1.5, 4.5, 3.0, 1.5)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from compress.errors import StatsError

__all__ = ["TensorAccumulator", "as_samples"]

# Pass 2 must see the same numbers as pass 1; float noise (e.g. GPU reductions) is allowed.
_REPLAY_RTOL = 1e-6


def as_samples(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a float64 ``[samples, values]`` matrix; sample = index along dim 0.

    When every sample holds a single value the whole tensor counts as one sample (as in the
    old tool): a per-sample min of one value is the value itself, which would make
    ``avg_min == avg_max == mean`` and AVG clipping useless.

    Example:
        >>> as_samples(torch.zeros(4, 3, 2)).shape
        torch.Size([4, 6])
        >>> as_samples(torch.arange(5)).shape
        torch.Size([1, 5])
    """
    x = t.detach().reshape(t.shape[0] if t.dim() else 1, -1).to(torch.float64)
    return x.reshape(1, -1) if x.shape[1] == 1 else x


class TensorAccumulator:
    """Running statistics of every tensor seen at one slot; see the module docstring."""

    def __init__(self, histogram_bins: int | None = None) -> None:
        self.histogram_bins = histogram_bins
        self.shape = ""
        self.numel = 0
        self.samples = 0
        self.calls = 0
        self._t: dict[str, torch.Tensor] = {}
        self._second: dict[str, Any] = {}

    @property
    def ran(self) -> bool:
        return self.numel > 0

    def update_first(self, t: torch.Tensor) -> None:
        """Pass 1: fold tensor ``t`` into min/max, per-sample extremes, mean and M2."""
        if t.numel() == 0:
            return
        x = as_samples(t)
        if not self.ran:
            self.shape = str(tuple(t.shape))
            self._t = {k: torch.zeros((), dtype=torch.float64, device=x.device) for k in ("smin", "smax", "mean", "m2")}
            self._t["min"], self._t["max"] = x.min(), x.max()
        self._fold_extremes(x)
        self._fold_moments(x)
        self.calls += 1

    def _fold_extremes(self, x: torch.Tensor) -> None:
        # Not torch.aminmax: on small tensors its multi-threaded CPU kernel was measured ~1000x slower.
        mins, maxs = x.amin(dim=1), x.amax(dim=1)
        t = self._t
        t["min"] = torch.minimum(t["min"], mins.min())
        t["max"] = torch.maximum(t["max"], maxs.max())
        t["smin"] = t["smin"] + mins.sum()
        t["smax"] = t["smax"] + maxs.sum()
        self.samples += x.shape[0]

    def _fold_moments(self, x: torch.Tensor) -> None:
        # Chan et al.: combine (n_a, mean_a, M2_a) with the batch's own (n_b, mean_b, M2_b).
        n_a, n_b = self.numel, x.numel()
        n = n_a + n_b
        mean_b = x.mean()
        m2_b = (x - mean_b).square().sum()
        delta = mean_b - self._t["mean"]
        self._t["mean"] = self._t["mean"] + delta * (n_b / n)
        self._t["m2"] = self._t["m2"] + m2_b + delta.square() * (n_a * n_b / n)
        self.numel = n

    def finite(self) -> bool:
        """False when a NaN or Inf has been seen (min, max and mean propagate them)."""
        if not self.ran:
            return True
        return bool(torch.isfinite(self._t["min"] + self._t["max"] + self._t["mean"]))

    def start_second_pass(self) -> None:
        """Freeze pass 1 and reset the pass-2 sums (|x - mean|, histogram, replay check)."""
        zero = self._t["mean"] * 0 if self.ran else torch.zeros((), dtype=torch.float64)
        self._second = {"numel": 0, "sum": zero.clone(), "absdev": zero.clone(), "hist": None}
        if self.ran and self.histogram_bins:
            self._second["hist"] = torch.zeros(self.histogram_bins, dtype=torch.int64, device=zero.device)

    def update_second(self, t: torch.Tensor) -> None:
        """Pass 2: fold ``t`` into sum |x - mean| and the histogram over [min, max]."""
        if t.numel() == 0:
            return
        x = as_samples(t).reshape(-1)
        s = self._second
        s["numel"] += x.numel()
        s["sum"] = s["sum"] + x.sum()
        if self.ran:
            s["absdev"] = s["absdev"] + (x - self._t["mean"]).abs().sum()
        if s["hist"] is not None:
            s["hist"] += self._bin_counts(x)

    def _bin_counts(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi, bins = self._t["min"], self._t["max"], self.histogram_bins
        width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        # Values equal to hi fall in the last bin (as torch.histc does); clamp also absorbs float edges.
        idx = ((x - lo) * (bins / width)).floor().clamp_(0, bins - 1).long()
        return torch.bincount(idx, minlength=bins)

    def finish_second_pass(self, module: str, slot: str) -> None:
        """Raise StatsError when pass 2 did not replay exactly the data of pass 1."""
        s = self._second
        if s["numel"] != self.numel:
            raise StatsError(_replay_message(module, slot, f"{self.numel} values in pass 1, {s['numel']} in pass 2"))
        if not self.ran:
            return
        mean1, mean2 = float(self._t["mean"]), float(s["sum"]) / self.numel
        std1 = math.sqrt(float(self._t["m2"]) / self.numel)
        if abs(mean2 - mean1) > _REPLAY_RTOL * (abs(mean1) + std1) + 1e-300:
            raise StatsError(_replay_message(module, slot, f"mean {mean1!r} in pass 1, {mean2!r} in pass 2"))

    def record(self) -> dict[str, Any]:
        """The plain-Python statistics record (old tool's keys plus ``samples``, ``histogram``)."""
        t, n = self._t, self.numel
        rec: dict[str, Any] = {
            "min": float(t["min"]),
            "max": float(t["max"]),
            "avg_min": float(t["smin"]) / self.samples,
            "avg_max": float(t["smax"]) / self.samples,
            "mean": float(t["mean"]),
            "std": math.sqrt(float(t["m2"]) / n),
            "b": float(self._second["absdev"]) / n if self._second else None,
            "shape": self.shape,
            "total_numel": n,
            "samples": self.samples,
        }
        if rec["b"] is None:
            del rec["b"]
        if self._second.get("hist") is not None:
            rec["histogram"] = {"lo": rec["min"], "hi": rec["max"], "counts": self._second["hist"].tolist()}
        return rec


def _replay_message(module: str, slot: str, detail: str) -> str:
    return (
        f"Module '{module}' {slot}: the second calibration pass did not see the same data as the first "
        f"({detail}). Statistics need two identical passes (the second one computes 'b' around the final "
        "mean); make the model deterministic (eval mode, no dropout or sampling without the seeded "
        "generator) and the batches replayable (the same batches in the same order every time)."
    )
