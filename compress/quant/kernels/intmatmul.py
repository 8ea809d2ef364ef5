"""Real integer execution of the quantized products, exactly equal to their float64 emulation.

A quantized Linear computes ``dot[m, n] = sum_k x_int[m, k] * w_int[n, k]`` with ``x_int = q_x + zp_x``
and ``w_int = q_w + zp_w[n]`` (codes ``q`` plus zero points). The codes are shifted into int8,
``a = q_x - s_x`` and ``b = q_w - s_w`` (``s = 0`` for codes that already fit, ``qmin + 128`` for
e.g. 8-bit unsigned codes in [0, 255]), so with ``c_x = s_x + zp_x`` and ``c_w[n] = s_w + zp_w[n]``::

    dot[m, n] = sum_k a[m, k] b[n, k]            # torch._int_mm: int8 x int8 -> int32
              + c_w[n] * sum_k a[m, k]           # row sums of the input codes, per call
              + c_x * sum_k b[n, k] + K c_x c_w[n] + bias[n]   # a constant per column, at build time

Every term is an integer far below 2^53, so adding them in float64 is exact in any order: the
result is bit for bit the emulation's (float64 ``F.linear`` of integers, exact by its own bound).
The int8 product itself runs on one of several exact backends (backends.py), chosen per CPU and
shape class by dispatch.py.
:func:`plan_int_matmul` only picks the int8 kernel when the codes fit int8 and no int32 partial
sum can overflow (``max|a| * max_n sum_k |b[n, k]| <= 2^31 - 1``); otherwise the layer stays emulated.

Example:
    >>> w_int = torch.tensor([[3, -2], [1, 4]])
    >>> mm, why = plan_int_matmul(w_int, torch.tensor(0.0), (-128, 127), (-128, 127), 1.0, None)
    >>> mm(torch.tensor([[5.0, -1.0]]))   # (5 + 1) * 3 + (-1 + 1) * -2, (5 + 1) * 1 + 0 * 4
    tensor([[18.,  6.]], dtype=torch.float64)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.quant.kernels import backends, dispatch

__all__ = [
    "INT32_MAX",
    "int8_shift",
    "IntMatmul",
    "plan_int_matmul",
    "conv_columns",
    "conv_supported",
    "product_fits_int32",
    "int_product",
]

INT32_MAX = 2**31 - 1


def int8_shift(qmin: int, qmax: int) -> int | None:
    """The shift ``s`` with ``[qmin - s, qmax - s]`` inside int8, or None when the range is wider than 256 codes.

    Example:
        >>> int8_shift(-128, 127), int8_shift(0, 255), int8_shift(0, 15), int8_shift(-32768, 32767)
        (0, 128, 0, None)
    """
    if qmin >= -128 and qmax <= 127:
        return 0
    if qmax - qmin > 255:
        return None
    return qmin + 128


class IntMatmul(nn.Module):
    """Exact ``(a + c_x) @ (b + c_w).T + bias`` from int8-shifted input codes ``a`` (see module doc).

    Built by :func:`plan_int_matmul`; everything that does not depend on the input is precomputed:
    the int8 weight codes (``[N, K]`` contiguous, used transposed), ``c_w`` and the per-column constant.
    Tensors are non-persistent buffers: they move with ``.to(device)`` and stay out of the state dict.
    """

    def __init__(
        self,
        b: torch.Tensor,
        c_w: torch.Tensor,
        x_shift: int,
        c_x: float,
        bias: torch.Tensor | None,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = b.shape[1], b.shape[0]
        self.x_shift, self.c_x, self.mode = x_shift, c_x, mode
        self.register_buffer("codes", b.to(torch.int8).contiguous(), persistent=False)
        col_sums = b.to(torch.float64).sum(1)
        const = c_x * col_sums + self.in_features * c_x * c_w + (0.0 if bias is None else bias.to(torch.float64))
        any_cw = bool((c_w != 0).any())
        self.register_buffer("c_w", c_w.to(torch.float64) if any_cw else None, persistent=False)
        self.register_buffer("const", const if bool((const != 0).any()) else None, persistent=False)
        # The whole sum in int32 when no term and no partial sum can leave it (one pass less per call).
        mm_bound = 128 * float(b.abs().sum(1).max()) if b.numel() else 0.0
        corr_bound = 128 * self.in_features * float(c_w.abs().max()) + float(const.abs().max()) if b.numel() else 0.0
        self.exact_int32 = mm_bound + corr_bound <= INT32_MAX
        self.register_buffer("c_w32", _as_int32(self.c_w) if self.exact_int32 else None, persistent=False)
        self.register_buffer("const32", _as_int32(self.const) if self.exact_int32 else None, persistent=False)
        self._products: dict[tuple[str, str], backends.Product] = {}
        self.used: dict[str, int] = {}  # backend -> calls (the report's kernel column)

    def product_for(self, rows: int, device: torch.device) -> backends.Product:
        """The exact int8 product ``(a8 [rows, K], out [rows, N] int32) -> out`` that runs here (see dispatch.py)."""
        name = dispatch.choose(self.mode, device, rows)
        key = (name, str(device))
        if key not in self._products:
            self._products[key] = backends.prepare(name, self.codes, 128)
        self.used[name] = self.used.get(name, 0) + 1
        return self._products[key]

    def int_product(self, a8: torch.Tensor) -> torch.Tensor:
        """``[M, N]`` int32 ``a8 @ codes.T`` (no corrections), on the backend chosen for M rows."""
        out = torch.empty(a8.shape[0], self.out_features, dtype=torch.int32, device=a8.device)
        return self.product_for(a8.shape[0], a8.device)(a8, out)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """``[M, N]`` float64 exact integer accumulators from ``[M, K]`` shifted codes ``a`` (float64)."""
        return self.accumulate(a.to(torch.int8)).to(torch.float64)

    def accumulate(self, a8: torch.Tensor) -> torch.Tensor:
        """``[M, N]`` exact integer accumulators from ``[M, K]`` shifted int8 codes ``a8``.

        int32 when every term provably fits (``exact_int32``), else float64 (exact below 2^53).
        """
        mm = self.int_product(a8)
        if self.exact_int32:
            return self._corrected(mm, a8, torch.int32, self.c_w32, self.const32)
        # Fewest passes over [M, N]: the corrections are built in float64 and the int32 product is added
        # into them (the addition converts it exactly); a row sum of integer codes in float64 is exact.
        return self._corrected(mm, a8, torch.float64, self.c_w, self.const)

    @staticmethod
    def _corrected(mm: torch.Tensor, a8: torch.Tensor, dtype: torch.dtype, c_w: torch.Tensor | None,
                   const: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        if c_w is not None:
            rows_sum = a8.sum(1, dtype=dtype)
            corr = torch.outer(rows_sum, c_w) if const is None else torch.addr(const, rows_sum, c_w)
            return corr.add_(mm)
        if const is not None:
            return torch.add(mm, const)
        return mm if dtype == torch.int32 else mm.to(dtype)

    def extra_repr(self) -> str:
        return f"int8 {self.in_features} -> {self.out_features}, x_shift={self.x_shift}, c_x={self.c_x:g}, {self.mode}"

    def kernel_name(self) -> str:
        """The backends that ran, most used first (``int8`` before the first call): the report's kernel column."""
        ran = sorted(self.used, key=lambda name: -self.used[name])
        return "+".join(ran) if ran else "int8"


def _as_int32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.int32)


def plan_int_matmul(
    w_int: torch.Tensor,
    w_zero_point: torch.Tensor,
    x_range: tuple[int, int],
    w_range: tuple[int, int] | None,
    x_zero_point: float,
    bias: torch.Tensor | None,
    mode: str = "auto",
) -> tuple[IntMatmul | None, str]:
    """The int8 kernel for a weight ``w_int = q_w + zp_w`` (``[N, ...]``), or None and why it cannot run.

    Args:
        w_int: integer weight (codes plus zero point), first dim = output channels.
        w_zero_point: weight zero point (0-d or per output channel).
        x_range: the input grid's code range ``(qmin, qmax)``.
        w_range: the weight's code range (None: taken from the codes themselves).
        x_zero_point: the input grid's zero point (an integer).
        bias: integer bias per output channel (added into the constant), or None.
        mode: ``auto`` or a backend name (dispatch.py): how the int8 product is computed.

    Example:
        >>> plan_int_matmul(torch.ones(2, 3, dtype=torch.int32), torch.tensor(0.0), (0, 65535), None, 0.0, None)[1]
        'input codes [0, 65535] do not fit int8'
    """
    b_codes = w_int.reshape(w_int.shape[0], -1).to(torch.float64)
    zp_w = w_zero_point.to(torch.float64).reshape(-1, 1) if w_zero_point.dim() else w_zero_point.to(torch.float64)
    q_w = b_codes - zp_w
    lo, hi = w_range if w_range is not None else (int(q_w.min()), int(q_w.max()))
    x_shift, w_shift = int8_shift(*x_range), int8_shift(lo, hi)
    if x_shift is None:
        return None, f"input codes [{x_range[0]}, {x_range[1]}] do not fit int8"
    if w_shift is None:
        return None, f"weight codes [{lo}, {hi}] do not fit int8"
    b = q_w - w_shift
    a_max = max(abs(x_range[0] - x_shift), abs(x_range[1] - x_shift))
    worst = a_max * int(b.abs().sum(1).max()) if b.numel() else 0
    if worst > INT32_MAX:
        return None, f"int32 accumulator could overflow (bound {worst} > 2^31-1)"
    c_w = (zp_w.reshape(-1) + w_shift).expand(b.shape[0]).clone()
    return IntMatmul(b, c_w, x_shift, float(x_shift + x_zero_point), bias, mode), ""


def conv_supported(conv: nn.Module) -> str:
    """Why a Conv1d/Conv2d cannot use the unfold + int8 product path ("" when it can).

    Example:
        >>> conv_supported(nn.Conv1d(2, 4, 3, padding=1)), conv_supported(nn.Conv1d(2, 4, 3, groups=2))
        ('', 'groups=2')
    """
    if conv.groups != 1:
        return f"groups={conv.groups}"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode}"
    if isinstance(conv.padding, str):
        return f"padding='{conv.padding}'"
    return ""


def conv_columns(x_int: torch.Tensor, conv: nn.Module) -> tuple[torch.Tensor, tuple[int, ...]]:
    """im2col of a batched Conv1d/Conv2d input: ``[N * L, C * k]`` rows and the output's ``(N, *spatial)``.

    Zero padding is applied to the integer input ``x_int = q + zp``, where 0 is the real value 0.

    Example:
        >>> cols, shape = conv_columns(torch.ones(2, 3, 5, dtype=torch.float64), nn.Conv1d(3, 4, 3, padding=1))
        >>> cols.shape, shape
        (torch.Size([10, 9]), (2, 5))
    """
    one_d = isinstance(conv, nn.Conv1d)
    x4 = x_int.unsqueeze(2) if one_d else x_int

    def pair(v: tuple[int, ...]) -> tuple[int, int]:
        return (1, v[0]) if one_d else (v[0], v[1])

    ks, dil, pad, stride = pair(conv.kernel_size), pair(conv.dilation), pair(conv.padding), pair(conv.stride)
    if one_d:
        pad = (0, pad[1])
    cols = F.unfold(x4, ks, dilation=dil, padding=pad, stride=stride)  # [N, C*k, L]
    spatial = [(x4.shape[2 + i] + 2 * pad[i] - dil[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in range(2)]
    out_spatial = (spatial[1],) if one_d else (spatial[0], spatial[1])
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), (x4.shape[0], *out_spatial)


def product_fits_int32(bounds: list[int], accum: tuple[int, int]) -> bool:
    """True when every partial product of inputs bounded by ``bounds`` (clamped to ``accum``) fits int32.

    Example:
        >>> product_fits_int32([255, 255], (-2**31, 2**31 - 1)), product_fits_int32([2**16, 2**16], (-2**31, 2**31 - 1))
        (True, False)
    """
    worst, limit = bounds[0], max(abs(accum[0]), abs(accum[1]))
    if worst > INT32_MAX:
        return False
    for bound in bounds[1:]:
        if worst * bound > INT32_MAX:
            return False
        worst = min(worst * bound, limit)
    return True


def int_product(ints: list[torch.Tensor], accum: tuple[int, int] | None) -> torch.Tensor:
    """Element-wise integer product in int32, clamped to ``accum`` after each factor, returned as float64.

    ``accum`` None: the caller has proved that no partial product reaches the accumulator's limits.

    Example:
        >>> int_product([torch.tensor([3.0, -4.0]), torch.tensor([5.0, 6.0])], (-20, 20))
        tensor([ 15., -20.], dtype=torch.float64)
    """
    # Callers check with product_fits_int32 that no product leaves int32; a wider accumulator clamps nothing more.
    bounds = None if accum is None else (max(accum[0], -INT32_MAX - 1), min(accum[1], INT32_MAX))
    acc = ints[0].to(torch.int32)
    for x in ints[1:]:
        acc = acc.mul_(x.to(torch.int32))
        if bounds is not None:
            acc = acc.clamp_(*bounds)
    return acc.to(torch.float64)
