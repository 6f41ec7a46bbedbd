// The corners of hashgrid_levels.h for 16 samples at once (AVX-512), bit for bit: the same IEEE
// operations in the same order on every lane (no FMA: the kernels build with -ffp-contract=off, and
// mul and add are separate intrinsics), so vector and scalar kernels agree exactly and the tests can
// keep comparing against the slow references with torch.equal where they did before.
//
// Why: the scalar corner arithmetic (clamps, floors, hashes, weights), not memory, bounded the
// encoding on this class of CPU: a chunked level-outer loop cost ~38 ns per (sample, level) whether
// the samples were coherent along rays or uniformly random, i.e. the table rows were already in cache.
// Sixteen lanes do that arithmetic once per 16 samples; the 8 row loads per sample become 64-bit
// gathers (one row of 2 features is one 64-bit element).
#pragma once

#include "hashgrid_levels.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define NGP_OHEM_SIMD 1
#endif

namespace ngp_ohem {

#if defined(NGP_OHEM_SIMD)

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

// Two-feature encoding of 16 samples at level lv: out[i * stride + 0..1] for lane i (stride in floats).
// Accumulates corner by corner from 0 in the scalar kernels' order (a += w * row), so sums agree exactly.
inline void encode16_f2(const float* xs0, const float* xs1, const float* xs2, const Level& lv, uint32_t mask,
                        const float* table, float* out, int64_t stride) {
  __m512i idx[8];
  __m512 w[8];
  corners16(xs0, xs1, xs2, lv, mask, idx, w);
  // lanes 0-7 and 8-15 of a weight vector, each weight twice: (w0, w0, w1, w1, ...) against (f0, f1) rows
  const __m512i dup_lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512i dup_hi = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  __m512 acc_lo = _mm512_setzero_ps(), acc_hi = _mm512_setzero_ps();
  const long long* rows = reinterpret_cast<const long long*>(table);
  for (int c = 0; c < 8; ++c) {
    const __m256i i_lo = _mm512_castsi512_si256(idx[c]);
    const __m256i i_hi = _mm512_extracti64x4_epi64(idx[c], 1);
    const __m512 r_lo = _mm512_castsi512_ps(_mm512_i32gather_epi64(i_lo, rows, 8));
    const __m512 r_hi = _mm512_castsi512_ps(_mm512_i32gather_epi64(i_hi, rows, 8));
    acc_lo = _mm512_add_ps(acc_lo, _mm512_mul_ps(_mm512_permutexvar_ps(dup_lo, w[c]), r_lo));
    acc_hi = _mm512_add_ps(acc_hi, _mm512_mul_ps(_mm512_permutexvar_ps(dup_hi, w[c]), r_hi));
  }
  const int32_t s = static_cast<int32_t>(stride / 2);  // in 64-bit units
  const __m256i where = _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_epi32(s));
  long long* dst = reinterpret_cast<long long*>(out);
  _mm512_i32scatter_epi64(dst, where, _mm512_castps_si512(acc_lo), 8);
  _mm512_i32scatter_epi64(dst + 8 * static_cast<int64_t>(s), where, _mm512_castps_si512(acc_hi), 8);
}

#endif  // NGP_OHEM_SIMD

// Positions x (n, 3) as three coordinate rows (3, n) for the vector corners.
inline void to_coordinate_rows(const float* x, int64_t n, float* rows) {
  for (int64_t i = 0; i < n; ++i) {
    rows[i] = x[3 * i];
    rows[n + i] = x[3 * i + 1];
    rows[2 * n + i] = x[3 * i + 2];
  }
}

}  // namespace ngp_ohem
