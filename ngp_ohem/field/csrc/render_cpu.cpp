// Rendering kernels on the CPU, one ray at a time (OpenMP over rays): ray marching to packed samples,
// and volume compositing of packed samples with its backward.
//
// Marching.
// The reference (ngp_ohem/render/march.py, march_rays) builds an (rays x longest ray) candidate
// tensor and filters it; here each ray walks its own steps, tests the occupancy grid cell by cell and
// writes only the survivors, in two passes (walk and count, marking survivors in a bitmask; then fill
// at the prefix-sum offsets, visiting only the marked steps). Float
// arithmetic follows the reference operation by operation (built with -ffp-contract=off), so the
// samples are the same bits:
//   constant steps: t_k = t_near + (k + u) * dt,  n = clamp(ceil((t_far - t_near) / dt - u), 0, max_steps)
//   cone steps:     j = first + k (clamped), t = starts[j] + u * widths[j], first/n from the shared boundaries
//   a step is kept when k < n, t < t_far and the grid cell of origin + t * dir is occupied; with cascades
//   (ngp_ohem/render/occupancy.py) the cell is read in cascade max(frexp exponent of max |x|, frexp
//   exponent of width * res), clamped to [0, C - 1], each cascade c spanning [-b_c, b_c]^3.
// With max_samples >= 0 only the longest prefix of rays whose samples fit is kept.
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#define NGP_OHEM_MARCH_SIMD 1
#endif

namespace {

constexpr int kMaxCascades = 16;

struct Walk {
  const float* o;
  const float* d;
  const float* t_near;
  const float* t_far;
  const float* u;
  const int64_t* first;
  const int64_t* n_steps;
  const float* starts;  // cone boundaries (nullptr: constant steps)
  const float* widths;
  int64_t n_bounds;
  float dt;
  int n_cascades;
  float bound[kMaxCascades], two_bound[kMaxCascades];
  float res_f;
  int64_t res;
  const bool* occupied;
};

inline int cascade_of(const Walk& w, const float pos[3], float width) {
  if (w.n_cascades == 1) return 0;
  const float m = std::max(std::fabs(pos[0]), std::max(std::fabs(pos[1]), std::fabs(pos[2])));
  int e_pos = 0, e_step = 0;
  std::frexp(m, &e_pos);
  std::frexp(width * w.res_f, &e_step);
  const int top = w.n_cascades - 1;
  return std::max(std::min(std::max(e_pos, 0), top), std::min(std::max(e_step, 0), top));
}

// Distance, interval length and position of step k of ray r; false when the step is at or past t_far.
inline bool position_at(const Walk& w, int64_t r, int64_t k, float& t, float& width, float pos[3]) {
  if (w.starts == nullptr) {
    t = w.t_near[r] + (static_cast<float>(k) + w.u[r]) * w.dt;
    width = w.dt;
  } else {
    const int64_t j = std::min(w.first[r] + k, w.n_bounds - 1);
    t = w.starts[j] + w.u[r] * w.widths[j];
    width = w.widths[j];
  }
  if (!(t < w.t_far[r])) return false;
  for (int a = 0; a < 3; ++a) pos[a] = w.o[3 * r + a] + t * w.d[3 * r + a];
  return true;
}

inline bool occupied_at(const Walk& w, const float pos[3], float width) {
  int64_t ijk[3];
  const int c = cascade_of(w, pos, width);
  for (int a = 0; a < 3; ++a) {
    const float rel = (pos[a] + w.bound[c]) / w.two_bound[c] * w.res_f;
    ijk[a] = std::min(std::max(static_cast<int64_t>(rel), int64_t{0}), w.res - 1);
  }
  return w.occupied[c * w.res * w.res * w.res + (ijk[0] * w.res + ijk[1]) * w.res + ijk[2]];
}

#if defined(NGP_OHEM_MARCH_SIMD)
// frexp's exponent of positive normal floats, from the bits; zero and subnormals read -126 here and
// <= -126 or 0 from frexp, and cascade_of clamps both to 0.
inline __m512i frexp_exponent(__m512 v) {
  const __m512i biased = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(v), 23), _mm512_set1_epi32(0xff));
  return _mm512_sub_epi32(biased, _mm512_set1_epi32(126));
}

// Which of steps k0 .. k0 + 15 of ray r (those in ``lanes``) survive: position_at and occupied_at on
// 16 lanes, the same IEEE operations in the same order (mul and add separate, no FMA), so the same
// bits. Why: the walk over empty space is most of marching, and its scalar arithmetic (three divisions
// a step) bounded it. The grid reads stay scalar (a 4-byte gather could read past the grid's end).
// Cells are indexed in int32: the caller checks cascades * res^3 fits.
inline __mmask16 survivors16(const Walk& w, int64_t r, int64_t k0, __mmask16 lanes) {
  const __m512i k = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(k0)),
                                     _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  const __m512 u = _mm512_set1_ps(w.u[r]);
  __m512 t, width;
  if (w.starts == nullptr) {
    t = _mm512_add_ps(_mm512_set1_ps(w.t_near[r]),
                      _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(k), u), _mm512_set1_ps(w.dt)));
    width = _mm512_set1_ps(w.dt);
  } else {
    const __m512i j = _mm512_min_epi32(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(w.first[r])), k),
                                       _mm512_set1_epi32(static_cast<int32_t>(w.n_bounds - 1)));
    width = _mm512_i32gather_ps(j, w.widths, 4);
    t = _mm512_add_ps(_mm512_i32gather_ps(j, w.starts, 4), _mm512_mul_ps(u, width));
  }
  __mmask16 alive = _mm512_mask_cmp_ps_mask(lanes, t, _mm512_set1_ps(w.t_far[r]), _CMP_LT_OQ);
  if (alive == 0) return 0;
  __m512 pos[3];
  for (int a = 0; a < 3; ++a)
    pos[a] = _mm512_add_ps(_mm512_set1_ps(w.o[3 * r + a]), _mm512_mul_ps(t, _mm512_set1_ps(w.d[3 * r + a])));
  __m512i c = _mm512_setzero_si512();
  if (w.n_cascades > 1) {
    const __m512 m = _mm512_max_ps(_mm512_abs_ps(pos[0]), _mm512_max_ps(_mm512_abs_ps(pos[1]), _mm512_abs_ps(pos[2])));
    const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(w.n_cascades - 1);
    const __m512i e_pos = _mm512_min_epi32(_mm512_max_epi32(frexp_exponent(m), zero), top);
    const __m512i e_step =
        _mm512_min_epi32(_mm512_max_epi32(frexp_exponent(_mm512_mul_ps(width, _mm512_set1_ps(w.res_f))), zero), top);
    c = _mm512_max_epi32(e_pos, e_step);
  }
  const __m512 bound = _mm512_permutexvar_ps(c, _mm512_loadu_ps(w.bound));
  const __m512 two_bound = _mm512_permutexvar_ps(c, _mm512_loadu_ps(w.two_bound));
  const __m512 res_f = _mm512_set1_ps(w.res_f), last = _mm512_set1_ps(w.res_f - 1.0f);
  const __m512i res = _mm512_set1_epi32(static_cast<int32_t>(w.res));
  __m512i cell = _mm512_mullo_epi32(c, _mm512_set1_epi32(static_cast<int32_t>(w.res * w.res * w.res)));
  __m512i ijk = _mm512_setzero_si512();
  for (int a = 0; a < 3; ++a) {
    const __m512 rel = _mm512_mul_ps(_mm512_div_ps(_mm512_add_ps(pos[a], bound), two_bound), res_f);
    // Clamped as a float, then truncated: the scalar code's trunc-then-clamp for every non-NaN value
    // (and NaN -> 0 in both, as max_ps returns its second operand then).
    const __m512i i = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(rel, _mm512_setzero_ps()), last));
    ijk = a == 0 ? i : _mm512_add_epi32(_mm512_mullo_epi32(ijk, res), i);
  }
  cell = _mm512_add_epi32(cell, ijk);
  alignas(64) int32_t cells[16];
  _mm512_store_si512(cells, cell);
  for (uint32_t b = alive; b != 0; b &= b - 1) {
    const int lane = __builtin_ctz(b);
    if (!w.occupied[cells[lane]]) alive &= static_cast<__mmask16>(~(1u << lane));
  }
  return alive;
}
#endif

}  // namespace

// Returns (positions (N, 3), directions (N, 3), deltas (N,), ray_index (N,), n_rays_kept (1,)).
// ``simd`` false walks with the scalar code on every machine (what machines without AVX-512 run),
// which the tests compare against the reference too.
std::vector<torch::Tensor> march(torch::Tensor origins, torch::Tensor dirs, torch::Tensor t_near, torch::Tensor t_far,
                                 torch::Tensor u, torch::Tensor first, torch::Tensor n_steps, torch::Tensor starts,
                                 torch::Tensor widths, double dt, std::vector<double> cascade_bounds,
                                 torch::Tensor occupied, int64_t resolution, int64_t max_samples, bool simd) {
  const int64_t n_rays = origins.size(0);
  for (const auto* t : {&origins, &dirs})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == torch::kFloat32 && t->dim() == 2 && t->size(0) == n_rays &&
                t->size(1) == 3, "origins/dirs: contiguous float32 (R, 3)");
  for (const auto* t : {&t_near, &t_far, &u})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == torch::kFloat32 && t->numel() == n_rays, "float32 (R,)");
  for (const auto* t : {&first, &n_steps})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == torch::kInt64 && t->numel() == n_rays, "int64 (R,)");
  TORCH_CHECK(starts.numel() == widths.numel() && (starts.numel() == 0 || (starts.is_contiguous() &&
              widths.is_contiguous() && starts.scalar_type() == torch::kFloat32 &&
              widths.scalar_type() == torch::kFloat32)), "cone boundaries: float32, equal lengths");
  const int64_t n_cascades = static_cast<int64_t>(cascade_bounds.size());
  TORCH_CHECK(n_cascades >= 1 && n_cascades <= kMaxCascades, "1 to 16 cascades");
  TORCH_CHECK(occupied.scalar_type() == torch::kBool && occupied.is_contiguous() &&
              occupied.numel() == n_cascades * resolution * resolution * resolution,
              "occupied: bool (cascades * res^3,)");
  const bool cone = starts.numel() > 0;
  Walk w{origins.data_ptr<float>(), dirs.data_ptr<float>(), t_near.data_ptr<float>(), t_far.data_ptr<float>(),
         u.data_ptr<float>(), first.data_ptr<int64_t>(), n_steps.data_ptr<int64_t>(),
         cone ? starts.data_ptr<float>() : nullptr, cone ? widths.data_ptr<float>() : nullptr, starts.numel(),
         static_cast<float>(dt), static_cast<int>(n_cascades), {}, {},
         static_cast<float>(resolution), resolution, occupied.data_ptr<bool>()};
  for (int64_t c = 0; c < n_cascades; ++c) {
    w.bound[c] = static_cast<float>(cascade_bounds[c]);
    w.two_bound[c] = static_cast<float>(2.0 * cascade_bounds[c]);
  }
  // Pass 1 walks every step of every ray and tests the grid; it keeps a bit per step that survived
  // (at most max_steps bits a ray), so pass 2 visits only the survivors and recomputes their positions
  // without the grid test: the same arithmetic, so the same bits, and the walking is done once
  // (pass 2 walking every step again had been half of the marching time).
  std::vector<int64_t> counts(n_rays + 1, 0), word_start(n_rays + 1, 0);
  int64_t longest = 0;
  for (int64_t r = 0; r < n_rays; ++r) {
    longest = std::max(longest, w.n_steps[r]);
    word_start[r + 1] = word_start[r] + (std::max<int64_t>(w.n_steps[r], 0) + 63) / 64;
  }
#if defined(NGP_OHEM_MARCH_SIMD)
  const int64_t int32_max = 2147483647;
  const bool vector_walk = simd && n_cascades * resolution * resolution * resolution <= int32_max &&
                           starts.numel() <= int32_max && longest <= int32_max - 16;
#else
  (void)simd;
  (void)longest;
#endif
  std::vector<uint64_t> survivors(word_start[n_rays], 0);
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r) {
    uint64_t* bits = survivors.data() + word_start[r];
    int64_t c = 0;
#if defined(NGP_OHEM_MARCH_SIMD)
    if (vector_walk) {
      for (int64_t k0 = 0; k0 < w.n_steps[r]; k0 += 16) {
        const int64_t left = w.n_steps[r] - k0;
        const auto lanes = static_cast<__mmask16>(left >= 16 ? 0xffffu : (1u << left) - 1u);
        const __mmask16 alive = survivors16(w, r, k0, lanes);
        bits[k0 >> 6] |= static_cast<uint64_t>(alive) << (k0 & 63);
        c += __builtin_popcount(alive);
      }
      counts[r + 1] = c;
      continue;
    }
#endif
    float t, width, pos[3];
    for (int64_t k = 0; k < w.n_steps[r]; ++k) {
      if (position_at(w, r, k, t, width, pos) && occupied_at(w, pos, width)) {
        bits[k >> 6] |= uint64_t{1} << (k & 63);
        ++c;
      }
    }
    counts[r + 1] = c;
  }
  int64_t kept = n_rays;
  for (int64_t r = 0; r < n_rays; ++r) {
    counts[r + 1] += counts[r];
    if (max_samples >= 0 && counts[r + 1] > max_samples && kept == n_rays) kept = r;
  }
  const int64_t n = counts[kept];
  auto fopt = origins.options();
  auto positions = torch::empty({n, 3}, fopt), directions = torch::empty({n, 3}, fopt), deltas = torch::empty({n}, fopt);
  auto ray_index = torch::empty({n}, torch::TensorOptions().dtype(torch::kInt64));
  float* pp = positions.data_ptr<float>();
  float* dp = directions.data_ptr<float>();
  float* ep = deltas.data_ptr<float>();
  int64_t* rp = ray_index.data_ptr<int64_t>();
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < kept; ++r) {
    int64_t s = counts[r];
    float t, width, pos[3];
    for (int64_t word = word_start[r]; word < word_start[r + 1]; ++word) {
      for (uint64_t bits = survivors[word]; bits != 0; bits &= bits - 1) {
        const int64_t k = 64 * (word - word_start[r]) + __builtin_ctzll(bits);
        position_at(w, r, k, t, width, pos);
        for (int a = 0; a < 3; ++a) {
          pp[3 * s + a] = pos[a];
          dp[3 * s + a] = w.d[3 * r + a];
        }
        ep[s] = width;
        rp[s] = r;
        ++s;
      }
    }
  }
  return {positions, directions, deltas, ray_index, torch::tensor({kept})};
}

// -- compositing -----------------------------------------------------------------------------------
// The reference is ngp_ohem/render/composite.py: for the samples i of a ray, tau_i = sigma_i * delta_i,
// T_i = exp(-sum_{j<i} tau_j) (the prefix sum in float64, then float, as the reference does),
// alive_i = T_i > t_threshold, w_i = T_i * (1 - exp(-tau_i)) * alive_i; colour = sum w_i c_i +
// (1 - sum w_i) * background. Backward, with s_i = g_colour . (c_i - background) + g_opacity:
//   dL/dc_i = w_i g_colour,   dL/dsigma_i = delta_i (s_i T_i exp(-tau_i) alive_i - sum_{k>i} w_k s_k)
// recomputing T_i and w_i from the inputs, so nothing but the inputs is saved for backward.

namespace {

// The packing both compositing and mining's scoring read: ray_index (N,) sorted in [0, R), background (R, 3).
void check_rays(const torch::Tensor& ray_index, int64_t n, int64_t n_rays, const torch::Tensor& background) {
  TORCH_CHECK(ray_index.is_contiguous() && ray_index.scalar_type() == torch::kInt64 && ray_index.numel() == n,
              "ray_index: int64 (N,)");
  TORCH_CHECK(background.is_contiguous() && background.scalar_type() == torch::kFloat32 &&
              background.numel() == 3 * n_rays, "background: f32 (R, 3)");
  const int64_t* r = ray_index.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(r[i] >= 0 && r[i] < n_rays && (i == 0 || r[i] >= r[i - 1]), "ray_index must be sorted in [0, R)");
}

void check_packed(const torch::Tensor& sigma, const torch::Tensor& rgb, const torch::Tensor& deltas,
                  const torch::Tensor& ray_index, int64_t n_rays, const torch::Tensor& background) {
  const int64_t n = sigma.numel();
  TORCH_CHECK(sigma.is_contiguous() && sigma.scalar_type() == torch::kFloat32 && sigma.dim() == 1, "sigma: f32 (N,)");
  TORCH_CHECK(rgb.is_contiguous() && rgb.scalar_type() == torch::kFloat32 && rgb.numel() == 3 * n, "rgb: f32 (N, 3)");
  TORCH_CHECK(deltas.is_contiguous() && deltas.scalar_type() == torch::kFloat32 && deltas.numel() == n, "deltas");
  check_rays(ray_index, n, n_rays, background);
}

std::vector<int64_t> ray_starts(const int64_t* ray, int64_t n, int64_t n_rays) {
  std::vector<int64_t> start(n_rays + 1, n);
  for (int64_t i = n - 1; i >= 0; --i) start[ray[i]] = i;
  for (int64_t r = n_rays - 1; r >= 0; --r) start[r] = std::min(start[r], start[r + 1]);
  return start;
}

}  // namespace

// Returns (colour (R, 3), opacity (R,), weights (N,)).
std::vector<torch::Tensor> composite_forward(torch::Tensor sigma, torch::Tensor rgb, torch::Tensor deltas,
                                             torch::Tensor ray_index, int64_t n_rays, torch::Tensor background,
                                             double t_threshold) {
  check_packed(sigma, rgb, deltas, ray_index, n_rays, background);
  const int64_t n = sigma.size(0);
  auto colour = torch::empty({n_rays, 3}, sigma.options()), opacity = torch::empty({n_rays}, sigma.options());
  auto weights = torch::empty({n}, sigma.options());
  const float *sp = sigma.data_ptr<float>(), *cp = rgb.data_ptr<float>(), *dp = deltas.data_ptr<float>();
  const float* bg = background.data_ptr<float>();
  const int64_t* rp = ray_index.data_ptr<int64_t>();
  float *op = colour.data_ptr<float>(), *ap = opacity.data_ptr<float>(), *wp = weights.data_ptr<float>();
  const auto start = ray_starts(rp, n, n_rays);
  const float thr = static_cast<float>(t_threshold);
#pragma omp parallel for schedule(dynamic, 256)
  for (int64_t r = 0; r < n_rays; ++r) {
    double excl = 0.0;
    float c[3] = {0, 0, 0}, o = 0.0f;
    for (int64_t i = start[r]; i < start[r + 1]; ++i) {
      const float tau = sp[i] * dp[i];
      const float t = std::exp(-static_cast<float>(excl));
      const float w = (t > thr) ? t * (1.0f - std::exp(-tau)) : 0.0f;
      wp[i] = w;
      for (int k = 0; k < 3; ++k) c[k] += w * cp[3 * i + k];
      o += w;
      excl += static_cast<double>(tau);
    }
    for (int k = 0; k < 3; ++k) op[3 * r + k] = c[k] + (1.0f - o) * bg[3 * r + k];
    ap[r] = o;
  }
  return {colour, opacity, weights};
}

// Returns (dL/dsigma (N,), dL/drgb (N, 3)).
std::vector<torch::Tensor> composite_backward(torch::Tensor grad_colour, torch::Tensor grad_opacity,
                                              torch::Tensor sigma, torch::Tensor rgb, torch::Tensor deltas,
                                              torch::Tensor ray_index, int64_t n_rays, torch::Tensor background,
                                              double t_threshold) {
  check_packed(sigma, rgb, deltas, ray_index, n_rays, background);
  TORCH_CHECK(grad_colour.is_contiguous() && grad_colour.numel() == 3 * n_rays && grad_opacity.is_contiguous() &&
              grad_opacity.numel() == n_rays, "gradients: (R, 3) and (R,)");
  const int64_t n = sigma.size(0);
  auto grad_sigma = torch::empty_like(sigma), grad_rgb = torch::empty_like(rgb);
  const float *sp = sigma.data_ptr<float>(), *cp = rgb.data_ptr<float>(), *dp = deltas.data_ptr<float>();
  const float *bg = background.data_ptr<float>(), *gc = grad_colour.data_ptr<float>();
  const float* go = grad_opacity.data_ptr<float>();
  const int64_t* rp = ray_index.data_ptr<int64_t>();
  float *gs = grad_sigma.data_ptr<float>(), *gr = grad_rgb.data_ptr<float>();
  const auto start = ray_starts(rp, n, n_rays);
  const float thr = static_cast<float>(t_threshold);
#pragma omp parallel for schedule(dynamic, 256)
  for (int64_t r = 0; r < n_rays; ++r) {
    const float g[3] = {gc[3 * r], gc[3 * r + 1], gc[3 * r + 2]};
    const float b[3] = {bg[3 * r], bg[3 * r + 1], bg[3 * r + 2]};
    // Pass 1: total of w_k s_k over the ray.
    double excl = 0.0, total = 0.0;
    for (int64_t i = start[r]; i < start[r + 1]; ++i) {
      const float tau = sp[i] * dp[i];
      const float t = std::exp(-static_cast<float>(excl));
      const float w = (t > thr) ? t * (1.0f - std::exp(-tau)) : 0.0f;
      const float s = g[0] * (cp[3 * i] - b[0]) + g[1] * (cp[3 * i + 1] - b[1]) + g[2] * (cp[3 * i + 2] - b[2]) + go[r];
      total += static_cast<double>(w) * s;
      excl += static_cast<double>(tau);
    }
    // Pass 2: gradients, with the suffix sum sum_{k>i} w_k s_k = total - prefix up to i.
    excl = 0.0;
    double prefix = 0.0;
    for (int64_t i = start[r]; i < start[r + 1]; ++i) {
      const float tau = sp[i] * dp[i];
      const float t = std::exp(-static_cast<float>(excl));
      const bool alive = t > thr;
      const float e = std::exp(-tau);
      const float w = alive ? t * (1.0f - e) : 0.0f;
      const float s = g[0] * (cp[3 * i] - b[0]) + g[1] * (cp[3 * i + 1] - b[1]) + g[2] * (cp[3 * i + 2] - b[2]) + go[r];
      prefix += static_cast<double>(w) * s;
      const double after = total - prefix;
      gs[i] = static_cast<float>(dp[i] * ((alive ? static_cast<double>(s) * t * e : 0.0) - after));
      for (int k = 0; k < 3; ++k) gr[3 * i + k] = w * g[k];
      excl += static_cast<double>(tau);
    }
  }
  return {grad_sigma, grad_rgb};
}

// -- hard sample mining's scoring pass ------------------------------------------------------------------
// What HardSampleMining computed with a small autograd graph (ngp_ohem/mining.py, the reference the tests
// compare against): from the first pass's pre-activation outputs raw (N, 4), sigma = exp(raw_0),
// rgb = sigmoid(raw_1..3), the composited colour C_r, the loss mean_r mean_k (C_rk - target_rk)^2 and its
// gradient with respect to raw (N, 4): dL/dC_rk = 2 (C_rk - target_rk) / (3 R), then the compositing
// backward above, then d sigma / d raw_0 = exp(min(raw_0, 15)) (torch-ngp's truncated exp) and
// d rgb / d raw = rgb (1 - rgb). One ray at a time, the ray's intermediates in a small buffer: no graph.
// Returns (grad_raw (N, 4), hardness = |grad_raw_i| (N,), per-ray loss (R,),
// stats = (sum, sum of squares, count of non-zero) of the hardness in float64 (3,)).
std::vector<torch::Tensor> hardness(torch::Tensor raw, torch::Tensor deltas, torch::Tensor ray_index, int64_t n_rays,
                                    torch::Tensor target, torch::Tensor background, double t_threshold) {
  TORCH_CHECK(raw.dim() == 2 && raw.size(1) == 4 && raw.is_contiguous() && raw.scalar_type() == torch::kFloat32,
              "raw: f32 (N, 4)");
  TORCH_CHECK(target.is_contiguous() && target.scalar_type() == torch::kFloat32 && target.numel() == 3 * n_rays,
              "target: f32 (R, 3)");
  const int64_t n = raw.size(0);
  TORCH_CHECK(deltas.is_contiguous() && deltas.scalar_type() == torch::kFloat32 && deltas.numel() == n, "deltas");
  check_rays(ray_index, n, n_rays, background);
  const int64_t* rp = ray_index.data_ptr<int64_t>();
  auto grad = torch::empty({n, 4}, raw.options()), hard = torch::empty({n}, raw.options());
  auto loss = torch::empty({n_rays}, raw.options());
  const float *xp = raw.data_ptr<float>(), *dp = deltas.data_ptr<float>(), *tg = target.data_ptr<float>();
  const float* bg = background.data_ptr<float>();
  float *gp = grad.data_ptr<float>(), *hp = hard.data_ptr<float>(), *lp = loss.data_ptr<float>();
  const auto start = ray_starts(rp, n, n_rays);
  const float thr = static_cast<float>(t_threshold);
  const float dscale = 2.0f / (3.0f * static_cast<float>(n_rays));
  double sum = 0.0, sum_sq = 0.0, nonzero = 0.0;
#pragma omp parallel reduction(+ : sum, sum_sq, nonzero)
  {
    std::vector<float> buf;  // per sample of the ray: sigma, r, g, b, T, exp(-tau), w
#pragma omp for schedule(dynamic, 256)
    for (int64_t r = 0; r < n_rays; ++r) {
      const int64_t s0 = start[r], len = start[r + 1] - s0;
      buf.resize(7 * len);
      double excl = 0.0;
      float c[3] = {0, 0, 0}, o = 0.0f;
      for (int64_t j = 0; j < len; ++j) {
        const float* x = xp + 4 * (s0 + j);
        float* b = buf.data() + 7 * j;
        b[0] = std::exp(x[0]);
        for (int k = 0; k < 3; ++k) b[1 + k] = 1.0f / (1.0f + std::exp(-x[1 + k]));
        const float tau = b[0] * dp[s0 + j];
        b[4] = std::exp(-static_cast<float>(excl));
        b[5] = std::exp(-tau);
        b[6] = (b[4] > thr) ? b[4] * (1.0f - b[5]) : 0.0f;
        for (int k = 0; k < 3; ++k) c[k] += b[6] * b[1 + k];
        o += b[6];
        excl += static_cast<double>(tau);
      }
      float g[3], ray_loss = 0.0f;
      for (int k = 0; k < 3; ++k) {
        const float diff = c[k] + (1.0f - o) * bg[3 * r + k] - tg[3 * r + k];
        ray_loss += diff * diff;
        g[k] = dscale * diff;
      }
      lp[r] = ray_loss / 3.0f;
      double total = 0.0;
      for (int64_t j = 0; j < len; ++j) {
        const float* b = buf.data() + 7 * j;
        const float sv = g[0] * (b[1] - bg[3 * r]) + g[1] * (b[2] - bg[3 * r + 1]) + g[2] * (b[3] - bg[3 * r + 2]);
        total += static_cast<double>(b[6]) * sv;
      }
      double prefix = 0.0;
      for (int64_t j = 0; j < len; ++j) {
        const float* b = buf.data() + 7 * j;
        const float* x = xp + 4 * (s0 + j);
        float* out = gp + 4 * (s0 + j);
        const float sv = g[0] * (b[1] - bg[3 * r]) + g[1] * (b[2] - bg[3 * r + 1]) + g[2] * (b[3] - bg[3 * r + 2]);
        prefix += static_cast<double>(b[6]) * sv;
        const bool alive = b[4] > thr;
        const float d_sigma =
            static_cast<float>(dp[s0 + j] * ((alive ? static_cast<double>(sv) * b[4] * b[5] : 0.0) - (total - prefix)));
        out[0] = d_sigma * std::exp(std::min(x[0], 15.0f));
        float sq = out[0] * out[0];
        for (int k = 0; k < 3; ++k) {
          out[1 + k] = b[6] * g[k] * b[1 + k] * (1.0f - b[1 + k]);
          sq += out[1 + k] * out[1 + k];
        }
        const float h = std::sqrt(sq);
        hp[s0 + j] = h;
        sum += h;
        sum_sq += static_cast<double>(h) * h;
        nonzero += h > 0.0f ? 1.0 : 0.0;
      }
    }
  }
  auto stats = torch::tensor({sum, sum_sq, nonzero}, torch::kFloat64);
  return {grad, hard, loss, stats};
}

// The b largest of key (N,), as indices in ascending order: the set torch.topk picks (up to ties), in the
// order the samples were marched, so the hard pass gathers ray-coherent positions. O(N) (nth_element).
// The b-th largest of n non-negative float keys, by radix selection on their bit patterns (for non-negative
// IEEE floats the order of the patterns is the order of the values): three histogram passes of 11, 11 and 10
// bits, each narrowing to the bucket that holds it. O(n) with no data movement, unlike nth_element.
static uint32_t kth_largest_bits(const uint32_t* bits, int64_t n, int64_t b) {
  uint32_t prefix = 0, prefix_mask = 0;
  int64_t rank = b;  // the rank wanted among the keys that match the prefix so far
  constexpr int kPasses = 3;
  constexpr int kShift[kPasses] = {21, 10, 0}, kWidth[kPasses] = {11, 11, 10};
  std::vector<int64_t> hist(1 << 11);
  for (int p = 0; p < kPasses; ++p) {
    const uint32_t buckets = 1u << kWidth[p], field = buckets - 1;
    std::fill(hist.begin(), hist.begin() + buckets, 0);
    for (int64_t i = 0; i < n; ++i)
      if ((bits[i] & prefix_mask) == prefix) ++hist[(bits[i] >> kShift[p]) & field];
    uint32_t bucket = buckets;
    while (bucket-- > 0) {  // from the largest bucket down until it holds the rank-th largest
      if (rank <= hist[bucket]) break;
      rank -= hist[bucket];
    }
    prefix |= bucket << kShift[p];
    prefix_mask |= field << kShift[p];
  }
  return prefix;
}

torch::Tensor top_indices(torch::Tensor key, int64_t b) {
  TORCH_CHECK(key.dim() == 1 && key.is_contiguous() && key.scalar_type() == torch::kFloat32, "key: f32 (N,)");
  const int64_t n = key.size(0);
  TORCH_CHECK(b >= 0 && b <= n, "top_indices: b out of range");
  auto out = torch::empty({b}, torch::kInt64);
  if (b == 0) return out;
  const float* kp = key.data_ptr<float>();
  std::vector<uint32_t> bits(n);
  std::memcpy(bits.data(), kp, n * sizeof(float));
  uint32_t worst = 0;  // a set sign bit (negative) or a pattern above +inf's (NaN) wins
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, bits[i]);
  TORCH_CHECK(worst <= 0x7f800000u, "top_indices: keys must be non-negative numbers or +inf (a negative or NaN key)");
  const uint32_t kth = kth_largest_bits(bits.data(), n, b);  // the b-th largest key's bits
  int64_t above = 0;
  for (int64_t i = 0; i < n; ++i) above += bits[i] > kth;
  int64_t ties = b - above;  // how many keys equal to kth to take, first ones first
  int64_t* op = out.data_ptr<int64_t>();
  int64_t m = 0;
  for (int64_t i = 0; i < n && m < b; ++i) {
    if (bits[i] > kth || (bits[i] == kth && ties-- > 0)) op[m++] = i;
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("march", &march, "ray marching to packed samples (CPU)");
  m.def("composite_forward", &composite_forward, "volume compositing of packed samples (CPU)");
  m.def("composite_backward", &composite_backward, "gradient of composite_forward (CPU)");
  m.def("hardness", &hardness, "HSM scoring: loss gradient w.r.t. raw outputs, per-sample hardness (CPU)");
  m.def("top_indices", &top_indices, "indices of the b largest keys, ascending (CPU)");
}
