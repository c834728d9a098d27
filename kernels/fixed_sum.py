"""Deterministic scatter-add for the Triton backward passes.

Float atomic adds sum in whatever order the atomics land, so on a GPU the last bits of a
gradient would change from run to run. Here each gradient value is a 64-bit fixed-point
integer, and integer addition is associative: the bits do not depend on the program schedule.
Each backward kernel runs twice over the same terms (constexpr PASS):

  RANGE       per value: tl.atomic_max of the largest term's exponent field, tl.atomic_add of
              the number of (finite, nonzero) terms, tl.atomic_or of flags for non-finite terms;
  ACCUMULATE  each term scaled by 2^shift, shift = 62 - h - E (|term| < 2^E for every term of
              the value, h = ceil(log2(its number of terms))), rounded to the nearest integer
              (ties away from zero) and added with int64 tl.atomic_add;

then `finish` (torch, no host sync) scales each integer back (correctly rounded to float64).
FLOAT is the old float64 tl.atomic_add, kept only as the tests' positive control.

Precision. A value with n terms (h = ceil(log2 n)) and largest exponent E: every scaled term
is below 2^(62 - h), so the sum of n <= 2^h of them stays below 2^62 and the int64 cannot
overflow, whatever the magnitudes (the range adapts per value). Each term is rounded to a
multiple of 2^(E - 62 + h), an error <= 2^(E - 63 + h); the total error is <= 2^(E - 63 + 2h),
i.e. <= 2^(2h - 62) of the largest term (>= 2^(E - 1)), then one rounding to float64 and one
to the output dtype. n = 320 (a 16 x 20 image): 2^-44; n = 2^16 (a vertex seen by a whole
256 x 256 image): 2^-30. The CPU backend's float64 sum errs by up to (n - 1) 2^-53 sum |term|
<= 2^(2h - 53) of the largest term: this worst case is 2^9 times tighter (a typical float64
sum is much better than its worst case, and so is this one: the rounding errors are random).
Beyond the bound: the term count is int32, so a value may receive at most 2^31 - 1 terms
(`check_term_count` refuses larger launches). Non-finite terms follow IEEE addition: any NaN,
or +Inf with -Inf, gives NaN; otherwise an infinite term gives that infinity. A finite sum
beyond float64's range becomes +-Inf.

Scratch per value: int32 exponent, count and flags (`meta`, 3 x N) and an int64 sum.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

RANGE = 0
ACCUMULATE = 1
FLOAT = 2  # float64 tl.atomic_add: not deterministic on a GPU; the tests' positive control
PASSES = (RANGE, ACCUMULATE)

FIXED_BITS = 62
MAX_TERMS = 2**31 - 1

FLOAT_ATOMICS = False  # True only in the tests' positive control


def passes() -> tuple[int, ...]:
    """The PASS values each backward launches, in order."""
    return (FLOAT,) if FLOAT_ATOMICS else PASSES


@triton.jit
def _exponent_field(x):
    """The biased exponent field of float64 x, at least 1: |x| < 2^(field - 1022) for finite x
    (subnormals included); 2047 for Inf and NaN."""
    bits = x.to(tl.int64, bitcast=True)
    field = ((bits >> 52) & 2047).to(tl.int32)
    return tl.maximum(field, 1)


@triton.jit
def _pow2(k):
    """2^k as float64 for int32 k in [-1022, 1023], built from its bits (no libdevice)."""
    return ((k + 1023).to(tl.int64) << 52).to(tl.float64, bitcast=True)


@triton.jit
def _ceil_log2(count):
    """ceil(log2(count)) for int32 count >= 1 (0 for count <= 1)."""
    c = tl.maximum(count, 1)
    floor_log2 = _exponent_field(c.to(tl.float64)) - 1023
    return floor_log2 + tl.where((c & (c - 1)) != 0, 1, 0)


@triton.jit
def scatter_add(meta_ptr, acc_ptr, count, index, x, mask, PASS: tl.constexpr):
    """Add float64 term x to value `index` of `count` values (masked lanes add nothing).
    meta_ptr: int32 (3, count) scratch, zeroed before RANGE; acc_ptr: int64 (count,) sums,
    zeroed before ACCUMULATE (float64 for FLOAT)."""
    if PASS == 2:
        tl.atomic_add(acc_ptr + index, x, mask=mask, sem="relaxed")
    else:
        field = _exponent_field(x)
        finite = field < 2047
        term = mask & finite & (x != 0.0)
        if PASS == 0:
            tl.atomic_max(meta_ptr + index, field, mask=term, sem="relaxed")
            tl.atomic_add(meta_ptr + count + index, tl.full(x.shape, 1, tl.int32), mask=term,
                          sem="relaxed")
            flag = tl.where(x != x, 4, tl.where(x > 0.0, 1, 2))
            tl.atomic_or(meta_ptr + 2 * count + index, flag, mask=mask & (field == 2047),
                         sem="relaxed")
        else:
            largest = tl.load(meta_ptr + index, mask=term, other=1)
            terms = tl.load(meta_ptr + count + index, mask=term, other=1)
            shift = 62 - _ceil_log2(terms) - (largest - 1022)  # in [-993, 1083]
            half = shift >> 1  # two factors, each a normal float64
            y = (tl.where(term, x, 0.0) * _pow2(half)) * _pow2(shift - half)  # exact: |y| < 2^(62 - h)
            q = y.to(tl.int64)  # toward zero
            r = y - q.to(tl.float64)  # exact
            q = q + tl.where(r >= 0.5, 1, 0).to(tl.int64) - tl.where(r <= -0.5, 1, 0).to(tl.int64)
            tl.atomic_add(acc_ptr + index, q, mask=term, sem="relaxed")


def scratch(count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(meta, acc) for `count` values."""
    meta = torch.zeros((3, count), dtype=torch.int32, device=device)
    acc = torch.zeros(count, dtype=torch.float64 if FLOAT_ATOMICS else torch.int64, device=device)
    return meta, acc


def check_term_count(most_terms_per_value: int) -> None:
    if most_terms_per_value > MAX_TERMS:
        raise ValueError(f"a gradient value could receive {most_terms_per_value} terms; the "
                         f"Triton backward's fixed-point sums take at most {MAX_TERMS}")


def _pow2_tensor(k: torch.Tensor) -> torch.Tensor:
    return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)


def finish(meta: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
    """The float64 values of finished sums (acc as given for FLOAT)."""
    if acc.dtype == torch.float64:
        return acc
    largest, terms, flags = meta[0].to(torch.int64), meta[1].to(torch.int64), meta[2]
    c = terms.clamp(min=1)
    _, e = torch.frexp(c.to(torch.float64))  # c = m 2^e, m in [0.5, 1)
    h = (e.to(torch.int64) - 1) + ((c & (c - 1)) != 0).to(torch.int64)
    shift = FIXED_BITS - h - (largest.clamp(min=1) - 1022)
    half = shift >> 1
    value = acc.to(torch.float64) * _pow2_tensor(-half) * _pow2_tensor(-(shift - half))
    nan = ((flags & 4) != 0) | ((flags & 3) == 3)
    value = torch.where((flags & 1) != 0, float("inf"), value)
    value = torch.where((flags & 2) != 0, float("-inf"), value)
    return torch.where(nan, float("nan"), value)
