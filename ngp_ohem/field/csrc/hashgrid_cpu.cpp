// Fused multiresolution hash encoding for CPU (forward and table gradient), OpenMP-parallel.
//
// Conventions of ngp_ohem/field/hashgrid.py (the reference), corners from hashgrid_levels.h. Forward is parallel over samples; the
// backward scatter is parallel over levels, whose table rows are disjoint, so it needs no atomics.
#include <torch/extension.h>

#include "hashgrid_levels.h"
#include "hashgrid_simd.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

using ngp_ohem::Level;
using ngp_ohem::read_levels;

torch::Tensor hashgrid_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor shifts,
                               torch::Tensor sides, torch::Tensor dense, torch::Tensor offsets, bool zero_outside,
                               int64_t mask) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.is_contiguous() && x.scalar_type() == torch::kFloat32);
  TORCH_CHECK(table.is_contiguous() && table.scalar_type() == torch::kFloat32);
  TORCH_CHECK(table.size(0) < (int64_t{1} << 31), "hash-grid table: more rows than 32-bit indices reach");
  const auto levels = read_levels(scales, shifts, sides, dense, offsets, zero_outside);
  const int64_t n = x.size(0), n_levels = static_cast<int64_t>(levels.size()), f = table.size(1);
  auto out = torch::empty({n, n_levels * f}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const uint32_t m = static_cast<uint32_t>(mask);
  // Level-outer within a chunk of samples: one level's table slice stays hot in cache while the
  // chunk's samples gather from it (the tables of all levels together do not fit in L2).
  constexpr int64_t kChunk = 1024;
  const int64_t width = n_levels * f;
#pragma omp parallel
  {
    std::vector<float> coords(3 * kChunk);
#pragma omp for schedule(static)
    for (int64_t start = 0; start < n; start += kChunk) {
      const int64_t stop = std::min(start + kChunk, n), count = stop - start;
      int64_t vector_end = start;  // samples [start, vector_end) go 16 at a time
#if defined(NGP_OHEM_SIMD)
      if (f == 2) {
        ngp_ohem::to_coordinate_rows(xp + 3 * start, count, coords.data());
        vector_end = start + count / ngp_ohem::kLanes * ngp_ohem::kLanes;
        const float* c0 = coords.data();
        for (int64_t l = 0; l < n_levels; ++l) {
          ngp_ohem::for_each_batch_prefetched(
              c0, c0 + count, c0 + 2 * count, vector_end - start, levels[l], m, tp, f, false,
              [&](int64_t i0, const ngp_ohem::BatchCorners& b) {
                ngp_ohem::sum_rows_f2(b.idx, b.w, tp, op + (start + i0) * width + l * 2, width);
              });
        }
      }
#endif
      for (int64_t l = 0; l < n_levels; ++l) {
        ngp_ohem::for_each_corners_prefetched(
            xp, vector_end, stop, levels[l], m, tp, f, false, [&](int64_t i, const int64_t* idx, const float* w) {
              float* o = op + i * width + l * f;
              if (f == 2) {
                float a0 = 0.0f, a1 = 0.0f;
                for (int c = 0; c < 8; ++c) {
                  const float* row = tp + idx[c] * 2;
                  a0 += w[c] * row[0];
                  a1 += w[c] * row[1];
                }
                o[0] = a0;
                o[1] = a1;
              } else {
                for (int64_t k = 0; k < f; ++k) o[k] = 0.0f;
                for (int c = 0; c < 8; ++c) {
                  const float* row = tp + idx[c] * f;
                  for (int64_t k = 0; k < f; ++k) o[k] += w[c] * row[k];
                }
              }
            });
      }
    }
  }
  return out;
}

// Two-feature table gradient, corner by corner: samples in marching order share corners, most of all at the
// coarse levels, so a corner's row is summed in registers while it repeats and added to the table when it
// changes, instead of a read-modify-write of the same row per sample (a store-to-load chain through memory).
struct RowRuns {
  int64_t row[8] = {-1, -1, -1, -1, -1, -1, -1, -1};  // the row each corner is summing
  float sum[8][2] = {};

  void add(float* table, int c, int64_t r, float g0, float g1) {
    if (r != row[c]) {
      if (row[c] >= 0) {
        table[2 * row[c]] += sum[c][0];
        table[2 * row[c] + 1] += sum[c][1];
      }
      row[c] = r;
      sum[c][0] = 0.0f;
      sum[c][1] = 0.0f;
    }
    sum[c][0] += g0;
    sum[c][1] += g1;
  }

  void flush(float* table) {  // the open runs
    for (int c = 0; c < 8; ++c) {
      if (row[c] < 0) continue;
      table[2 * row[c]] += sum[c][0];
      table[2 * row[c] + 1] += sum[c][1];
      row[c] = -1;
    }
  }
};

// Adds the table gradient of the samples x, given the gradient of their encodings grad_out (N, L * F), into
// grad_table (rows, F): what autograd's accumulation into `.grad` would do, without a fresh (rows, F) buffer.
void hashgrid_backward_into(torch::Tensor grad_out, torch::Tensor x, torch::Tensor grad_table, torch::Tensor scales,
                            torch::Tensor shifts, torch::Tensor sides, torch::Tensor dense, torch::Tensor offsets,
                            bool zero_outside, int64_t mask) {
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.scalar_type() == torch::kFloat32);
  TORCH_CHECK(grad_table.dim() == 2 && grad_table.is_contiguous() && grad_table.scalar_type() == torch::kFloat32,
              "hash-grid table gradient: a contiguous float32 (rows, features) tensor");
  TORCH_CHECK(grad_table.size(0) < (int64_t{1} << 31), "hash-grid table: more rows than 32-bit indices reach");
  const auto levels = read_levels(scales, shifts, sides, dense, offsets, zero_outside);
  const int64_t n = x.size(0), n_levels = static_cast<int64_t>(levels.size());
  const int64_t f = grad_out.size(1) / n_levels;
  TORCH_CHECK(grad_table.size(1) == f && grad_out.size(0) == n, "hash-grid backward: shapes disagree");
  const float* xp = x.data_ptr<float>();
  float* tp = grad_table.data_ptr<float>();
  const uint32_t m = static_cast<uint32_t>(mask);
  const float* gp = grad_out.data_ptr<float>();
  // Vector corners need the positions as coordinate rows; the scatter itself stays scalar.
  int64_t vector_end = 0;
  std::vector<float> coords;
#if defined(NGP_OHEM_SIMD)
  coords.resize(3 * n);
  ngp_ohem::to_coordinate_rows(xp, n, coords.data());
  vector_end = n / ngp_ohem::kLanes * ngp_ohem::kLanes;
#endif
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t l = 0; l < n_levels; ++l) {
    RowRuns runs;  // f == 2
    // Adds sample i's gradient g at corners (idx, w) into the table: through the runs for f == 2.
    auto scatter = [&](const float* g, auto&& corner_row, auto&& corner_weight) {
      for (int c = 0; c < 8; ++c) {
        const int64_t r = corner_row(c);
        const float wc = corner_weight(c);
        if (f == 2) {
          runs.add(tp, c, r, wc * g[0], wc * g[1]);
        } else {
          float* row = tp + r * f;
          for (int64_t k = 0; k < f; ++k) row[k] += wc * g[k];
        }
      }
    };
#if defined(NGP_OHEM_SIMD)
    const float* c0 = coords.data();
    ngp_ohem::for_each_batch_prefetched(
        c0, c0 + n, c0 + 2 * n, vector_end, levels[l], m, tp, f, true, [&](int64_t i0, const ngp_ohem::BatchCorners& b) {
          for (int j = 0; j < ngp_ohem::kLanes; ++j) {
            scatter(gp + (i0 + j) * n_levels * f + l * f, [&](int c) { return static_cast<int64_t>(b.idx[c][j]); },
                    [&](int c) { return b.w[c][j]; });
          }
        });
#endif
    ngp_ohem::for_each_corners_prefetched(
        xp, vector_end, n, levels[l], m, tp, f, true, [&](int64_t i, const int64_t* idx, const float* w) {
          scatter(gp + i * n_levels * f + l * f, [&](int c) { return idx[c]; }, [&](int c) { return w[c]; });
        });
    runs.flush(tp);
  }
}

torch::Tensor hashgrid_backward(torch::Tensor grad_out, torch::Tensor x, int64_t n_rows, torch::Tensor scales,
                                torch::Tensor shifts, torch::Tensor sides, torch::Tensor dense, torch::Tensor offsets,
                                bool zero_outside, int64_t mask) {
  TORCH_CHECK(n_rows < (int64_t{1} << 31), "hash-grid table: more rows than 32-bit indices reach");
  const int64_t f = grad_out.size(1) / std::max<int64_t>(scales.size(0), 1);
  auto grad_table = torch::zeros({n_rows, f}, grad_out.options());
  hashgrid_backward_into(grad_out, x, grad_table, scales, shifts, sides, dense, offsets, zero_outside, mask);
  return grad_table;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &hashgrid_forward, "hash grid encoding forward (CPU)");
  m.def("backward", &hashgrid_backward, "hash grid encoding table gradient (CPU)");
  m.def("backward_into", &hashgrid_backward_into, "hash grid encoding table gradient, added into a tensor (CPU)");
}
