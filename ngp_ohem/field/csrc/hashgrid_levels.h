// Hash-grid level constants and the 8 trilinear corners of a position, shared by the training encoder
// (hashgrid_cpu.cpp) and the fused no-graph field (field_infer_cpu.cpp): both must pick the same
// corners bit for bit, so both are built without FMA contraction.
//
// Conventions of ngp_ohem/field/hashgrid.py (the reference): positions are clamped to [0, 1] (NaN to
// 0, so no index is ever out of range), level l maps x to p = x * scale_l + shift, clamped to
// [0, side_l - 1], and the upper corner to side_l - 1 (under tcnn, shift +0.5, neither clamp ever
// binds; under gridencoder, shift -0.5 and scale = side = the resolution, both can). Dense indexing
// for levels flagged dense, otherwise the spatial hash with primes (1, 2654435761, 805459861) masked to
// the table size. With zero_outside (gridencoder), a position with a coordinate outside [0, 1] gets
// zero weights: it encodes to 0 and scatters no gradient.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ngp_ohem {

struct Level {
  float scale;
  float shift;
  int64_t side;
  bool dense;
  int64_t offset;
  bool zero_outside;
};

inline std::vector<Level> read_levels(const torch::Tensor& scales, const torch::Tensor& shifts,
                                      const torch::Tensor& sides, const torch::Tensor& dense,
                                      const torch::Tensor& offsets, bool zero_outside) {
  const int64_t n = scales.size(0);
  TORCH_CHECK(shifts.size(0) == n && sides.size(0) == n && dense.size(0) == n && offsets.size(0) == n,
              "level constants differ in length");
  std::vector<Level> levels(n);
  auto s = scales.accessor<float, 1>();
  auto sh = shifts.accessor<float, 1>();
  auto sd = sides.accessor<int64_t, 1>();
  auto d = dense.accessor<bool, 1>();
  auto o = offsets.accessor<int64_t, 1>();
  for (int64_t l = 0; l < n; ++l) levels[l] = Level{s[l], sh[l], sd[l], d[l], o[l], zero_outside};
  return levels;
}

inline void corners(const float* x, const Level& lv, uint32_t mask, int64_t idx[8], float w[8]) {
  int64_t base[3];
  float frac[3];
  bool outside = false;
  const int64_t last = lv.side - 1;
  const float top = static_cast<float>(last);
  for (int d = 0; d < 3; ++d) {
    outside |= x[d] < 0.0f || x[d] > 1.0f;
    const float xc = x[d] >= 0.0f ? (x[d] <= 1.0f ? x[d] : 1.0f) : 0.0f;
    float pos = xc * lv.scale + lv.shift;
    pos = pos >= 0.0f ? (pos <= top ? pos : top) : 0.0f;
    const float fl = std::floor(pos);
    base[d] = static_cast<int64_t>(fl);
    frac[d] = pos - fl;
  }
  const bool zero = lv.zero_outside && outside;
  for (int c = 0; c < 8; ++c) {
    const int64_t cx = std::min(base[0] + (c & 1), last);
    const int64_t cy = std::min(base[1] + ((c >> 1) & 1), last);
    const int64_t cz = std::min(base[2] + ((c >> 2) & 1), last);
    const float wx = (c & 1) ? frac[0] : 1.0f - frac[0];
    const float wy = ((c >> 1) & 1) ? frac[1] : 1.0f - frac[1];
    const float wz = ((c >> 2) & 1) ? frac[2] : 1.0f - frac[2];
    w[c] = zero ? 0.0f : wx * wy * wz;
    int64_t local;
    if (lv.dense) {
      local = cx + cy * lv.side + cz * lv.side * lv.side;
    } else {
      const uint32_t h = static_cast<uint32_t>(cx) ^ (static_cast<uint32_t>(cy) * 2654435761u) ^
                         (static_cast<uint32_t>(cz) * 805459861u);
      local = static_cast<int64_t>(h & mask);
    }
    idx[c] = lv.offset + local;
  }
}

// Calls visit(i, idx, w) for the samples i in [begin, end) in order, with the corners of sample i at level
// lv, while the table rows of sample i + kCornersAhead are already being fetched (rows at `rows`, f floats
// each; `for_write` when visit will add into them). Why: where a level's rows do not fit in L2 (a 2^17
// table is 1 MiB a level), one sample at a time leaves each of its 8 loads waiting on the last; on a
// 2-core Zen 3 (512 KiB L2) the scalar encoding of 2^16 ray-like samples went from ~110 ms to ~27 ms
// with the rows of 16 samples ahead in flight (benchmarks/adhoc/encoding_memory.py), bit for bit the same features (benchmarks/README.md).
constexpr int64_t kCornersAhead = 16;

template <class Visit>
inline void for_each_corners_prefetched(const float* x, int64_t begin, int64_t end, const Level& lv, uint32_t mask,
                                        const float* rows, int64_t f, bool for_write, Visit&& visit) {
  constexpr int64_t kSlots = 32;  // a power of two above kCornersAhead
  static_assert(kSlots > kCornersAhead && (kSlots & (kSlots - 1)) == 0, "ring size");
  int64_t idx[kSlots][8];
  float w[kSlots][8];
  auto fetch = [&](int64_t i) {
    const int64_t s = i & (kSlots - 1);
    corners(x + 3 * i, lv, mask, idx[s], w[s]);
    for (int c = 0; c < 8; ++c) {
      if (for_write) {
        __builtin_prefetch(rows + idx[s][c] * f, 1);
      } else {
        __builtin_prefetch(rows + idx[s][c] * f, 0);
      }
    }
  };
  for (int64_t i = begin; i < std::min(end, begin + kCornersAhead); ++i) fetch(i);
  for (int64_t i = begin; i < end; ++i) {
    if (i + kCornersAhead < end) fetch(i + kCornersAhead);
    const int64_t s = i & (kSlots - 1);
    visit(i, static_cast<const int64_t*>(idx[s]), static_cast<const float*>(w[s]));
  }
}

}  // namespace ngp_ohem
