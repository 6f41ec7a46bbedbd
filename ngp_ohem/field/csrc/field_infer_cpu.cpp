// Fused no-graph evaluation of the whole Instant-NGP field on the CPU (inference mode).
//
// What the autograd path computes in five passes over all samples (hash encoding, density MLP,
// SH direction encoding, concatenation, colour MLP, each writing an (N, width) tensor to memory),
// this does tile by tile: a tile of kTile samples goes through every stage in buffers that stay in
// L1/L2, and nothing is kept for a backward pass. Same conventions as ngp_ohem/field/hashgrid.py,
// ngp_ohem/field/sh.py and NGPField.forward (the reference the tests compare against):
//   enc = hashgrid(x01); h = density_mlp(enc); raw = [h[0], colour_mlp([sh4(d), h[1:]])]
// In bf16 (AVX-512 BF16) the encoding leaves a chunk as level-major bf16 pairs that the first layer reads in
// place (encode_pairs_tile); in fp32 and on AMX it leaves as sample-major fp32 rows (encode_tile).
// MLPs are bias-free with ReLU between layers. Weights arrive transposed to (in, out), so the inner
// loop runs over output units (contiguous, vectorised by the compiler for the CPU it builds on).
// Parallel over chunks through at::parallel_for (torch's intra-op thread count).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "hashgrid_levels.h"
#include "hashgrid_simd.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using ngp_ohem::Level;
using ngp_ohem::read_levels;

constexpr int64_t kTile = 64;     // samples per MLP pass (buffers stay in L1/L2)
constexpr int64_t kChunk = 1024;  // samples per encoding pass (one level's hot rows reused across them)
constexpr int64_t kMaxWidth = 256;

struct Layer {
  const float* wt;  // (in, out) row-major
  int64_t in, out;
  std::vector<float> wt8;  // a layer of at most 8 outputs: (in, 8), zero-padded (dense_avx2_narrow)
};

std::vector<Layer> read_layers(const std::vector<torch::Tensor>& weights) {
  std::vector<Layer> layers;
  for (const auto& w : weights) {
    TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && w.scalar_type() == torch::kFloat32, "weights: (in, out) f32");
    TORCH_CHECK(w.size(0) <= kMaxWidth && w.size(1) <= kMaxWidth, "layer wider than ", kMaxWidth);
    Layer layer{w.data_ptr<float>(), w.size(0), w.size(1), {}};
    if (layer.out <= 8) {  // padded once a call, not once a tile
      layer.wt8.assign(layer.in * 8, 0.0f);
      for (int64_t k = 0; k < layer.in; ++k)
        for (int64_t o = 0; o < layer.out; ++o) layer.wt8[k * 8 + o] = layer.wt[k * layer.out + o];
    }
    layers.push_back(std::move(layer));
  }
  for (size_t i = 1; i < layers.size(); ++i) TORCH_CHECK(layers[i].in == layers[i - 1].out, "layer sizes differ");
  return layers;
}

// Hash-grid features of n <= kChunk samples into enc (n, L * F), level-outer so a level's rows stay hot.
// Corners from hashgrid_levels.h / hashgrid_simd.h, as the training encoder picks them (this file too is
// built without FMA contraction): 16 samples at a time with AVX-512, 8 with AVX2, the rest one by one.
// The scalar loop is not auto-vectorised: GCC's own AVX-512 gathers for it were 2x slower than scalar
// loads on AMD Zen; the hand-written vector path gathers whole 2-feature rows instead.
__attribute__((optimize("no-tree-vectorize"))) void encode_tile(const float* x, int64_t n,
                                                                const std::vector<Level>& levels, const float* table,
                                                                int64_t f, uint32_t mask, float* enc, float* coords) {
  const int64_t width = static_cast<int64_t>(levels.size()) * f;
  int64_t vector_end = 0;
#if defined(NGP_OHEM_SIMD)
  if (f == 2) {
    ngp_ohem::to_coordinate_rows(x, n, coords);
    vector_end = n / ngp_ohem::kLanes * ngp_ohem::kLanes;
    for (size_t l = 0; l < levels.size(); ++l) {
      ngp_ohem::for_each_batch_prefetched(
          coords, coords + n, coords + 2 * n, vector_end, levels[l], mask, table, f, false,
          [&](int64_t i0, const ngp_ohem::BatchCorners& b) {
            ngp_ohem::sum_rows_f2(b.idx, b.w, table, enc + i0 * width + static_cast<int64_t>(l) * 2, width);
          });
    }
  }
#else
  (void)coords;
#endif
  for (size_t l = 0; l < levels.size(); ++l) {
    ngp_ohem::for_each_corners_prefetched(
        x, vector_end, n, levels[l], mask, table, f, false, [&](int64_t i, const int64_t* idx, const float* w) {
          float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          for (int c = 0; c < 8; ++c) {
            const float* row = table + idx[c] * f;
            for (int64_t k = 0; k < f; ++k) acc[k] += w[c] * row[k];
          }
          float* o = enc + i * width + static_cast<int64_t>(l) * f;
          for (int64_t k = 0; k < f; ++k) o[k] = acc[k];
        });
  }
}

// out (n, NO) = in (n, ni) @ wt (ni, NO), ReLU'd when relu. NO is a compile-time width so that the
// accumulators of four samples stay in vector registers; four samples share each weight row.
template <int NO>
void dense_fixed(const float* in, int64_t n, int64_t ni, const float* wt, float* out, bool relu) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    float a0[NO], a1[NO], a2[NO], a3[NO];
    for (int o = 0; o < NO; ++o) a0[o] = a1[o] = a2[o] = a3[o] = 0.0f;
    const float* r0 = in + i * ni;
    for (int64_t k = 0; k < ni; ++k) {
      const float* w = wt + k * NO;
      const float v0 = r0[k], v1 = r0[ni + k], v2 = r0[2 * ni + k], v3 = r0[3 * ni + k];
#pragma omp simd
      for (int o = 0; o < NO; ++o) {
        a0[o] += v0 * w[o];
        a1[o] += v1 * w[o];
        a2[o] += v2 * w[o];
        a3[o] += v3 * w[o];
      }
    }
    float* d = out + i * NO;
    for (int o = 0; o < NO; ++o) {
      d[o] = relu ? std::max(a0[o], 0.0f) : a0[o];
      d[NO + o] = relu ? std::max(a1[o], 0.0f) : a1[o];
      d[2 * NO + o] = relu ? std::max(a2[o], 0.0f) : a2[o];
      d[3 * NO + o] = relu ? std::max(a3[o], 0.0f) : a3[o];
    }
  }
  for (; i < n; ++i) {
    float a[NO];
    for (int o = 0; o < NO; ++o) a[o] = 0.0f;
    for (int64_t k = 0; k < ni; ++k) {
      const float* w = wt + k * NO;
      const float v = in[i * ni + k];
#pragma omp simd
      for (int o = 0; o < NO; ++o) a[o] += v * w[o];
    }
    for (int o = 0; o < NO; ++o) out[i * NO + o] = relu ? std::max(a[o], 0.0f) : a[o];
  }
}

#if defined(__AVX2__) && !defined(__AVX512F__)
// dense_fixed for AVX2 (16 vector registers): its four samples x NO outputs need NO / 2 accumulators, which
// for 64 outputs is twice the register file, so GCC keeps them in memory. Here four samples x 16 outputs
// (8 accumulators, the two weight vectors held in registers: left to itself GCC reloads them for every
// multiply) over the whole of k, then the next 16 outputs; k ascending per output, as dense_fixed, but with
// fused multiply-adds where the CPU has them (rounded once, so not dense_fixed's bits; the tests compare
// with the module path to a tolerance, as for every fp32 path here). On a 2-core Zen 3 one 64 -> 64 layer
// over 2^16 samples, one thread: dense_fixed 13-18 ms, this without FMA 8.5-11, with FMA 7.2-8.1
// (benchmarks/README.md).
inline __m256 multiply_add(__m256 v, __m256 w, __m256 acc) {
#if defined(__FMA__)
  return _mm256_fmadd_ps(v, w, acc);
#else
  return _mm256_add_ps(acc, _mm256_mul_ps(v, w));
#endif
}

template <int NO>
void dense_avx2(const float* in, int64_t n, int64_t ni, const float* wt, float* out, bool relu) {
  static_assert(NO % 16 == 0, "whole 16-output blocks");
  const __m256 zero = _mm256_setzero_ps();
  auto finish = [&](__m256 v) { return relu ? _mm256_max_ps(zero, v) : v; };  // v < 0 ? 0 : v, as std::max(v, 0)
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float* r = in + i * ni;
    float* d = out + i * NO;
    for (int ob = 0; ob < NO; ob += 16) {
      __m256 a[4][2] = {{zero, zero}, {zero, zero}, {zero, zero}, {zero, zero}};
      const float* w = wt + ob;
      for (int64_t k = 0; k < ni; ++k, w += NO) {
        __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
        asm("" : "+x"(w0), "+x"(w1));  // keeps them in registers
        for (int s = 0; s < 4; ++s) {
          const __m256 v = _mm256_broadcast_ss(r + s * ni + k);
          a[s][0] = multiply_add(v, w0, a[s][0]);
          a[s][1] = multiply_add(v, w1, a[s][1]);
        }
      }
      for (int s = 0; s < 4; ++s) {
        _mm256_storeu_ps(d + s * NO + ob, finish(a[s][0]));
        _mm256_storeu_ps(d + s * NO + ob + 8, finish(a[s][1]));
      }
    }
  }
  if (i < n) dense_fixed<NO>(in + i * ni, n - i, ni, wt, out + i * NO, relu);
}

void dense_any(const float* in, int64_t n, const Layer& layer, float* out, bool relu);

// A layer of at most 8 outputs (the colour MLP's last, 3): its weights zero-padded to one vector (Layer::wt8),
// eight samples at a time, one accumulator each; the last n % 8 samples go through dense_any. The runtime-width
// loop did it one sample at a time with 3-wide inner loops, ~5 ms of the colour MLP's ~13 at 2^16.
void dense_avx2_narrow(const float* in, int64_t n, const Layer& layer, float* out, bool relu) {
  const int64_t ni = layer.in, no = layer.out;
  const __m256 zero = _mm256_setzero_ps();
  alignas(32) float row[8];
  int64_t i0 = 0;
  for (; i0 + 8 <= n; i0 += 8) {
    __m256 a[8] = {zero, zero, zero, zero, zero, zero, zero, zero};
    for (int64_t k = 0; k < ni; ++k) {
      __m256 w = _mm256_loadu_ps(layer.wt8.data() + k * 8);
      asm("" : "+x"(w));  // keeps it in a register
      for (int s = 0; s < 8; ++s) a[s] = multiply_add(_mm256_broadcast_ss(in + (i0 + s) * ni + k), w, a[s]);
    }
    for (int s = 0; s < 8; ++s) {
      _mm256_store_ps(row, relu ? _mm256_max_ps(zero, a[s]) : a[s]);
      for (int64_t o = 0; o < no; ++o) out[(i0 + s) * no + o] = row[o];
    }
  }
  if (i0 < n) dense_any(in + i0 * ni, n - i0, layer, out + i0 * no, relu);
}
#endif

// Any other width: the same loops with a runtime width.
void dense_any(const float* in, int64_t n, const Layer& layer, float* out, bool relu) {
  const int64_t ni = layer.in, no = layer.out;
  for (int64_t i = 0; i < n; ++i) {
    float a[kMaxWidth];
    for (int64_t o = 0; o < no; ++o) a[o] = 0.0f;
    for (int64_t k = 0; k < ni; ++k) {
      const float* w = layer.wt + k * no;
      const float v = in[i * ni + k];
#pragma omp simd
      for (int64_t o = 0; o < no; ++o) a[o] += v * w[o];
    }
    for (int64_t o = 0; o < no; ++o) out[i * no + o] = relu ? std::max(a[o], 0.0f) : a[o];
  }
}

void dense_tile(const float* in, int64_t n, const Layer& layer, float* out, bool relu) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  switch (layer.out) {
    case 64: return dense_avx2<64>(in, n, layer.in, layer.wt, out, relu);
    case 32: return dense_avx2<32>(in, n, layer.in, layer.wt, out, relu);
    case 16: return dense_avx2<16>(in, n, layer.in, layer.wt, out, relu);
    case 128: return dense_avx2<128>(in, n, layer.in, layer.wt, out, relu);
    default:
      if (layer.out <= 8) return dense_avx2_narrow(in, n, layer, out, relu);
      break;
  }
#endif
  switch (layer.out) {
    case 64: return dense_fixed<64>(in, n, layer.in, layer.wt, out, relu);
    case 32: return dense_fixed<32>(in, n, layer.in, layer.wt, out, relu);
    case 16: return dense_fixed<16>(in, n, layer.in, layer.wt, out, relu);
    case 128: return dense_fixed<128>(in, n, layer.in, layer.wt, out, relu);
    default: return dense_any(in, n, layer, out, relu);
  }
}

// Runs an MLP over a tile, ping-ponging between two buffers; returns the buffer holding the output.
float* mlp_tile(const float* in, int64_t n, const std::vector<Layer>& layers, float* buf_a, float* buf_b) {
  const float* src = in;
  float* dst = buf_a;
  for (size_t j = 0; j < layers.size(); ++j) {
    dense_tile(src, n, layers[j], dst, j + 1 < layers.size());
    src = dst;
    dst = (dst == buf_a) ? buf_b : buf_a;
  }
  return const_cast<float*>(src);
}

// -- bf16 MLPs (AVX-512 BF16: vdpbf16ps) -----------------------------------------------------------------
// Under bf16 autocast (precision: mixed on the CPU) torch rounds each layer's input and weights to bf16 and
// accumulates in fp32; so do these layers, with fp32 accumulators kept between a layer's sum and its ReLU.
// A weight matrix (in, out) is packed as pairs along `in`, 16 outputs per vector: w[kp][o][2], in and out
// padded to multiples of 16 with zeros, so one vdpbf16ps adds in[2kp] w[2kp][o] + in[2kp+1] w[2kp+1][o]
// for 16 outputs at once, and a hidden layer's padded output row is the next layer's padded input row.
// Hidden layers write their ReLU'd outputs straight to bf16 (vcvtneps2bf16, round to nearest even as
// torch converts); the last layer writes fp32.
inline uint16_t to_bf16(float v) {  // round to nearest even, as torch's conversion does (finite inputs)
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

struct PackedLayer {
  std::vector<uint16_t> w;  // (in_pad / 2, out_pad, 2)
  int64_t in_pad, out, out_pad;
};

PackedLayer pack_bf16(const Layer& layer) {
  PackedLayer p{{}, (layer.in + 15) / 16 * 16, layer.out, (layer.out + 15) / 16 * 16};
  p.w.assign(p.in_pad * p.out_pad, 0);
  for (int64_t k = 0; k < layer.in; ++k)
    for (int64_t o = 0; o < layer.out; ++o) p.w[(k / 2) * p.out_pad * 2 + o * 2 + (k & 1)] = to_bf16(layer.wt[k * layer.out + o]);
  return p;
}

// The input of a bf16 layer, as bf16 pairs (32 bits: inputs 2kp and 2kp + 1): sample-major rows of in_pad / 2
// pairs (ld 0: hidden layers, converted rows), or pair-major with ld samples a pair (the encoding's level-major
// tile, one pair a level, which the first layer reads where encode_pairs_tile wrote it).
struct Bf16Input {
  const uint32_t* pairs;
  int64_t ld;
};

#if defined(__AVX512BF16__)
constexpr bool kHaveBf16Dot = true;

// (n, out_pad) = in (n, in_pad, bf16) @ w: ReLU'd bf16 rows into out16 when it is given (a hidden layer),
// else fp32 rows into out32. NB = out_pad / 16 accumulators a sample.
template <int NB>
inline void store_row(const __m512* acc, float* out32, uint16_t* out16) {
  for (int b = 0; b < NB; ++b) {
    if (out16 != nullptr) {
      const __m256bh v = _mm512_cvtneps_pbh(_mm512_max_ps(acc[b], _mm512_setzero_ps()));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out16 + 16 * b), (__m256i)v);
    } else {
      _mm512_storeu_ps(out32 + 16 * b, acc[b]);
    }
  }
}

// S samples at a time share each weight vector, S * NB = 16 independent accumulator chains (enough to
// hide vdpbf16ps's latency whatever the layer's width). Either layout gives the same sums in the same order.
template <int NB, bool kPairMajor>
void dense_bf16_fixed(Bf16Input in, int64_t n, const PackedLayer& p, float* out32, uint16_t* out16) {
  constexpr int S = NB >= 16 ? 1 : 16 / NB;
  const int64_t pairs = p.in_pad / 2, op = p.out_pad;
  // where pair kp of sample i is
  auto at = [&](int64_t i, int64_t kp) -> int32_t {
    return static_cast<int32_t>(kPairMajor ? in.pairs[kp * in.ld + i] : in.pairs[i * pairs + kp]);
  };
  const __m512i* w = reinterpret_cast<const __m512i*>(p.w.data());
  int64_t i = 0;
  for (; i + S <= n; i += S) {
    __m512 acc[S][NB];
    for (int s = 0; s < S; ++s)
      for (int b = 0; b < NB; ++b) acc[s][b] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < pairs; ++kp) {
      __m512i wv[NB];
      for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(w + kp * NB + b);
      for (int s = 0; s < S; ++s) {
        const __m512bh x = (__m512bh)_mm512_set1_epi32(at(i + s, kp));
        for (int b = 0; b < NB; ++b) acc[s][b] = _mm512_dpbf16_ps(acc[s][b], (__m512bh)wv[b], x);
      }
    }
    for (int s = 0; s < S; ++s)
      store_row<NB>(acc[s], out32 ? out32 + (i + s) * op : nullptr, out16 ? out16 + (i + s) * op : nullptr);
  }
  for (; i < n; ++i) {
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < pairs; ++kp) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(at(i, kp));
      for (int b = 0; b < NB; ++b) acc[b] = _mm512_dpbf16_ps(acc[b], (__m512bh)_mm512_loadu_si512(w + kp * NB + b), x);
    }
    store_row<NB>(acc, out32 ? out32 + i * op : nullptr, out16 ? out16 + i * op : nullptr);
  }
}

template <bool kPairMajor>
void dense_bf16_layout(Bf16Input in, int64_t n, const PackedLayer& p, float* out32, uint16_t* out16) {
  switch (p.out_pad / 16) {
    case 1: return dense_bf16_fixed<1, kPairMajor>(in, n, p, out32, out16);
    case 2: return dense_bf16_fixed<2, kPairMajor>(in, n, p, out32, out16);
    case 4: return dense_bf16_fixed<4, kPairMajor>(in, n, p, out32, out16);
    case 8: return dense_bf16_fixed<8, kPairMajor>(in, n, p, out32, out16);
    default: TORCH_CHECK(false, "bf16 field kernel: layer width ", p.out, " (16, 32, 64 or 128 outputs)");
  }
}

void dense_bf16(Bf16Input in, int64_t n, const PackedLayer& p, float* out32, uint16_t* out16) {
  if (in.ld != 0) return dense_bf16_layout<true>(in, n, p, out32, out16);
  dense_bf16_layout<false>(in, n, p, out32, out16);
}

// fp32 rows (n, width) with row stride `stride` -> bf16 rows (n, pad), zero-padded; 16 at a time.
void rows_to_bf16(const float* src, int64_t n, int64_t width, int64_t stride, uint16_t* dst, int64_t pad) {
  for (int64_t i = 0; i < n; ++i) {
    const float* r = src + i * stride;
    uint16_t* o = dst + i * pad;
    int64_t k = 0;
    for (; k + 16 <= width; k += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r + k)));
    for (; k < width; ++k) o[k] = to_bf16(r[k]);
    for (; k < pad; ++k) o[k] = 0;
  }
}

// Hash-grid features of n <= kChunk samples as bf16 pairs, level-major: pairs[l * ld + i] holds sample i's two
// features at level l, the pair the first bf16 layer multiplies by its level's weights. With enc, the fp32
// features go to enc (n, L * 2) as well, as encode_tile writes them (mining's hard pass reuses them). Why: the
// first layer reads this tile where it was written, where encode_tile scattered fp32 features to sample-major
// rows that rows_to_bf16 read again to convert. Same sums as encode_tile, rounded to nearest even by the same
// instruction (vcvtne*ps2bf16, the one-by-one tail too), so the field's outputs are bit for bit the same.
__attribute__((optimize("no-tree-vectorize"))) void encode_pairs_tile(const float* x, int64_t n,
                                                                      const std::vector<Level>& levels,
                                                                      const float* table, uint32_t mask, float* enc,
                                                                      uint32_t* pairs, int64_t ld, float* coords) {
  const int64_t width = static_cast<int64_t>(levels.size()) * 2;
  ngp_ohem::to_coordinate_rows(x, n, coords);
  const int64_t vector_end = n / ngp_ohem::kLanes * ngp_ohem::kLanes;
  for (size_t l = 0; l < levels.size(); ++l) {
    uint32_t* level_pairs = pairs + static_cast<int64_t>(l) * ld;
    float* level_enc = enc == nullptr ? nullptr : enc + static_cast<int64_t>(l) * 2;
    ngp_ohem::for_each_batch_prefetched(
        coords, coords + n, coords + 2 * n, vector_end, levels[l], mask, table, 2, false,
        [&](int64_t i0, const ngp_ohem::BatchCorners& b) {
          __m512 lo, hi;
          ngp_ohem::rows_f2_sums(b.idx, b.w, table, lo, hi);
          if (level_enc != nullptr) ngp_ohem::store_f2_sums(lo, hi, level_enc + i0 * width, width);
          _mm512_storeu_si512(level_pairs + i0, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        });
    ngp_ohem::for_each_corners_prefetched(
        x, vector_end, n, levels[l], mask, table, 2, false, [&](int64_t i, const int64_t* idx, const float* w) {
          float acc[2] = {0.0f, 0.0f};
          for (int c = 0; c < 8; ++c) {
            const float* row = table + idx[c] * 2;
            for (int k = 0; k < 2; ++k) acc[k] += w[c] * row[k];
          }
          if (level_enc != nullptr) {
            level_enc[i * width] = acc[0];
            level_enc[i * width + 1] = acc[1];
          }
          const __m512 both = _mm512_castps128_ps512(_mm_set_ps(0.0f, 0.0f, acc[1], acc[0]));
          level_pairs[i] = static_cast<uint32_t>(_mm256_cvtsi256_si32((__m256i)_mm512_cvtneps_pbh(both)));
        });
  }
}
#else
constexpr bool kHaveBf16Dot = false;
void encode_pairs_tile(const float*, int64_t, const std::vector<Level>&, const float*, uint32_t, float*, uint32_t*,
                       int64_t, float*) {
  TORCH_CHECK(false, "bf16 field kernel: this CPU has no AVX-512 BF16");
}
void dense_bf16(Bf16Input, int64_t, const PackedLayer&, float*, uint16_t*) {
  TORCH_CHECK(false, "bf16 field kernel: this CPU has no AVX-512 BF16");
}
void rows_to_bf16(const float*, int64_t, int64_t, int64_t, uint16_t*, int64_t) {
  TORCH_CHECK(false, "bf16 field kernel: this CPU has no AVX-512 BF16");
}
#endif

// -- the same layers on AMX tiles, where the CPU has them ---------------------------------------------------
// One tile instruction (tdpbf16ps) multiplies 16 samples x 32 inputs (bf16) by 32 inputs x 16 outputs
// (the packed pairs above are exactly AMX's B layout) into 16 x 16 fp32 accumulators. Linux hands out the
// tile registers only on request (arch_prctl ARCH_REQ_XCOMP_PERM, once per process); each thread loads
// the tile configuration before use. All tiles are 16 rows x 64 bytes: C0-C3 accumulate up to 64 outputs,
// T4 holds the samples, T5 the weights. Samples past the tile's count are computed and ignored.
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <sys/syscall.h>
#include <unistd.h>
#include <mutex>

bool amx_permitted() {
  static const bool ok = [] {
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void load_tile_config() {
  TileConfig c;
  for (int t = 0; t < 6; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  _tile_loadconfig(&c);
}

// One layer: 16-row blocks of `in` (stride in_pad bf16) into fp32 rows of out32 (stride out_pad).
void dense_amx(const uint16_t* in, int64_t n, const PackedLayer& p, float* out32) {
  const int64_t ks = p.in_pad / 32, nbs = p.out_pad / 16;
  const int in_stride = static_cast<int>(p.in_pad * 2), w_stride = static_cast<int>(p.out_pad * 4);
  const int out_stride = static_cast<int>(p.out_pad * 4);
  for (int64_t r0 = 0; r0 < n; r0 += 16) {
    for (int64_t g0 = 0; g0 < nbs; g0 += 4) {
      const int64_t g = std::min<int64_t>(4, nbs - g0);
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t k = 0; k < ks; ++k) {
        _tile_loadd(4, in + r0 * p.in_pad + 32 * k, in_stride);
        const uint16_t* wk = p.w.data() + (16 * k) * p.out_pad * 2 + 16 * g0 * 2;
        _tile_loadd(5, wk, w_stride);
        _tile_dpbf16ps(0, 4, 5);
        if (g > 1) {
          _tile_loadd(5, wk + 32, w_stride);
          _tile_dpbf16ps(1, 4, 5);
        }
        if (g > 2) {
          _tile_loadd(5, wk + 64, w_stride);
          _tile_dpbf16ps(2, 4, 5);
        }
        if (g > 3) {
          _tile_loadd(5, wk + 96, w_stride);
          _tile_dpbf16ps(3, 4, 5);
        }
      }
      float* o = out32 + r0 * p.out_pad + 16 * g0;
      _tile_stored(0, o, out_stride);
      if (g > 1) _tile_stored(1, o + 16, out_stride);
      if (g > 2) _tile_stored(2, o + 32, out_stride);
      if (g > 3) _tile_stored(3, o + 48, out_stride);
    }
  }
}

bool amx_fits(const std::vector<PackedLayer>& layers) {
  for (const auto& l : layers)
    if (l.in_pad % 32 != 0) return false;
  return amx_permitted();
}

// An MLP over up to kTile samples on AMX; hidden layers go fp32 -> ReLU -> bf16 with AVX-512.
float* mlp_tile_amx(const uint16_t* in, int64_t n, const std::vector<PackedLayer>& layers, float* f32,
                    uint16_t* b16_a, uint16_t* b16_b) {
  const int64_t rows = (n + 15) / 16 * 16;
  const uint16_t* src = in;
  uint16_t* dst = b16_a;
  for (size_t j = 0; j + 1 < layers.size(); ++j) {
    TORCH_CHECK(layers[j].out_pad == layers[j + 1].in_pad, "bf16 field kernel: layer sizes");
    dense_amx(src, rows, layers[j], f32);
    const int64_t w = layers[j].out_pad;
    for (int64_t i = 0; i < rows * w; i += 16) {
      const __m512 v = _mm512_max_ps(_mm512_loadu_ps(f32 + i), _mm512_setzero_ps());
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)_mm512_cvtneps_pbh(v));
    }
    src = dst;
    dst = (dst == b16_a) ? b16_b : b16_a;
  }
  dense_amx(src, rows, layers.back(), f32);
  return f32;
}
#else
bool amx_fits(const std::vector<PackedLayer>&) { return false; }
void load_tile_config() {}
float* mlp_tile_amx(const uint16_t*, int64_t, const std::vector<PackedLayer>&, float*, uint16_t*, uint16_t*) {
  TORCH_CHECK(false, "bf16 field kernel: built without AMX");
}
#endif

// An MLP over a tile in bf16: hidden layers ping-pong between two bf16 buffers; returns the fp32 buffer
// holding the last layer's (n, out_pad) output.
float* mlp_tile_bf16_from(Bf16Input in, int64_t n, const std::vector<PackedLayer>& layers, float* f32,
                          uint16_t* b16_a, uint16_t* b16_b) {
  Bf16Input src = in;
  uint16_t* dst = b16_a;
  for (size_t j = 0; j + 1 < layers.size(); ++j) {
    TORCH_CHECK(layers[j].out_pad == layers[j + 1].in_pad, "bf16 field kernel: layer sizes");
    dense_bf16(src, n, layers[j], nullptr, dst);
    src = Bf16Input{reinterpret_cast<const uint32_t*>(dst), 0};
    dst = (dst == b16_a) ? b16_b : b16_a;
  }
  dense_bf16(src, n, layers.back(), f32, nullptr);
  return f32;
}

float* mlp_tile_bf16(const uint16_t* in, int64_t n, const std::vector<PackedLayer>& layers, float* f32,
                     uint16_t* b16_a, uint16_t* b16_b) {
  return mlp_tile_bf16_from(Bf16Input{reinterpret_cast<const uint32_t*>(in), 0}, n, layers, f32, b16_a, b16_b);
}

// The 16 real SH basis functions of degree < 4 (ngp_ohem/field/sh.py), written to out[0..15].
inline void sh4(const float* d, float* out) {
  const float x = d[0], y = d[1], z = d[2];
  const float xx = x * x, yy = y * y, zz = z * z;
  out[0] = 0.28209479177387814f;
  out[1] = -0.48860251190291987f * y;
  out[2] = 0.48860251190291987f * z;
  out[3] = -0.48860251190291987f * x;
  out[4] = 1.0925484305920792f * x * y;
  out[5] = -1.0925484305920792f * y * z;
  out[6] = 0.94617469575755997f * zz - 0.31539156525251999f;
  out[7] = -1.0925484305920792f * x * z;
  out[8] = 0.54627421529603959f * (xx - yy);
  out[9] = 0.59004358992664352f * y * (-3.0f * xx + yy);
  out[10] = 2.8906114426405538f * x * y * z;
  out[11] = 0.45704579946446572f * y * (1.0f - 5.0f * zz);
  out[12] = 0.3731763325901154f * z * (5.0f * zz - 3.0f);
  out[13] = 0.45704579946446572f * x * (1.0f - 5.0f * zz);
  out[14] = 1.4453057213202769f * z * (xx - yy);
  out[15] = 0.59004358992664352f * x * (-xx + 3.0f * yy);
}

}  // namespace

// raw (N, 4) = [density_pre, rgb_pre] of the field at x01 (N, 3) in [0, 1]^3 and unit dirs (N, 3);
// with density_only, dirs is ignored and the result is density_pre (N,). With bf16, the MLPs run in bf16
// with fp32 accumulation (what bf16 autocast does to the module path); the encoding is fp32 either way,
// exactly the training encoder's, so with keep_encoding its (N, L * F) features are returned as well
// (mining's hard pass reuses them instead of encoding its samples again). Returns [raw, encoding or empty].
// sample_major keeps the bf16 MLPs on encode_tile's sample-major rows (as AMX does), so the tests can check that
// the level-major route gives the same bits.
std::vector<torch::Tensor> field_forward(torch::Tensor x01, torch::Tensor dirs, torch::Tensor table,
                                         torch::Tensor scales, torch::Tensor shifts, torch::Tensor sides,
                                         torch::Tensor dense, torch::Tensor offsets, bool zero_outside, int64_t mask,
                                         std::vector<torch::Tensor> density_wt, std::vector<torch::Tensor> color_wt,
                                         bool density_only, bool bf16, bool keep_encoding, bool use_amx,
                                         bool sample_major) {
  TORCH_CHECK(x01.dim() == 2 && x01.size(1) == 3 && x01.is_contiguous() && x01.scalar_type() == torch::kFloat32);
  TORCH_CHECK(table.is_contiguous() && table.scalar_type() == torch::kFloat32);
  TORCH_CHECK(table.size(0) < (int64_t{1} << 31), "hash-grid table: more rows than 32-bit indices reach");
  TORCH_CHECK(!bf16 || kHaveBf16Dot, "bf16 field kernel: this CPU has no AVX-512 BF16");
  const auto levels = read_levels(scales, shifts, sides, dense, offsets, zero_outside);
  const auto dens = read_layers(density_wt);
  const auto col = read_layers(color_wt);
  const int64_t n = x01.size(0), f = table.size(1);
  const int64_t enc_width = static_cast<int64_t>(levels.size()) * f;
  TORCH_CHECK(f <= 8 && enc_width <= kMaxWidth && !dens.empty() && dens.front().in == enc_width, "encoding size");
  const int64_t geo = dens.back().out - 1;
  if (!density_only) {
    TORCH_CHECK(dirs.sizes() == x01.sizes() && dirs.is_contiguous() && dirs.scalar_type() == torch::kFloat32);
    TORCH_CHECK(!col.empty() && col.front().in == 16 + geo && col.back().out == 3, "colour MLP sizes");
  }
  std::vector<PackedLayer> dens16, col16;
  if (bf16) {
    for (const auto& layer : dens) dens16.push_back(pack_bf16(layer));
    for (const auto& layer : col) col16.push_back(pack_bf16(layer));
  }
  auto out = density_only ? torch::empty({n}, x01.options()) : torch::empty({n, 4}, x01.options());
  auto enc_all = keep_encoding ? torch::empty({n, enc_width}, x01.options()) : torch::empty({0}, x01.options());
  const float* xp = x01.data_ptr<float>();
  const float* dp = density_only ? nullptr : dirs.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* ep = keep_encoding ? enc_all.data_ptr<float>() : nullptr;
  const uint32_t m = static_cast<uint32_t>(mask);
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  const int64_t cw = 16 + geo;
  const int64_t hw = bf16 ? dens16.back().out_pad : dens.back().out;  // row stride of the density MLP's output
  const int64_t cin_stride = bf16 ? col16.empty() ? 0 : col16.front().in_pad : cw;
  const int64_t rgb_stride = bf16 && !col16.empty() ? col16.back().out_pad : 3;
  const bool amx = bf16 && use_amx && amx_fits(dens16) && (density_only || amx_fits(col16));
  const auto mlp16 = amx ? mlp_tile_amx : mlp_tile_bf16;
  // bf16 on AVX-512 lanes: the encoding as level-major bf16 pairs that the first layer reads (encode_pairs_tile);
  // AMX tiles load sample-major rows, so they keep encode_tile + rows_to_bf16.
  const bool pair_major = bf16 && !amx && f == 2 && !sample_major;
  const int64_t pair_rows = pair_major ? dens16.front().in_pad / 2 : 0;  // levels, then zero pairs up to in_pad
  at::parallel_for(0, n_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    if (amx) load_tile_config();  // per thread
    std::vector<float> enc_buf(keep_encoding || pair_major ? 0 : kChunk * enc_width);
    std::vector<float> a(kTile * kMaxWidth), b(kTile * kMaxWidth), cin(kTile * kMaxWidth), coords(3 * kChunk);
    std::vector<uint16_t> x16(kTile * kMaxWidth), h16(kTile * kMaxWidth), g16(kTile * kMaxWidth);
    std::vector<uint32_t> pairs(pair_rows * kChunk, 0);  // rows past the levels stay zero, as padded weights
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      const int64_t c0 = chunk * kChunk, c_cnt = std::min(kChunk, n - c0);
      float* enc = keep_encoding ? ep + c0 * enc_width : enc_buf.data();
      if (pair_major) {
        encode_pairs_tile(xp + 3 * c0, c_cnt, levels, tp, m, keep_encoding ? enc : nullptr, pairs.data(), kChunk,
                          coords.data());
      } else {
        encode_tile(xp + 3 * c0, c_cnt, levels, tp, f, m, enc, coords.data());
      }
      for (int64_t t0 = 0; t0 < c_cnt; t0 += kTile) {
        const int64_t start = c0 + t0, cnt = std::min(kTile, c_cnt - t0);
        const float* h;
        if (pair_major) {
          h = mlp_tile_bf16_from(Bf16Input{pairs.data() + t0, kChunk}, cnt, dens16, a.data(), h16.data(), g16.data());
        } else if (bf16) {
          rows_to_bf16(enc + t0 * enc_width, cnt, enc_width, enc_width, x16.data(), dens16.front().in_pad);
          h = mlp16(x16.data(), cnt, dens16, a.data(), h16.data(), g16.data());
        } else {
          h = mlp_tile(enc + t0 * enc_width, cnt, dens, a.data(), b.data());
        }
        if (density_only) {
          for (int64_t i = 0; i < cnt; ++i) op[start + i] = h[i * hw];
          continue;
        }
        for (int64_t i = 0; i < cnt; ++i) {
          float* row = cin.data() + i * cw;
          sh4(dp + 3 * (start + i), row);
          for (int64_t k = 0; k < geo; ++k) row[16 + k] = h[i * hw + 1 + k];
          op[4 * (start + i)] = h[i * hw];
        }
        // h lives in a or b; the colour MLP may overwrite both, so its density was copied out first.
        const float* rgb;
        if (bf16) {
          rows_to_bf16(cin.data(), cnt, cw, cw, x16.data(), cin_stride);
          rgb = mlp16(x16.data(), cnt, col16, b.data(), h16.data(), g16.data());
        } else {
          rgb = mlp_tile(cin.data(), cnt, col, a.data(), b.data());
        }
        for (int64_t i = 0; i < cnt; ++i) {
          for (int k = 0; k < 3; ++k) op[4 * (start + i) + 1 + k] = rgb[i * rgb_stride + k];
        }
      }
    }
  });
  return {out, enc_all};
}

bool has_bf16_dot() { return kHaveBf16Dot; }

bool has_amx() {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  return amx_permitted();
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("field_forward", &field_forward, "fused no-graph Instant-NGP field evaluation (CPU)", py::arg("x01"),
        py::arg("dirs"), py::arg("table"), py::arg("scales"), py::arg("shifts"), py::arg("sides"), py::arg("dense"),
        py::arg("offsets"), py::arg("zero_outside"), py::arg("mask"), py::arg("density_wt"), py::arg("color_wt"),
        py::arg("density_only"), py::arg("bf16"), py::arg("keep_encoding"), py::arg("use_amx"),
        py::arg("sample_major") = false);
  m.def("has_bf16_dot", &has_bf16_dot, "whether the bf16 MLPs (AVX-512 BF16) were built");
  m.def("has_amx", &has_amx, "whether the bf16 MLPs can run on AMX tiles here (built, and permitted by the OS)");
}
