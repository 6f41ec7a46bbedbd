// Hash-grid level constants and the 8 trilinear corners of a position, shared by the training encoder
// (hashgrid_cpu.cpp) and the fused no-graph field (field_infer_cpu.cpp): both must pick the same
// corners bit for bit, so both are built without FMA contraction.
//
// Conventions of ngp_ohem/field/hashgrid.py (the reference): positions are clamped to [0, 1] (NaN to
// 0, so no index is ever out of range), level l maps x to p = x * scale_l + 0.5, dense indexing for
// levels flagged dense, otherwise the spatial hash with primes (1, 2654435761, 805459861) masked to
// the table size.
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace ngp_ohem {

struct Level {
  float scale;
  int64_t side;
  bool dense;
  int64_t offset;
};

inline std::vector<Level> read_levels(const torch::Tensor& scales, const torch::Tensor& sides,
                                      const torch::Tensor& dense, const torch::Tensor& offsets) {
  const int64_t n = scales.size(0);
  std::vector<Level> levels(n);
  auto s = scales.accessor<float, 1>();
  auto sd = sides.accessor<int64_t, 1>();
  auto d = dense.accessor<bool, 1>();
  auto o = offsets.accessor<int64_t, 1>();
  for (int64_t l = 0; l < n; ++l) levels[l] = Level{s[l], sd[l], d[l], o[l]};
  return levels;
}

inline void corners(const float* x, const Level& lv, uint32_t mask, int64_t idx[8], float w[8]) {
  int64_t base[3];
  float frac[3];
  for (int d = 0; d < 3; ++d) {
    const float xc = x[d] >= 0.0f ? (x[d] <= 1.0f ? x[d] : 1.0f) : 0.0f;
    const float pos = xc * lv.scale + 0.5f;
    const float fl = std::floor(pos);
    base[d] = static_cast<int64_t>(fl);
    frac[d] = pos - fl;
  }
  for (int c = 0; c < 8; ++c) {
    const int64_t cx = base[0] + (c & 1), cy = base[1] + ((c >> 1) & 1), cz = base[2] + ((c >> 2) & 1);
    const float wx = (c & 1) ? frac[0] : 1.0f - frac[0];
    const float wy = ((c >> 1) & 1) ? frac[1] : 1.0f - frac[1];
    const float wz = ((c >> 2) & 1) ? frac[2] : 1.0f - frac[2];
    w[c] = wx * wy * wz;
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

}  // namespace ngp_ohem
