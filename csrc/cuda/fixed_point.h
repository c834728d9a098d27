// Deterministic scatter-add for the CUDA backward passes.
//
// Float atomicAdd sums in whatever order the atomics land, so the last bits of a gradient
// would change from run to run (as in nvdiffrast and PyTorch3D). Here every gradient value
// is a 128-bit fixed-point integer instead, and integer addition is associative: the final
// bits do not depend on the schedule. Each scattering kernel runs twice over the same terms:
//
//   SumPass::kRange       atomicMax of each value's largest term exponent (frexp), and atomicOr
//                         of flags for non-finite terms;
//   SumPass::kAccumulate  each term scaled by 2^shift, shift = kSumBits - headroom - E, rounded
//                         to an integer (round-half-even), added with 64-bit integer atomics
//                         (low word, then the carry and high word);
//
// then finalize_sums converts each value back (correctly rounded to double, then to T).
//
// Precision and range. E is the value's largest term exponent (|term| < 2^E) and headroom
// >= log2(the most terms one value can receive), so the sum of scaled terms stays below 2^126
// and the 128-bit integer cannot overflow, whatever the magnitudes: the range adapts per value.
// Each term is rounded to a multiple of 2^(E - 126 + headroom): with headroom <= 40 (10^12
// terms) that is 2^-86 of the largest term, so every term within 2^-33 of the largest is
// added exactly and the total error is below 2^(2 headroom - 127) * 2^E. The CPU's double
// summation errs by up to (n - 1) 2^-53 sum |term|: this is at least as precise, and the only
// other rounding is the final one to double and then to T (the CPU rounds to T once too).
// Non-finite terms follow IEEE addition: any NaN, or +Inf with -Inf, gives NaN; otherwise an
// infinite term gives that infinity. A finite sum beyond T's range becomes +-Inf in the cast.
#pragma once

#include <cstdint>

#include "../render_args.h"
#include "../render_math.h"

namespace nl3dmm {
namespace cuda {

constexpr int kSumBits = 126;        // scaled sums stay below 2^126, inside a signed 128-bit word
constexpr int kExponentBias = 1100;  // frexp exponents of doubles lie in [-1073, 1024]; 0 = no term
enum NonFiniteTerm : int { kPlusInf = 1, kMinusInf = 2, kNaNTerm = 4 };

enum class SumPass : int { kRange = 0, kAccumulate = 1 };

// The scratch of `count` sums (kSumBytesPerValue bytes each), zero-filled before kRange.
struct FixedSums {
    unsigned long long* lo;
    unsigned long long* hi;
    int* exponent;   // biased by kExponentBias
    int* nonfinite;  // NonFiniteTerm bits
    int headroom;    // ceil(log2(the most terms one value can receive))
};

static_assert(2 * sizeof(unsigned long long) + 2 * sizeof(int) == kSumBytesPerValue,
              "render_args.h states the scratch of one sum");

inline FixedSums fixed_sums(uintptr_t scratch, int64_t count, int64_t max_terms_per_value) {
    FixedSums s;
    s.lo = reinterpret_cast<unsigned long long*>(scratch);
    s.hi = s.lo + count;
    s.exponent = reinterpret_cast<int*>(s.hi + count);
    s.nonfinite = s.exponent + count;
    s.headroom = 0;
    while (s.headroom < 62 && (1ll << s.headroom) < max_terms_per_value) ++s.headroom;
    return s;
}

NL_HD double double_from_bits(uint64_t bits) {
    union { uint64_t u; double d; } cvt;
    cvt.u = bits;
    return cvt.d;
}

NL_HD bool is_finite(double x) { return x - x == 0.0; }

NL_HD int count_leading_zeros(unsigned long long x) {  // x != 0
#ifdef __CUDA_ARCH__
    return __clzll((long long)x);
#else
    return __builtin_clzll(x);
#endif
}

// The signed 128-bit integer hi * 2^64 + lo, correctly rounded to double.
NL_HD double fixed_to_double(unsigned long long hi, unsigned long long lo) {
    const bool negative = (long long)hi < 0;
    if (negative) {  // two's complement negation of the pair
        lo = ~lo + 1ull;
        hi = ~hi + (lo == 0ull ? 1ull : 0ull);
    }
    double magnitude;
    if (hi == 0ull) {
        magnitude = (double)lo;
    } else {
        // The top 64 bits, with a sticky bit for everything below: converting those to double
        // rounds exactly as the whole 128-bit value would.
        const int lead = count_leading_zeros(hi);
        unsigned long long top = lead ? (hi << lead) | (lo >> (64 - lead)) : hi;
        const unsigned long long rest = lead ? lo << lead : lo;
        top |= rest != 0ull ? 1ull : 0ull;
        magnitude = ldexp((double)top, 64 - lead);
    }
    return negative ? -magnitude : magnitude;
}

NL_HD int sum_shift(const FixedSums& s, int biased_exponent) {
    return kSumBits - s.headroom - (biased_exponent - kExponentBias);
}

// Adds term x to value i (one of the two passes; see the top of this file).
__device__ inline void scatter_add(const FixedSums& s, SumPass pass, int64_t i, double x) {
    if (x == 0.0) return;
    if (pass == SumPass::kRange) {
        if (!is_finite(x)) {
            atomicOr(s.nonfinite + i, x != x ? kNaNTerm : (x > 0.0 ? kPlusInf : kMinusInf));
            return;
        }
        int e;
        frexp(x, &e);
        atomicMax(s.exponent + i, e + kExponentBias);
        return;
    }
    if (!is_finite(x)) return;
    const double scaled = rint(ldexp(x, sum_shift(s, s.exponent[i])));  // |scaled| < 2^(126 - headroom)
    const double magnitude = scaled < 0.0 ? -scaled : scaled;
    // Split exactly: both parts are integers below 2^64 and the low part's bits are a subset
    // of the 53 significant bits of magnitude.
    const double hi_part = floor(magnitude * 0x1p-64);
    unsigned long long hi = (unsigned long long)hi_part;
    unsigned long long lo = (unsigned long long)(magnitude - hi_part * 0x1p64);
    if (scaled < 0.0) {
        lo = ~lo + 1ull;
        hi = ~hi + (lo == 0ull ? 1ull : 0ull);
    }
    // The low words' wrap-arounds are exactly the carries into the high word, whatever the
    // order in which the atomics land.
    const unsigned long long before = atomicAdd(s.lo + i, lo);
    hi += (before + lo < before) ? 1ull : 0ull;
    if (hi != 0ull) atomicAdd(s.hi + i, hi);
}

// Value i of a finished sum.
template <typename T>
__device__ inline T sum_value(const FixedSums& s, int64_t i) {
    const int flags = s.nonfinite[i];
    if (flags != 0) {
        if ((flags & kNaNTerm) || (flags & (kPlusInf | kMinusInf)) == (kPlusInf | kMinusInf))
            return (T)double_from_bits(0x7ff8000000000000ull);
        return (T)double_from_bits(flags & kPlusInf ? 0x7ff0000000000000ull : 0xfff0000000000000ull);
    }
    if (s.exponent[i] == 0) return T(0);
    return (T)ldexp(fixed_to_double(s.hi[i], s.lo[i]), -sum_shift(s, s.exponent[i]));
}

}  // namespace cuda
}  // namespace nl3dmm
