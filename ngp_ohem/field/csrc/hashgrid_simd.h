// The corners of hashgrid_levels.h for kLanes samples at once (16 with AVX-512, 8 with AVX2), bit for bit:
// the same IEEE operations in the same order on every lane (no FMA: the kernels build with
// -ffp-contract=off, and mul and add are separate intrinsics), so vector and scalar kernels agree exactly
// and the tests can keep comparing against the slow references with torch.equal where they did before.
//
// Why: the scalar corner arithmetic (clamps, floors, hashes, weights), not memory, bounded the
// encoding on the first AVX-512 CPU measured: a chunked level-outer loop cost ~38 ns per (sample, level) whether
// the samples were coherent along rays or uniformly random, i.e. the table rows were already in cache.
// Sixteen lanes do that arithmetic once per 16 samples; the 8 row loads per sample become 64-bit
// gathers (one row of 2 features is one 64-bit element). On an AVX2-only CPU (a Zen 3 here) the same
// held after the rows were prefetched: a 0.1 MiB table that stays in L1/L2 encoded no faster than a
// 13 MiB one (benchmarks/README.md), so the 8-lane version does the same there. Once the arithmetic ran
// 16 wide, the rows bound it on a Zen 5 (1 MiB L2), so both widths now fetch ahead (kBatchesAhead below).
//
// Callers use the width-neutral kLanes, BatchCorners, for_each_batch_prefetched and sum_rows_f2 under
// NGP_OHEM_SIMD.
#pragma once

#include "hashgrid_levels.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#define NGP_OHEM_SIMD 1
#endif

namespace ngp_ohem {

#if defined(__AVX512F__)

constexpr int kLanes = 16;

// Clamp v to [0, top] as the scalar code does: v >= 0 ? (v <= top ? v : top) : 0 (NaN -> 0).
inline __m512 clamp_like_scalar(__m512 v, __m512 top) {
  const __mmask16 ge0 = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __mmask16 le_top = _mm512_cmp_ps_mask(v, top, _CMP_LE_OQ);
  const __m512 upper = _mm512_mask_blend_ps(le_top, top, v);
  return _mm512_mask_blend_ps(ge0, _mm512_setzero_ps(), upper);
}

// Rows idx[c] (table rows, global) and weights w[c] of the 8 corners of 16 samples whose coordinates
// are xs[0..2] (structure of arrays), at level lv. Exactly corners() lane by lane.
inline void corners16(const float* xs0, const float* xs1, const float* xs2, const Level& lv, uint32_t mask,
                      __m512i idx[8], __m512 w[8]) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 scale = _mm512_set1_ps(lv.scale), shift = _mm512_set1_ps(lv.shift);
  const __m512 top = _mm512_set1_ps(static_cast<float>(lv.side - 1));
  const __m512i last = _mm512_set1_epi32(static_cast<int32_t>(lv.side - 1));
  const float* xs[3] = {xs0, xs1, xs2};
  __m512i base[3];
  __m512 frac[3], omf[3];
  __mmask16 outside = 0;
  for (int d = 0; d < 3; ++d) {
    const __m512 v = _mm512_loadu_ps(xs[d]);
    outside |= _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ) | _mm512_cmp_ps_mask(v, one, _CMP_GT_OQ);
    const __m512 xc = clamp_like_scalar(v, one);
    const __m512 pos = clamp_like_scalar(_mm512_add_ps(_mm512_mul_ps(xc, scale), shift), top);
    const __m512 fl = _mm512_roundscale_ps(pos, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    base[d] = _mm512_cvttps_epi32(fl);
    frac[d] = _mm512_sub_ps(pos, fl);
    omf[d] = _mm512_sub_ps(one, frac[d]);
  }
  const __mmask16 keep = lv.zero_outside ? static_cast<__mmask16>(~outside) : static_cast<__mmask16>(0xFFFF);
  const __m512i offset = _mm512_set1_epi32(static_cast<int32_t>(lv.offset));
  const __m512i side = _mm512_set1_epi32(static_cast<int32_t>(lv.side));
  const __m512i side2 = _mm512_set1_epi32(static_cast<int32_t>(lv.side * lv.side));
  const __m512i prime1 = _mm512_set1_epi32(static_cast<int32_t>(2654435761u));
  const __m512i prime2 = _mm512_set1_epi32(static_cast<int32_t>(805459861u));
  const __m512i hash_mask = _mm512_set1_epi32(static_cast<int32_t>(mask));
  const __m512i ones = _mm512_set1_epi32(1);
  for (int c = 0; c < 8; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    const __m512i cx = _mm512_min_epi32(bx ? _mm512_add_epi32(base[0], ones) : base[0], last);
    const __m512i cy = _mm512_min_epi32(by ? _mm512_add_epi32(base[1], ones) : base[1], last);
    const __m512i cz = _mm512_min_epi32(bz ? _mm512_add_epi32(base[2], ones) : base[2], last);
    const __m512 wxy = _mm512_mul_ps(bx ? frac[0] : omf[0], by ? frac[1] : omf[1]);
    w[c] = _mm512_maskz_mov_ps(keep, _mm512_mul_ps(wxy, bz ? frac[2] : omf[2]));
    __m512i local;
    if (lv.dense) {
      local = _mm512_add_epi32(_mm512_add_epi32(cx, _mm512_mullo_epi32(cy, side)), _mm512_mullo_epi32(cz, side2));
    } else {
      const __m512i h = _mm512_xor_si512(_mm512_xor_si512(cx, _mm512_mullo_epi32(cy, prime1)),
                                         _mm512_mullo_epi32(cz, prime2));
      local = _mm512_and_si512(h, hash_mask);
    }
    idx[c] = _mm512_add_epi32(offset, local);
  }
}

// Two-feature encoding of the kLanes samples of a batch at one level, in registers: lo holds lanes 0-7 as
// (f0, f1) pairs, hi lanes 8-15. Accumulates corner by corner from 0 in the scalar kernels' order
// (a += w * row), so sums agree exactly.
inline void rows_f2_sums(const int32_t idx[8][kLanes], const float w[8][kLanes], const float* table, __m512& lo,
                         __m512& hi) {
  // lanes 0-7 and 8-15 of a weight vector, each weight twice: (w0, w0, w1, w1, ...) against (f0, f1) rows
  const __m512i dup_lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512i dup_hi = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  __m512 acc_lo = _mm512_setzero_ps(), acc_hi = _mm512_setzero_ps();
  const long long* rows = reinterpret_cast<const long long*>(table);
  for (int c = 0; c < 8; ++c) {
    const __m256i i_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx[c]));
    const __m256i i_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx[c] + 8));
    const __m512 wc = _mm512_loadu_ps(w[c]);
    const __m512 r_lo = _mm512_castsi512_ps(_mm512_i32gather_epi64(i_lo, rows, 8));
    const __m512 r_hi = _mm512_castsi512_ps(_mm512_i32gather_epi64(i_hi, rows, 8));
    acc_lo = _mm512_add_ps(acc_lo, _mm512_mul_ps(_mm512_permutexvar_ps(dup_lo, wc), r_lo));
    acc_hi = _mm512_add_ps(acc_hi, _mm512_mul_ps(_mm512_permutexvar_ps(dup_hi, wc), r_hi));
  }
  lo = acc_lo;
  hi = acc_hi;
}

// Writes rows_f2_sums' pairs to out[i * stride + 0..1] for lane i (stride in floats).
inline void store_f2_sums(__m512 acc_lo, __m512 acc_hi, float* out, int64_t stride) {
  const int32_t s = static_cast<int32_t>(stride / 2);  // in 64-bit units
  const __m256i where = _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_epi32(s));
  long long* dst = reinterpret_cast<long long*>(out);
  _mm512_i32scatter_epi64(dst, where, _mm512_castps_si512(acc_lo), 8);
  _mm512_i32scatter_epi64(dst + 8 * static_cast<int64_t>(s), where, _mm512_castps_si512(acc_hi), 8);
}

// rows_f2_sums written to out[i * stride + 0..1] for lane i (stride in floats).
inline void sum_rows_f2(const int32_t idx[8][kLanes], const float w[8][kLanes], const float* table, float* out,
                        int64_t stride) {
  __m512 lo, hi;
  rows_f2_sums(idx, w, table, lo, hi);
  store_f2_sums(lo, hi, out, stride);
}

// Rows idx and weights w (as arrays, lane-minor) of the 8 corners of kLanes samples.
inline void corners_lanes(const float* xs0, const float* xs1, const float* xs2, const Level& lv, uint32_t mask,
                          int32_t idx[8][kLanes], float w[8][kLanes]) {
  __m512i ci[8];
  __m512 cw[8];
  corners16(xs0, xs1, xs2, lv, mask, ci, cw);
  for (int c = 0; c < 8; ++c) {
    _mm512_storeu_si512(idx[c], ci[c]);
    _mm512_storeu_ps(w[c], cw[c]);
  }
}

#elif defined(__AVX2__)

constexpr int kLanes = 8;

// clamp_like_scalar for 8 lanes: v >= 0 ? (v <= top ? v : top) : 0, NaN -> 0 (ordered compares).
inline __m256 clamp_like_scalar8(__m256 v, __m256 top) {
  const __m256 ge0 = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 le_top = _mm256_cmp_ps(v, top, _CMP_LE_OQ);
  return _mm256_and_ps(ge0, _mm256_blendv_ps(top, v, le_top));
}

// corners16 on 8 lanes with AVX2: exactly corners() lane by lane.
inline void corners8(const float* xs0, const float* xs1, const float* xs2, const Level& lv, uint32_t mask,
                     __m256i idx[8], __m256 w[8]) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 scale = _mm256_set1_ps(lv.scale), shift = _mm256_set1_ps(lv.shift);
  const __m256 top = _mm256_set1_ps(static_cast<float>(lv.side - 1));
  const __m256i last = _mm256_set1_epi32(static_cast<int32_t>(lv.side - 1));
  const float* xs[3] = {xs0, xs1, xs2};
  __m256i base[3];
  __m256 frac[3], omf[3];
  __m256 outside = zero;
  for (int d = 0; d < 3; ++d) {
    const __m256 v = _mm256_loadu_ps(xs[d]);
    outside = _mm256_or_ps(outside, _mm256_or_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ), _mm256_cmp_ps(v, one, _CMP_GT_OQ)));
    const __m256 xc = clamp_like_scalar8(v, one);
    const __m256 pos = clamp_like_scalar8(_mm256_add_ps(_mm256_mul_ps(xc, scale), shift), top);
    const __m256 fl = _mm256_floor_ps(pos);
    base[d] = _mm256_cvttps_epi32(fl);
    frac[d] = _mm256_sub_ps(pos, fl);
    omf[d] = _mm256_sub_ps(one, frac[d]);
  }
  const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  const __m256 keep = lv.zero_outside ? _mm256_andnot_ps(outside, all) : all;
  const __m256i offset = _mm256_set1_epi32(static_cast<int32_t>(lv.offset));
  const __m256i side = _mm256_set1_epi32(static_cast<int32_t>(lv.side));
  const __m256i side2 = _mm256_set1_epi32(static_cast<int32_t>(lv.side * lv.side));
  const __m256i prime1 = _mm256_set1_epi32(static_cast<int32_t>(2654435761u));
  const __m256i prime2 = _mm256_set1_epi32(static_cast<int32_t>(805459861u));
  const __m256i hash_mask = _mm256_set1_epi32(static_cast<int32_t>(mask));
  const __m256i ones = _mm256_set1_epi32(1);
  for (int c = 0; c < 8; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    const __m256i cx = _mm256_min_epi32(bx ? _mm256_add_epi32(base[0], ones) : base[0], last);
    const __m256i cy = _mm256_min_epi32(by ? _mm256_add_epi32(base[1], ones) : base[1], last);
    const __m256i cz = _mm256_min_epi32(bz ? _mm256_add_epi32(base[2], ones) : base[2], last);
    const __m256 wxy = _mm256_mul_ps(bx ? frac[0] : omf[0], by ? frac[1] : omf[1]);
    w[c] = _mm256_and_ps(keep, _mm256_mul_ps(wxy, bz ? frac[2] : omf[2]));
    __m256i local;
    if (lv.dense) {
      local = _mm256_add_epi32(_mm256_add_epi32(cx, _mm256_mullo_epi32(cy, side)), _mm256_mullo_epi32(cz, side2));
    } else {
      const __m256i h = _mm256_xor_si256(_mm256_xor_si256(cx, _mm256_mullo_epi32(cy, prime1)),
                                         _mm256_mullo_epi32(cz, prime2));
      local = _mm256_and_si256(h, hash_mask);
    }
    idx[c] = _mm256_add_epi32(offset, local);
  }
}

inline void corners_lanes(const float* xs0, const float* xs1, const float* xs2, const Level& lv, uint32_t mask,
                          int32_t idx[8][kLanes], float w[8][kLanes]) {
  __m256i ci[8];
  __m256 cw[8];
  corners8(xs0, xs1, xs2, lv, mask, ci, cw);
  for (int c = 0; c < 8; ++c) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx[c]), ci[c]);
    _mm256_storeu_ps(w[c], cw[c]);
  }
}

// sum_rows_f2 on 8 lanes: two 4-row gathers a corner, summed corner by corner from 0 as the scalar loop does.
inline void sum_rows_f2(const int32_t idx[8][kLanes], const float w[8][kLanes], const float* table, float* out,
                        int64_t stride) {
  const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256i dup_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
  __m256 acc_lo = _mm256_setzero_ps(), acc_hi = _mm256_setzero_ps();
  const long long* rows = reinterpret_cast<const long long*>(table);
  for (int c = 0; c < 8; ++c) {
    const __m128i i_lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(idx[c]));
    const __m128i i_hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(idx[c] + 4));
    const __m256 wc = _mm256_loadu_ps(w[c]);
    const __m256 r_lo = _mm256_castsi256_ps(_mm256_i32gather_epi64(rows, i_lo, 8));
    const __m256 r_hi = _mm256_castsi256_ps(_mm256_i32gather_epi64(rows, i_hi, 8));
    acc_lo = _mm256_add_ps(acc_lo, _mm256_mul_ps(_mm256_permutevar8x32_ps(wc, dup_lo), r_lo));
    acc_hi = _mm256_add_ps(acc_hi, _mm256_mul_ps(_mm256_permutevar8x32_ps(wc, dup_hi), r_hi));
  }
  alignas(32) float pairs[16];
  _mm256_store_ps(pairs, acc_lo);
  _mm256_store_ps(pairs + 8, acc_hi);
  for (int i = 0; i < 8; ++i) {
    out[i * stride] = pairs[2 * i];
    out[i * stride + 1] = pairs[2 * i + 1];
  }
}

#endif  // vector widths

#if defined(NGP_OHEM_SIMD)
// Without fetching ahead, the vector gathers wait on the rows once a level leaves the L2, so the rows of
// the batch kCornersAhead samples ahead are fetched, at both widths. AVX2 on a Zen 3 (2^17 table, 2^16
// samples): 40 ms against the scalar ring's 22. AVX-512 on a Zen 5 (1 MiB L2), where the 16-lane path had
// fetched nothing ahead since the CPU it was first tuned on was bound by the corner arithmetic: the fused
// no-graph field 17.0-18.7 -> 8.8-8.9 ms (benchmarks/adhoc/field_kernel_ab.py; benchmarks/README.md).
constexpr int64_t kBatchesAhead = kCornersAhead / kLanes;

// The corners of one batch of kLanes samples at one level.
struct BatchCorners {
  int32_t idx[8][kLanes];
  float w[8][kLanes];
};

// for_each_corners_prefetched for whole batches: calls visit(i0, corners) for the batches i0 = 0, kLanes, ...
// below end (a multiple of kLanes) of the coordinate rows xs0..xs2, in order, while the table rows of the
// batch kBatchesAhead later are already being fetched (rows at `rows`, f floats each; `for_write` when
// visit will add into them).
template <class Visit>
inline void for_each_batch_prefetched(const float* xs0, const float* xs1, const float* xs2, int64_t end,
                                      const Level& lv, uint32_t mask, const float* rows, int64_t f, bool for_write,
                                      Visit&& visit) {
  constexpr int64_t kSlots = 4;  // a power of two above kBatchesAhead
  static_assert(kSlots > kBatchesAhead, "ring size");
  BatchCorners ring[kSlots];
  const int64_t n_batches = end / kLanes;
  auto fetch = [&](int64_t b) {
    BatchCorners& slot = ring[b & (kSlots - 1)];
    const int64_t i0 = b * kLanes;
    corners_lanes(xs0 + i0, xs1 + i0, xs2 + i0, lv, mask, slot.idx, slot.w);
    for (int c = 0; c < 8; ++c) {
      for (int j = 0; j < kLanes; ++j) {
        if (for_write) {
          __builtin_prefetch(rows + static_cast<int64_t>(slot.idx[c][j]) * f, 1);
        } else {
          __builtin_prefetch(rows + static_cast<int64_t>(slot.idx[c][j]) * f, 0);
        }
      }
    }
  };
  for (int64_t b = 0; b < std::min(n_batches, kBatchesAhead); ++b) fetch(b);
  for (int64_t b = 0; b < n_batches; ++b) {
    if (b + kBatchesAhead < n_batches) fetch(b + kBatchesAhead);
    visit(b * kLanes, static_cast<const BatchCorners&>(ring[b & (kSlots - 1)]));
  }
}
#endif

// Positions x (n, 3) as three coordinate rows (3, n) for the vector corners.
inline void to_coordinate_rows(const float* x, int64_t n, float* rows) {
  for (int64_t i = 0; i < n; ++i) {
    rows[i] = x[3 * i];
    rows[n + i] = x[3 * i + 1];
    rows[2 * n + i] = x[3 * i + 2];
  }
}

}  // namespace ngp_ohem
