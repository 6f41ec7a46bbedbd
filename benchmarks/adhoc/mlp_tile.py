"""One fused-field MLP layer alone (64 -> 64, ReLU, 2^16 samples in tiles of 64, one thread): the portable
``dense_fixed`` against the AVX2 ``dense_avx2``, both copied out of csrc/field_infer_cpu.cpp into a small C++
program built with the kernel's own flags, alternated for 3 rounds. AVX2 CPUs without AVX-512 only.

Run alone: ``<repo>/.venv/bin/python <repo>/benchmarks/adhoc/mlp_tile.py`` (needs g++).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ngp_ohem.field.native import EXACT_FLAGS

SOURCE = Path(__file__).resolve().parents[2] / "ngp_ohem" / "field" / "csrc" / "field_infer_cpu.cpp"
text = SOURCE.read_text()
kernels = text[text.index("// out (n, NO) = in (n, ni) @ wt (ni, NO)") : text.index("void dense_any(const float*")]
HARNESS = r"""
#include <immintrin.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>
KERNELS
#endif
int main() {
  const int64_t n = 1 << 16, tile = 64;
  std::vector<float> in(n * 64), w(64 * 64), a(n * 64), b(n * 64);
  std::mt19937 g(0);
  std::normal_distribution<float> normal;
  for (auto& v : in) v = normal(g);
  for (auto& v : w) v = 0.1f * normal(g);
  auto time = [&](auto kernel, std::vector<float>& out) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t t = 0; t < n; t += tile) kernel(in.data() + t * 64, tile, 64, w.data(), out.data() + t * 64, true);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int round = 0; round < 3; ++round) {
    const double fixed = time(dense_fixed<64>, a), avx2 = time(dense_avx2<64>, b);
    std::printf("round %d: dense_fixed %.2f ms, dense_avx2 %.2f ms\n", round, fixed, avx2);
  }
  double diff = 0;
  for (int64_t i = 0; i < n * 64; ++i) diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
  std::printf("largest difference %.3g\n", diff);
}
"""
with tempfile.TemporaryDirectory() as tmp:
    src, exe = Path(tmp) / "mlp_tile.cpp", Path(tmp) / "mlp_tile"
    src.write_text(HARNESS.replace("KERNELS", kernels))
    flags = [f for f in EXACT_FLAGS if f != "-fopenmp"]
    subprocess.run(["g++", *flags, "-fno-math-errno", "-w", str(src), "-o", str(exe)], check=True)
    print(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout, end="")
