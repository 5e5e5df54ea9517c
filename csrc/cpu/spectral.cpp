// LaMa's SpectralTransform and FourierUnit as single CPU ops.
//
// lama_fast::spectral_transform(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)
//   y = relu(conv1x1(x, w1) + b1)
//   z = irfft2(relu(conv1x1(rfft2(y) as 2*Ch interleaved (re, im) channels, w_freq) + b_freq))
//   out = conv1x1(y + z, w2) + bias + other, then relu if asked; channels_last.
// lama_fast::fourier_unit(x, w_freq, b_freq, fft_norm) = z computed from x itself.
//
// Everything runs on channels-last data, where one position's channels are
// contiguous. The FFTs are written here and vectorise across channels: one
// "element" of a transform is a whole vector of channels, so every butterfly
// is plain vertical arithmetic on contiguous memory with scalar twiddles.
//
//   1. In chunks of rows: y = relu(x W1^T + b1) (oneDNN), then the real FFT of
//      each row of y along W while the chunk is still in cache. The spectrum
//      is stored column-major, spec[n][kw][h][re(Ch) | im(Ch)], so that one
//      frequency column (all h of one kw) is a contiguous (H, 2*Ch) matrix.
//   2. In groups of columns: complex FFT along H in place, the frequency 1x1
//      conv as one GEMM on the group (oneDNN, bias and ReLU fused; its weight
//      rows and columns permuted to the split (re | im) channel order), then
//      the inverse FFT along H back into the spectrum.
//   3. In chunks of rows: inverse real FFT along W adding y (t = y + z in
//      place), then out = t W2^T + bias (+ other) (relu) straight into the
//      channels-last output.
//
// The FFTs are unnormalised Stockham transforms (radix 8, 4, 2, 3 and a
// direct DFT step for other primes up to kMaxRadix; sizes with a larger
// prime factor use ATen's FFT); the scale of fft_norm is applied where the
// rows are written (forward) and read (inverse). float64 uses the same FFT in
// double and ATen GEMMs; bfloat16 keeps x, y, t and both GEMMs' operands in
// bfloat16 (float32 accumulation) and runs the FFTs in float32. The work
// buffers (y, the spectrum, per-thread scratch) are kept between calls.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/List.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "spectral_args.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#if defined(__GNUC__)
#define LF_INLINE inline __attribute__((always_inline))
#else
#define LF_INLINE inline
#endif

// The transform loops are compiled for AVX-512, AVX2 and baseline x86-64 and
// picked at load time; everything they call is force-inlined into them.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LF_MULTIVERSION __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define LF_MULTIVERSION
#endif

#if defined(__GNUC__) && !defined(__clang__)
#define LF_IVDEP _Pragma("GCC ivdep")
#else
#define LF_IVDEP
#endif

namespace lama_fast {
namespace {

// Prime factors above this go to ATen's FFT instead of a direct radix-p step.
constexpr int64_t kMaxRadix = 64;
// Rows of the GEMM in one chunk of step 1 / one column group of step 2.
constexpr int64_t kChunkPositions = 4096;
constexpr int64_t kGroupPositions = 2048;
// A column transform's working set (input + two scratch buffers) is kept
// under this many bytes by splitting the channels into blocks.
constexpr int64_t kColumnBytes = 640 * 1024;
// Work buffers larger than this are not kept between calls.
constexpr int64_t kMaxCachedBytes = int64_t(512) << 20;

// --------------------------------------------------------------------------
// FFT plans
// --------------------------------------------------------------------------

std::vector<int64_t> factorize(int64_t n) {
  std::vector<int64_t> factors;
  int64_t twos = 0;
  while (n % 2 == 0) {
    ++twos;
    n /= 2;
  }
  // Powers of two as radix 8 (fewest passes over the data), then one 4 or 2.
  for (; twos >= 3; twos -= 3) factors.push_back(8);
  if (twos > 0) factors.push_back(int64_t(1) << twos);
  for (int64_t p = 3; p * p <= n; p += 2) {
    while (n % p == 0) {
      factors.push_back(p);
      n /= p;
    }
  }
  if (n > 1) factors.push_back(n);
  return factors;
}

bool fft_friendly(int64_t n) {
  for (int64_t f : factorize(n)) {
    if (f > kMaxRadix) return false;
  }
  return true;
}

struct StageInfo {
  int64_t radix;  // r
  int64_t m;      // current length / r
  int64_t s;      // product of the radices of the earlier stages
  int64_t tw;     // offset of this stage's twiddles, m * (r - 1) of them
  int64_t dft;    // offset of the r-point DFT matrix (generic radices only)
};

// Stockham autosort decimation in frequency. Stage with current length
// len = r * m and stride s reads x[q + s * (p + j * m)] and writes
// y[q + s * (r * p + k)] = (sum_j x_j w_r^(j k)) * w_len^(p k).
template <typename T>
struct ComplexPlan {
  int64_t n = 1;
  std::vector<StageInfo> stages;
  std::vector<T> twr, twi;    // forward twiddles exp(-2 pi i e / len)
  std::vector<T> dftr, dfti;  // forward r-point DFT matrices
};

// Real transform of length n along W: a complex transform of length n / 2 on
// (even, odd) sample pairs when n is even, of length n otherwise.
template <typename T>
struct RealPlan {
  int64_t n = 1;
  bool even = false;
  std::shared_ptr<const ComplexPlan<T>> complex;
  std::vector<T> wr, wi;  // exp(-2 pi i k / n), k = 0..n/2 (even n only)
};

template <typename T>
std::shared_ptr<const ComplexPlan<T>> build_complex_plan(int64_t n) {
  auto plan = std::make_shared<ComplexPlan<T>>();
  plan->n = n;
  const double two_pi = 2.0 * M_PI;
  int64_t len = n;
  int64_t s = 1;
  for (int64_t r : factorize(n)) {
    StageInfo st{r, len / r, s, static_cast<int64_t>(plan->twr.size()), -1};
    for (int64_t p = 0; p < st.m; ++p) {
      for (int64_t k = 1; k < r; ++k) {
        const double angle = -two_pi * static_cast<double>((p * k) % len) / static_cast<double>(len);
        plan->twr.push_back(static_cast<T>(std::cos(angle)));
        plan->twi.push_back(static_cast<T>(std::sin(angle)));
      }
    }
    if (r != 2 && r != 3 && r != 4 && r != 8) {
      st.dft = static_cast<int64_t>(plan->dftr.size());
      for (int64_t e = 0; e < r; ++e) {
        const double angle = -two_pi * static_cast<double>(e) / static_cast<double>(r);
        plan->dftr.push_back(static_cast<T>(std::cos(angle)));
        plan->dfti.push_back(static_cast<T>(std::sin(angle)));
      }
    }
    plan->stages.push_back(st);
    len /= r;
    s *= r;
  }
  return plan;
}

template <typename T>
std::shared_ptr<const ComplexPlan<T>> complex_plan(int64_t n) {
  static std::mutex mutex;
  static auto* cache = new std::map<int64_t, std::shared_ptr<const ComplexPlan<T>>>();
  std::lock_guard<std::mutex> guard(mutex);
  auto it = cache->find(n);
  if (it != cache->end()) return it->second;
  auto plan = build_complex_plan<T>(n);
  (*cache)[n] = plan;
  return plan;
}

template <typename T>
std::shared_ptr<const RealPlan<T>> real_plan(int64_t n) {
  static std::mutex mutex;
  static auto* cache = new std::map<int64_t, std::shared_ptr<const RealPlan<T>>>();
  {
    std::lock_guard<std::mutex> guard(mutex);
    auto it = cache->find(n);
    if (it != cache->end()) return it->second;
  }
  auto plan = std::make_shared<RealPlan<T>>();
  plan->n = n;
  plan->even = n % 2 == 0;
  plan->complex = complex_plan<T>(plan->even ? n / 2 : n);
  if (plan->even) {
    for (int64_t k = 0; k <= n / 2; ++k) {
      const double angle = -2.0 * M_PI * static_cast<double>(k) / static_cast<double>(n);
      plan->wr.push_back(static_cast<T>(std::cos(angle)));
      plan->wi.push_back(static_cast<T>(std::sin(angle)));
    }
  }
  std::lock_guard<std::mutex> guard(mutex);
  (*cache)[n] = plan;
  return plan;
}

// --------------------------------------------------------------------------
// Vector FFT kernels. A sequence of complex vectors: element e has its V real
// parts at base + e * es and its V imaginary parts `im` further on.
// --------------------------------------------------------------------------

template <typename T, bool Inv>
LF_INLINE void stage_radix2(const T* in, int64_t ies, int64_t iim, T* out, int64_t oes, int64_t oim,
                            int64_t V, int64_t m, int64_t s, const T* twr, const T* twi) {
  for (int64_t p = 0; p < m; ++p) {
    const T wr = twr[p];
    const T wi = Inv ? -twi[p] : twi[p];
    for (int64_t q = 0; q < s; ++q) {
      const T* a0 = in + (q + s * p) * ies;
      const T* a1 = in + (q + s * (p + m)) * ies;
      T* y0 = out + (q + s * 2 * p) * oes;
      T* y1 = y0 + s * oes;
      LF_IVDEP
      for (int64_t c = 0; c < V; ++c) {
        const T r0 = a0[c], i0 = a0[c + iim], r1 = a1[c], i1 = a1[c + iim];
        const T dr = r0 - r1, di = i0 - i1;
        y0[c] = r0 + r1;
        y0[c + oim] = i0 + i1;
        y1[c] = dr * wr - di * wi;
        y1[c + oim] = dr * wi + di * wr;
      }
    }
  }
}

template <typename T, bool Inv>
LF_INLINE void stage_radix3(const T* in, int64_t ies, int64_t iim, T* out, int64_t oes, int64_t oim,
                            int64_t V, int64_t m, int64_t s, const T* twr, const T* twi) {
  // sin(2 pi / 3), with the sign of the transform's direction.
  const T h = static_cast<T>(Inv ? -0.86602540378443864676 : 0.86602540378443864676);
  const T half = static_cast<T>(0.5);
  for (int64_t p = 0; p < m; ++p) {
    const T w1r = twr[2 * p], w2r = twr[2 * p + 1];
    const T w1i = Inv ? -twi[2 * p] : twi[2 * p];
    const T w2i = Inv ? -twi[2 * p + 1] : twi[2 * p + 1];
    for (int64_t q = 0; q < s; ++q) {
      const T* a0 = in + (q + s * p) * ies;
      const T* a1 = in + (q + s * (p + m)) * ies;
      const T* a2 = in + (q + s * (p + 2 * m)) * ies;
      T* y0 = out + (q + s * 3 * p) * oes;
      T* y1 = y0 + s * oes;
      T* y2 = y1 + s * oes;
      LF_IVDEP
      for (int64_t c = 0; c < V; ++c) {
        const T r0 = a0[c], i0 = a0[c + iim];
        const T r1 = a1[c], i1 = a1[c + iim];
        const T r2 = a2[c], i2 = a2[c + iim];
        const T sr = r1 + r2, si = i1 + i2;
        const T dr = r1 - r2, di = i1 - i2;
        const T mr = r0 - half * sr, mi = i0 - half * si;
        // X1 = m - i h d, X2 = m + i h d
        const T x1r = mr + h * di, x1i = mi - h * dr;
        const T x2r = mr - h * di, x2i = mi + h * dr;
        y0[c] = r0 + sr;
        y0[c + oim] = i0 + si;
        y1[c] = x1r * w1r - x1i * w1i;
        y1[c + oim] = x1r * w1i + x1i * w1r;
        y2[c] = x2r * w2r - x2i * w2i;
        y2[c + oim] = x2r * w2i + x2i * w2r;
      }
    }
  }
}

template <typename T, bool Inv>
LF_INLINE void stage_radix4(const T* in, int64_t ies, int64_t iim, T* out, int64_t oes, int64_t oim,
                            int64_t V, int64_t m, int64_t s, const T* twr, const T* twi) {
  for (int64_t p = 0; p < m; ++p) {
    const T w1r = twr[3 * p], w2r = twr[3 * p + 1], w3r = twr[3 * p + 2];
    const T w1i = Inv ? -twi[3 * p] : twi[3 * p];
    const T w2i = Inv ? -twi[3 * p + 1] : twi[3 * p + 1];
    const T w3i = Inv ? -twi[3 * p + 2] : twi[3 * p + 2];
    for (int64_t q = 0; q < s; ++q) {
      const T* a0 = in + (q + s * p) * ies;
      const T* a1 = in + (q + s * (p + m)) * ies;
      const T* a2 = in + (q + s * (p + 2 * m)) * ies;
      const T* a3 = in + (q + s * (p + 3 * m)) * ies;
      T* y0 = out + (q + s * 4 * p) * oes;
      T* y1 = y0 + s * oes;
      T* y2 = y1 + s * oes;
      T* y3 = y2 + s * oes;
      LF_IVDEP
      for (int64_t c = 0; c < V; ++c) {
        const T r0 = a0[c], i0 = a0[c + iim];
        const T r1 = a1[c], i1 = a1[c + iim];
        const T r2 = a2[c], i2 = a2[c + iim];
        const T r3 = a3[c], i3 = a3[c + iim];
        const T t0r = r0 + r2, t0i = i0 + i2;
        const T t1r = r0 - r2, t1i = i0 - i2;
        const T t2r = r1 + r3, t2i = i1 + i3;
        const T dr = r1 - r3, di = i1 - i3;
        // (r1 - r3) times -i (forward) or +i (inverse)
        const T t3r = Inv ? -di : di;
        const T t3i = Inv ? dr : -dr;
        const T u1r = t1r + t3r, u1i = t1i + t3i;
        const T u2r = t0r - t2r, u2i = t0i - t2i;
        const T u3r = t1r - t3r, u3i = t1i - t3i;
        y0[c] = t0r + t2r;
        y0[c + oim] = t0i + t2i;
        y1[c] = u1r * w1r - u1i * w1i;
        y1[c + oim] = u1r * w1i + u1i * w1r;
        y2[c] = u2r * w2r - u2i * w2i;
        y2[c + oim] = u2r * w2i + u2i * w2r;
        y3[c] = u3r * w3r - u3i * w3i;
        y3[c + oim] = u3r * w3i + u3i * w3r;
      }
    }
  }
}

template <typename T, bool Inv>
LF_INLINE void stage_radix8(const T* in, int64_t ies, int64_t iim, T* out, int64_t oes, int64_t oim,
                            int64_t V, int64_t m, int64_t s, const T* twr, const T* twi) {
  const T h = static_cast<T>(0.70710678118654752440);  // 1 / sqrt(2)
  for (int64_t p = 0; p < m; ++p) {
    T wr[8], wi[8];
    for (int k = 1; k < 8; ++k) {
      wr[k] = twr[7 * p + k - 1];
      wi[k] = Inv ? -twi[7 * p + k - 1] : twi[7 * p + k - 1];
    }
    for (int64_t q = 0; q < s; ++q) {
      const T* a[8];
      T* y[8];
      for (int j = 0; j < 8; ++j) {
        a[j] = in + (q + s * (p + j * m)) * ies;
        y[j] = out + (q + s * (8 * p + j)) * oes;
      }
      LF_IVDEP
      for (int64_t c = 0; c < V; ++c) {
        // Sums and differences of inputs j and j + 4.
        const T b0r = a[0][c] + a[4][c], b0i = a[0][c + iim] + a[4][c + iim];
        const T b1r = a[1][c] + a[5][c], b1i = a[1][c + iim] + a[5][c + iim];
        const T b2r = a[2][c] + a[6][c], b2i = a[2][c + iim] + a[6][c + iim];
        const T b3r = a[3][c] + a[7][c], b3i = a[3][c + iim] + a[7][c + iim];
        const T d0r = a[0][c] - a[4][c], d0i = a[0][c + iim] - a[4][c + iim];
        T d1r = a[1][c] - a[5][c], d1i = a[1][c + iim] - a[5][c + iim];
        T d2r = a[2][c] - a[6][c], d2i = a[2][c + iim] - a[6][c + iim];
        T d3r = a[3][c] - a[7][c], d3i = a[3][c + iim] - a[7][c + iim];
        // d_j times w8^j: forward w8 = (1 - i) / sqrt 2, inverse its conjugate.
        {
          const T r1 = Inv ? h * (d1r - d1i) : h * (d1r + d1i);
          const T i1 = Inv ? h * (d1i + d1r) : h * (d1i - d1r);
          const T r2 = Inv ? -d2i : d2i;
          const T i2 = Inv ? d2r : -d2r;
          const T r3 = Inv ? -h * (d3r + d3i) : h * (d3i - d3r);
          const T i3 = Inv ? h * (d3r - d3i) : -h * (d3r + d3i);
          d1r = r1, d1i = i1, d2r = r2, d2i = i2, d3r = r3, d3i = i3;
        }
        // Two 4-point DFTs: of b (even outputs) and of the rotated d (odd outputs).
        const T e0r = b0r + b2r, e0i = b0i + b2i, e1r = b0r - b2r, e1i = b0i - b2i;
        const T e2r = b1r + b3r, e2i = b1i + b3i;
        const T e3r = Inv ? -(b1i - b3i) : (b1i - b3i), e3i = Inv ? (b1r - b3r) : -(b1r - b3r);
        const T o0r = d0r + d2r, o0i = d0i + d2i, o1r = d0r - d2r, o1i = d0i - d2i;
        const T o2r = d1r + d3r, o2i = d1i + d3i;
        const T o3r = Inv ? -(d1i - d3i) : (d1i - d3i), o3i = Inv ? (d1r - d3r) : -(d1r - d3r);
        const T x0r = e0r + e2r, x0i = e0i + e2i;
        const T x2r = e1r + e3r, x2i = e1i + e3i;
        const T x4r = e0r - e2r, x4i = e0i - e2i;
        const T x6r = e1r - e3r, x6i = e1i - e3i;
        const T x1r = o0r + o2r, x1i = o0i + o2i;
        const T x3r = o1r + o3r, x3i = o1i + o3i;
        const T x5r = o0r - o2r, x5i = o0i - o2i;
        const T x7r = o1r - o3r, x7i = o1i - o3i;
        y[0][c] = x0r;
        y[0][c + oim] = x0i;
        y[1][c] = x1r * wr[1] - x1i * wi[1];
        y[1][c + oim] = x1r * wi[1] + x1i * wr[1];
        y[2][c] = x2r * wr[2] - x2i * wi[2];
        y[2][c + oim] = x2r * wi[2] + x2i * wr[2];
        y[3][c] = x3r * wr[3] - x3i * wi[3];
        y[3][c + oim] = x3r * wi[3] + x3i * wr[3];
        y[4][c] = x4r * wr[4] - x4i * wi[4];
        y[4][c + oim] = x4r * wi[4] + x4i * wr[4];
        y[5][c] = x5r * wr[5] - x5i * wi[5];
        y[5][c + oim] = x5r * wi[5] + x5i * wr[5];
        y[6][c] = x6r * wr[6] - x6i * wi[6];
        y[6][c + oim] = x6r * wi[6] + x6i * wr[6];
        y[7][c] = x7r * wr[7] - x7i * wi[7];
        y[7][c + oim] = x7r * wi[7] + x7i * wr[7];
      }
    }
  }
}

// Any radix r as a direct r-point DFT (r * r complex multiply-adds per
// butterfly). `out` must not overlap `in`.
template <typename T, bool Inv>
LF_INLINE void stage_generic(const T* in, int64_t ies, int64_t iim, T* out, int64_t oes, int64_t oim,
                             int64_t V, int64_t r, int64_t m, int64_t s, const T* twr, const T* twi,
                             const T* dftr, const T* dfti) {
  for (int64_t p = 0; p < m; ++p) {
    for (int64_t q = 0; q < s; ++q) {
      const T* a0 = in + (q + s * p) * ies;
      for (int64_t k = 0; k < r; ++k) {
        T* yk = out + (q + s * (r * p + k)) * oes;
        LF_IVDEP
        for (int64_t c = 0; c < V; ++c) {
          yk[c] = a0[c];
          yk[c + oim] = a0[c + iim];
        }
        for (int64_t j = 1; j < r; ++j) {
          const int64_t e = (j * k) % r;
          const T wr = dftr[e];
          const T wi = Inv ? -dfti[e] : dfti[e];
          const T* aj = in + (q + s * (p + j * m)) * ies;
          LF_IVDEP
          for (int64_t c = 0; c < V; ++c) {
            const T ar = aj[c], ai = aj[c + iim];
            yk[c] += ar * wr - ai * wi;
            yk[c + oim] += ar * wi + ai * wr;
          }
        }
        if (k > 0) {
          const T wr = twr[p * (r - 1) + k - 1];
          const T wi = Inv ? -twi[p * (r - 1) + k - 1] : twi[p * (r - 1) + k - 1];
          LF_IVDEP
          for (int64_t c = 0; c < V; ++c) {
            const T xr = yk[c], xi = yk[c + oim];
            yk[c] = xr * wr - xi * wi;
            yk[c + oim] = xr * wi + xi * wr;
          }
        }
      }
    }
  }
}

template <typename T>
LF_INLINE void copy_elements(const T* in, int64_t ies, int64_t iim, T* out, int64_t oes, int64_t oim,
                             int64_t count, int64_t V) {
  for (int64_t e = 0; e < count; ++e) {
    std::memcpy(out + e * oes, in + e * ies, sizeof(T) * V);
    std::memcpy(out + e * oes + oim, in + e * ies + iim, sizeof(T) * V);
  }
}

// Transforms plan.n complex vectors of width V. With out == nullptr the result
// is left in s1 or s2 (element stride 2V, imaginary parts V on) and returned.
// `in` may be s1 or s2 (it is consumed); out may equal in.
template <typename T, bool Inv>
LF_INLINE const T* fft_exec(const ComplexPlan<T>& plan, const T* in, int64_t ies, int64_t iim, T* out,
                            int64_t oes, int64_t oim, int64_t V, T* s1, T* s2) {
  const int64_t ses = 2 * V;
  const int64_t count = static_cast<int64_t>(plan.stages.size());
  if (count == 0) {
    T* dst = out ? out : (in == s1 ? s2 : s1);
    if (dst != in) copy_elements(in, ies, iim, dst, out ? oes : ses, out ? oim : V, 1, V);
    return dst;
  }
  const T* src = in;
  int64_t src_es = ies, src_im = iim;
  if (count == 1 && out != nullptr && out == in) {
    copy_elements(in, ies, iim, s1, ses, V, plan.n, V);
    src = s1;
    src_es = ses;
    src_im = V;
  }
  for (int64_t i = 0; i < count; ++i) {
    const StageInfo& st = plan.stages[i];
    T* dst;
    int64_t dst_es, dst_im;
    if (i == count - 1 && out != nullptr) {
      dst = out;
      dst_es = oes;
      dst_im = oim;
    } else {
      dst = (src == s1) ? s2 : s1;
      dst_es = ses;
      dst_im = V;
    }
    const T* twr = plan.twr.data() + st.tw;
    const T* twi = plan.twi.data() + st.tw;
    switch (st.radix) {
      case 2:
        stage_radix2<T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi);
        break;
      case 3:
        stage_radix3<T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi);
        break;
      case 4:
        stage_radix4<T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi);
        break;
      case 8:
        stage_radix8<T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi);
        break;
      default:
        stage_generic<T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.radix, st.m, st.s, twr, twi,
                              plan.dftr.data() + st.dft, plan.dfti.data() + st.dft);
        break;
    }
    src = dst;
    src_es = dst_es;
    src_im = dst_im;
  }
  return src;
}

template <typename T>
LF_INLINE T load(T v) {
  return v;
}
LF_INLINE float load(c10::BFloat16 v) {
  return static_cast<float>(v);
}
template <typename S, typename T>
LF_INLINE S store(T v) {
  return static_cast<S>(v);
}

// --------------------------------------------------------------------------
// The three transform passes over rows and columns.
// --------------------------------------------------------------------------

// spec layout: element (n, kw, h) at spec + ((n * Wf + kw) * H + h) * 2C,
// real parts first, then the C imaginary parts.
template <typename T, typename S>
struct RowJob {
  const S* src = nullptr;  // forward: the rows of y (or x); inverse: y to add, or null
  S* dst = nullptr;        // inverse: where t = y + z (or z) goes
  T* spec = nullptr;
  int64_t C = 0, H = 0, W = 0, Wf = 0;
  T scale = 1;
  const RealPlan<T>* plan = nullptr;
};

template <typename T, typename S>
LF_INLINE void rows_forward_impl(const RowJob<T, S>& job, int64_t r0, int64_t r1, T* sa, T* sb) {
  const int64_t C = job.C, C2 = 2 * C, H = job.H, W = job.W, Wf = job.Wf;
  const int64_t kstride = H * C2;
  const ComplexPlan<T>& cplan = *job.plan->complex;
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / H, h = row % H;
    const S* y = job.src + row * W * C;
    T* base = job.spec + (n * Wf * H + h) * C2;
    if (job.plan->even) {
      const int64_t n2 = W / 2;
      const T* x;
      T* s1 = sa;
      T* s2 = sb;
      if constexpr (std::is_same_v<T, S>) {
        x = y;
      } else {
        LF_IVDEP
        for (int64_t i = 0; i < W * C; ++i) sa[i] = load(y[i]);
        x = sa;
        s1 = sb;
        s2 = sa;
      }
      // Pairs (x[2j], x[2j+1]) are the complex vectors z[j] = x[2j] + i x[2j+1].
      const T* Z = fft_exec<T, false>(cplan, x, C2, C, nullptr, 0, 0, C, s1, s2);
      const T hs = job.scale * static_cast<T>(0.5);
      for (int64_t k = 0; k <= n2; ++k) {
        const T* zk = Z + (k % n2) * C2;
        const T* zc = Z + ((n2 - k) % n2) * C2;
        const T wr = job.plan->wr[k], wi = job.plan->wi[k];
        T* d = base + k * kstride;
        LF_IVDEP
        for (int64_t c = 0; c < C; ++c) {
          const T ar = zk[c], ai = zk[c + C];
          const T br = zc[c], bi = -zc[c + C];
          const T er = ar + br, ei = ai + bi;  // 2 E
          const T orr = ai - bi, oi = br - ar;  // 2 O
          d[c] = hs * (er + orr * wr - oi * wi);
          d[c + C] = hs * (ei + orr * wi + oi * wr);
        }
      }
    } else {
      for (int64_t e = 0; e < W; ++e) {
        T* d = sa + e * C2;
        const S* ye = y + e * C;
        LF_IVDEP
        for (int64_t c = 0; c < C; ++c) {
          d[c] = load(ye[c]);
          d[c + C] = T(0);
        }
      }
      const T* X = fft_exec<T, false>(cplan, sa, C2, C, nullptr, 0, 0, C, sb, sa);
      const T scale = job.scale;
      for (int64_t k = 0; k < Wf; ++k) {
        const T* xk = X + k * C2;
        T* d = base + k * kstride;
        LF_IVDEP
        for (int64_t c = 0; c < C2; ++c) d[c] = scale * xk[c];
      }
    }
  }
}

template <typename T, typename S>
LF_INLINE void rows_inverse_impl(const RowJob<T, S>& job, int64_t r0, int64_t r1, T* sa, T* sb) {
  const int64_t C = job.C, C2 = 2 * C, H = job.H, W = job.W, Wf = job.Wf;
  const int64_t kstride = H * C2;
  const ComplexPlan<T>& cplan = *job.plan->complex;
  const T scale = job.scale;
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / H, h = row % H;
    const T* base = job.spec + (n * Wf * H + h) * C2;
    const S* y = job.src ? job.src + row * W * C : nullptr;
    S* out = job.dst + row * W * C;
    if (job.plan->even) {
      const int64_t n2 = W / 2;
      // Z[k] = E[k] + i O[k], E = X[k] + X[k + n2], O = (X[k] - X[k + n2]) w^-k,
      // X[k + n2] = conj(X[n2 - k]); the imaginary parts of X[0] and X[n2] are ignored.
      {
        const T* x0 = base;
        const T* xn = base + n2 * kstride;
        LF_IVDEP
        for (int64_t c = 0; c < C; ++c) {
          const T a = x0[c], b = xn[c];
          sa[c] = scale * (a + b);
          sa[c + C] = scale * (a - b);
        }
      }
      for (int64_t k = 1; k < n2; ++k) {
        const T* xk = base + k * kstride;
        const T* xm = base + (n2 - k) * kstride;
        const T wr = job.plan->wr[k], wi = -job.plan->wi[k];
        T* d = sa + k * C2;
        LF_IVDEP
        for (int64_t c = 0; c < C; ++c) {
          const T ar = xk[c], ai = xk[c + C];
          const T br = xm[c], bi = -xm[c + C];
          const T er = ar + br, ei = ai + bi;
          const T dr = ar - br, di = ai - bi;
          const T orr = dr * wr - di * wi, oi = dr * wi + di * wr;
          d[c] = scale * (er - oi);
          d[c + C] = scale * (ei + orr);
        }
      }
      // z[j] = x[2j] + i x[2j+1]: the result is the row itself, W * C values.
      const T* z = fft_exec<T, true>(cplan, sa, C2, C, nullptr, 0, 0, C, sb, sa);
      if (y) {
        LF_IVDEP
        for (int64_t i = 0; i < W * C; ++i) out[i] = store<S>(load(y[i]) + z[i]);
      } else {
        LF_IVDEP
        for (int64_t i = 0; i < W * C; ++i) out[i] = store<S>(z[i]);
      }
    } else {
      // The full Hermitian spectrum of length W.
      for (int64_t k = 0; k < W; ++k) {
        T* d = sa + k * C2;
        if (k == 0) {
          LF_IVDEP
          for (int64_t c = 0; c < C; ++c) {
            d[c] = scale * base[c];
            d[c + C] = T(0);
          }
        } else if (k < Wf) {
          const T* xk = base + k * kstride;
          LF_IVDEP
          for (int64_t c = 0; c < C2; ++c) d[c] = scale * xk[c];
        } else {
          const T* xk = base + (W - k) * kstride;
          LF_IVDEP
          for (int64_t c = 0; c < C; ++c) {
            d[c] = scale * xk[c];
            d[c + C] = -scale * xk[c + C];
          }
        }
      }
      const T* z = fft_exec<T, true>(cplan, sa, C2, C, nullptr, 0, 0, C, sb, sa);
      for (int64_t e = 0; e < W; ++e) {
        const T* ze = z + e * C2;
        S* oe = out + e * C;
        if (y) {
          const S* ye = y + e * C;
          LF_IVDEP
          for (int64_t c = 0; c < C; ++c) oe[c] = store<S>(load(ye[c]) + ze[c]);
        } else {
          LF_IVDEP
          for (int64_t c = 0; c < C; ++c) oe[c] = store<S>(ze[c]);
        }
      }
    }
  }
}

// Columns g0 .. of spec, each (H, 2C), split into channel blocks of Vb.
// Work item i is column g0 + i / blocks, channel block i % blocks.
template <typename T, typename S>
struct ColumnJob {
  T* spec = nullptr;
  S* group = nullptr;  // (columns of the group, H, 2C): GEMM input (bf16 forward) or output (inverse)
  int64_t C = 0, H = 0, Vb = 0, blocks = 0, g0 = 0;
  const ComplexPlan<T>* plan = nullptr;
};

template <typename T, typename S>
LF_INLINE void columns_forward_impl(const ColumnJob<T, S>& job, int64_t i0, int64_t i1, T* sa, T* sb) {
  const int64_t C = job.C, C2 = 2 * C, H = job.H;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t local = i / job.blocks;
    const int64_t c0 = (i % job.blocks) * job.Vb;
    const int64_t V = std::min(job.Vb, C - c0);
    T* col = job.spec + (job.g0 + local) * H * C2 + c0;
    if constexpr (std::is_same_v<T, S>) {
      fft_exec<T, false>(*job.plan, col, C2, C, col, C2, C, V, sa, sb);
    } else {
      const T* r = fft_exec<T, false>(*job.plan, col, C2, C, nullptr, 0, 0, V, sa, sb);
      S* d = job.group + local * H * C2 + c0;
      for (int64_t e = 0; e < H; ++e) {
        const T* re = r + e * 2 * V;
        S* de = d + e * C2;
        LF_IVDEP
        for (int64_t c = 0; c < V; ++c) {
          de[c] = store<S>(re[c]);
          de[c + C] = store<S>(re[c + V]);
        }
      }
    }
  }
}

template <typename T, typename S>
LF_INLINE void columns_inverse_impl(const ColumnJob<T, S>& job, int64_t i0, int64_t i1, T* sa, T* sb) {
  const int64_t C = job.C, C2 = 2 * C, H = job.H;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t local = i / job.blocks;
    const int64_t c0 = (i % job.blocks) * job.Vb;
    const int64_t V = std::min(job.Vb, C - c0);
    T* col = job.spec + (job.g0 + local) * H * C2 + c0;
    const S* m = job.group + local * H * C2 + c0;
    if constexpr (std::is_same_v<T, S>) {
      fft_exec<T, true>(*job.plan, m, C2, C, col, C2, C, V, sa, sb);
    } else {
      for (int64_t e = 0; e < H; ++e) {
        const S* me = m + e * C2;
        T* de = sa + e * 2 * V;
        LF_IVDEP
        for (int64_t c = 0; c < V; ++c) {
          de[c] = load(me[c]);
          de[c + V] = load(me[c + C]);
        }
      }
      fft_exec<T, true>(*job.plan, sa, 2 * V, V, col, C2, C, V, sb, sa);
    }
  }
}

// Entry points compiled once per instruction set (see LF_MULTIVERSION).
#define LF_DEFINE_ENTRY(name, impl, Job, T, S)                                                   \
  LF_MULTIVERSION void name(const Job<T, S>& job, int64_t b, int64_t e, T* sa, T* sb) {        \
    impl<T, S>(job, b, e, sa, sb);                                                               \
  }

LF_DEFINE_ENTRY(rows_forward_f32, rows_forward_impl, RowJob, float, float)
LF_DEFINE_ENTRY(rows_forward_f64, rows_forward_impl, RowJob, double, double)
LF_DEFINE_ENTRY(rows_forward_bf16, rows_forward_impl, RowJob, float, c10::BFloat16)
LF_DEFINE_ENTRY(rows_inverse_f32, rows_inverse_impl, RowJob, float, float)
LF_DEFINE_ENTRY(rows_inverse_f64, rows_inverse_impl, RowJob, double, double)
LF_DEFINE_ENTRY(rows_inverse_bf16, rows_inverse_impl, RowJob, float, c10::BFloat16)
LF_DEFINE_ENTRY(columns_forward_f32, columns_forward_impl, ColumnJob, float, float)
LF_DEFINE_ENTRY(columns_forward_f64, columns_forward_impl, ColumnJob, double, double)
LF_DEFINE_ENTRY(columns_forward_bf16, columns_forward_impl, ColumnJob, float, c10::BFloat16)
LF_DEFINE_ENTRY(columns_inverse_f32, columns_inverse_impl, ColumnJob, float, float)
LF_DEFINE_ENTRY(columns_inverse_f64, columns_inverse_impl, ColumnJob, double, double)
LF_DEFINE_ENTRY(columns_inverse_bf16, columns_inverse_impl, ColumnJob, float, c10::BFloat16)

#undef LF_DEFINE_ENTRY

template <typename T, typename S>
struct Kernels;
template <>
struct Kernels<float, float> {
  static constexpr auto rows_forward = rows_forward_f32;
  static constexpr auto rows_inverse = rows_inverse_f32;
  static constexpr auto columns_forward = columns_forward_f32;
  static constexpr auto columns_inverse = columns_inverse_f32;
};
template <>
struct Kernels<double, double> {
  static constexpr auto rows_forward = rows_forward_f64;
  static constexpr auto rows_inverse = rows_inverse_f64;
  static constexpr auto columns_forward = columns_forward_f64;
  static constexpr auto columns_inverse = columns_inverse_f64;
};
template <>
struct Kernels<float, c10::BFloat16> {
  static constexpr auto rows_forward = rows_forward_bf16;
  static constexpr auto rows_inverse = rows_inverse_bf16;
  static constexpr auto columns_forward = columns_forward_bf16;
  static constexpr auto columns_inverse = columns_inverse_bf16;
};

// Lets the kernel back a large, not yet touched allocation with 2 MiB pages:
// a fresh output is otherwise mostly page-fault time, and the column-major
// spectrum walks pages fast. Advisory only.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  if (bytes < (int64_t(4) << 20)) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (start + page - 1) / page * page;
  const uintptr_t end = (start + static_cast<uintptr_t>(bytes)) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// --------------------------------------------------------------------------
// Work buffers kept between calls (one set; a concurrent call gets its own).
// --------------------------------------------------------------------------

struct BufferCache {
  std::mutex mutex;
  std::map<std::string, at::Tensor> buffers;
};

BufferCache& buffer_cache() {
  static auto* cache = new BufferCache();
  return *cache;
}

class Workspace {
 public:
  Workspace() : lock_(buffer_cache().mutex, std::try_to_lock) {}

  // A 1-D tensor of at least numel elements; its contents are undefined.
  at::Tensor get(const std::string& role, at::ScalarType dtype, int64_t numel) {
    numel = std::max<int64_t>(numel, 1);
    const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(dtype));
    const auto options = at::TensorOptions().dtype(dtype).device(at::kCPU);
    if (!lock_.owns_lock() || bytes > kMaxCachedBytes) {
      at::Tensor fresh = at::empty({numel}, options);
      advise_huge_pages(fresh);
      return fresh;
    }
    at::Tensor& held = buffer_cache().buffers[role];
    if (!held.defined() || held.scalar_type() != dtype || held.numel() < numel) {
      held = at::Tensor();
      held = at::empty({numel}, options);
      advise_huge_pages(held);
    }
    return held.narrow(0, 0, numel);
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

// --------------------------------------------------------------------------
// 1x1 convolutions on row-major (positions, channels) matrices.
// --------------------------------------------------------------------------

using ScalarList = c10::List<std::optional<at::Scalar>>;
// mkldnn::_convolution_pointwise_.binary: other += conv(X) (+ B), then an
// optional unary op; the one oneDNN entry point that writes into our memory.
using ConvAccumulateFn = at::Tensor&(at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const std::optional<at::Tensor>&, c10::IntArrayRef, c10::IntArrayRef,
                                     c10::IntArrayRef, int64_t, c10::string_view, std::optional<at::Scalar>,
                                     std::optional<c10::string_view>, ScalarList,
                                     std::optional<c10::string_view>);

struct OneDnn {
  bool available = false;
  bool bf16 = false;
  std::optional<c10::TypedOperatorHandle<ConvAccumulateFn>> conv_accumulate;
};

const OneDnn& onednn() {
  static const OneDnn* handles = [] {
    auto* h = new OneDnn();
    try {
      auto op = c10::Dispatcher::singleton().findSchema({"mkldnn::_convolution_pointwise_", "binary"});
      if (at::hasMKLDNN() && op && op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
        h->conv_accumulate = op->typed<ConvAccumulateFn>();
        h->available = true;
#if defined(__GNUC__) && defined(__x86_64__)
        h->bf16 = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512dq");
#endif
      }
    } catch (const std::exception&) {
      h->available = false;
      h->bf16 = false;
    }
    return h;
  }();
  return *handles;
}

bool use_onednn(at::ScalarType dtype) {
  const OneDnn& h = onednn();
  if (dtype == at::kFloat) return h.available;
  if (dtype == at::kBFloat16) return h.available && h.bf16;
  return false;
}

const std::vector<int64_t> kZeros = {0, 0};
const std::vector<int64_t> kOnes = {1, 1};

// (rows, channels) row-major as a channels-last (1, channels, rows, 1) image.
at::Tensor as_image(const at::Tensor& m) {
  return m.view({1, m.size(0), 1, m.size(1)}).permute({0, 3, 1, 2});
}

// out = act(in @ w^T + b [+ init]), written into the preallocated row-major
// `out`; `init` (same shape as out) is added before the activation.
void linear_into(const at::Tensor& in, const at::Tensor& w, const std::optional<at::Tensor>& b, bool relu,
                 at::Tensor out, const at::Tensor* init = nullptr) {
  if (use_onednn(in.scalar_type())) {
    // oneDNN writes into `out` only through its accumulate form: out += conv(in).
    if (init) {
      out.copy_(*init);
    } else {
      out.zero_();
    }
    at::Tensor image = as_image(out);
    onednn().conv_accumulate->call(image, as_image(in), w.view({w.size(0), w.size(1), 1, 1}), b, kZeros, kOnes,
                                   kOnes, 1, "add", std::nullopt,
                                   relu ? std::optional<c10::string_view>("relu") : std::nullopt, ScalarList(),
                                   std::nullopt);
    return;
  }
  if (b.has_value()) {
    at::addmm_out(out, *b, in, w.t());
  } else {
    at::mm_out(out, in, w.t());
  }
  if (init) out.add_(*init);
  if (relu) out.clamp_min_(0);
}

// A new channels-last (N, C, H, W) tensor.
at::Tensor new_output(int64_t N, int64_t C, int64_t H, int64_t W, const at::TensorOptions& options) {
  at::Tensor out = at::empty({N, C, H, W}, options.memory_format(at::MemoryFormat::ChannelsLast));
  advise_huge_pages(out);
  return out;
}

// The last 1x1 conv: t (N, Ch, H, W) channels-last -> a new channels-last output.
at::Tensor final_conv(const at::Tensor& t, const at::Tensor& w2, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& other, bool relu) {
  const int64_t N = t.size(0), Ch = t.size(1), H = t.size(2), W = t.size(3), Cout = w2.size(0);
  at::Tensor out = new_output(N, Cout, H, W, t.options());
  at::Tensor other2d;
  if (other.has_value()) other2d = other->permute({0, 2, 3, 1}).reshape({N * H * W, Cout});
  linear_into(t.permute({0, 2, 3, 1}).reshape({N * H * W, Ch}), w2, bias, relu,
              out.permute({0, 2, 3, 1}).view({N * H * W, Cout}), other.has_value() ? &other2d : nullptr);
  return out;
}

// --------------------------------------------------------------------------
// Arguments
// --------------------------------------------------------------------------

using args::dtype_name;
using args::Norm;
using args::norm_scales;
using args::parse_norm;

void check_x(const char* op, const at::Tensor& x) {
  args::check_x(op, x, c10::DeviceType::CPU, {at::kFloat, at::kDouble, at::kBFloat16},
                "torch.float32, torch.float64 or torch.bfloat16");
}

// --------------------------------------------------------------------------
// The pipeline
// --------------------------------------------------------------------------

// The checked arguments (x channels-last once run() has laid it out) and their sizes.
struct Problem : args::SpectralArgs {
  bool fourier_only = false;
  int64_t N = 0, Cin = 0, C = 0, Cout = 0, H = 0, W = 0;

  Problem(args::SpectralArgs a, bool fourier)
      : args::SpectralArgs(std::move(a)),
        fourier_only(fourier),
        N(d.N),
        Cin(d.Cin),
        C(d.C),
        Cout(d.Cout),
        H(d.H),
        W(d.W) {}
};

// w_freq and b_freq with rows and columns in the split channel order (the C
// real parts, then the C imaginary parts) instead of LaMa's interleaved one
// (channel 2c real, 2c + 1 imaginary). Both inputs are contiguous.
template <typename S>
std::pair<at::Tensor, at::Tensor> split_order(const at::Tensor& w, const at::Tensor& b, int64_t C) {
  const int64_t C2 = 2 * C;
  at::Tensor wq = at::empty({C2, C2}, w.options());
  at::Tensor bq = at::empty({C2}, b.options());
  const S* wsrc = w.data_ptr<S>();
  const S* bsrc = b.data_ptr<S>();
  S* wdst = wq.data_ptr<S>();
  S* bdst = bq.data_ptr<S>();
  for (int64_t j = 0; j < C; ++j) {
    bdst[j] = bsrc[2 * j];
    bdst[C + j] = bsrc[2 * j + 1];
  }
  at::parallel_for(0, C2, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const S* row = wsrc + (i < C ? 2 * i : 2 * (i - C) + 1) * C2;
      S* out = wdst + i * C2;
      for (int64_t j = 0; j < C; ++j) {
        out[j] = row[2 * j];
        out[C + j] = row[2 * j + 1];
      }
    }
  });
  return {wq, bq};
}

template <typename T, typename S>
at::Tensor run_pipeline(const Problem& pb) {
  using K = Kernels<T, S>;
  const int64_t N = pb.N, C = pb.C, C2 = 2 * C, H = pb.H, W = pb.W, Wf = W / 2 + 1;
  const int64_t rows = N * H;
  const at::ScalarType acc_dtype = c10::CppTypeToScalarType<T>::value;
  const at::ScalarType dtype = c10::CppTypeToScalarType<S>::value;

  const auto rplan = real_plan<T>(W);
  const auto cplan = complex_plan<T>(H);
  const auto scales = norm_scales(pb.norm, H, W);

  Workspace ws;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t scratch_len = std::max<int64_t>(W + 1, H) * C2;
  at::Tensor scratch = ws.get("scratch", acc_dtype, threads * 2 * scratch_len);
  T* scratch_ptr = scratch.data_ptr<T>();
  auto scratch_of = [&](int64_t tid) {
    T* base = scratch_ptr + std::min<int64_t>(tid, threads - 1) * 2 * scratch_len;
    return std::make_pair(base, base + scratch_len);
  };
  at::Tensor spec = ws.get("spec", acc_dtype, N * Wf * H * C2);

  // 1. y and the forward transforms of its rows.
  RowJob<T, S> fwd;
  fwd.spec = spec.data_ptr<T>();
  fwd.C = C;
  fwd.H = H;
  fwd.W = W;
  fwd.Wf = Wf;
  fwd.scale = static_cast<T>(scales.first);
  fwd.plan = rplan.get();
  auto forward_rows = [&](int64_t begin, int64_t end) {
    at::parallel_for(begin, end, 1, [&](int64_t b, int64_t e) {
      auto s = scratch_of(at::get_thread_num());
      K::rows_forward(fwd, b, e, s.first, s.second);
    });
  };
  at::Tensor y;  // (N * H * W, C) row-major
  if (pb.fourier_only) {
    fwd.src = pb.x.data_ptr<S>();
    forward_rows(0, rows);
  } else {
    y = ws.get("y", dtype, rows * W * C).view({rows * W, C});
    const at::Tensor x2d = pb.x.permute({0, 2, 3, 1}).reshape({rows * W, pb.Cin});
    fwd.src = y.data_ptr<S>();
    const int64_t chunk = std::max<int64_t>(1, kChunkPositions / W);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t r1 = std::min(rows, r0 + chunk);
      linear_into(x2d.narrow(0, r0 * W, (r1 - r0) * W), pb.w1, pb.b1, true, y.narrow(0, r0 * W, (r1 - r0) * W));
      forward_rows(r0, r1);
    }
  }

  // 2. Per group of frequency columns: FFT along H, the frequency conv, inverse FFT.
  {
    const auto split = split_order<S>(pb.w_freq, pb.b_freq, C);
    const at::Tensor& wq = split.first;
    const at::Tensor& bq = split.second;
    const int64_t columns = N * Wf;
    const int64_t group = std::min(columns, std::max<int64_t>(1, kGroupPositions / H));
    at::Tensor mbuf = ws.get("m", dtype, group * H * C2);
    at::Tensor gin;  // the GEMM input of a group when it is not the spectrum itself
    if constexpr (!std::is_same_v<T, S>) gin = ws.get("g", dtype, group * H * C2);
    int64_t Vb = C;
    const int64_t column_bytes = 3 * H * 2 * static_cast<int64_t>(sizeof(T));
    if (column_bytes * C > kColumnBytes) {
      Vb = std::max<int64_t>(16, (kColumnBytes / column_bytes) / 16 * 16);
      Vb = std::min(Vb, C);
    }
    const int64_t blocks = (C + Vb - 1) / Vb;
    for (int64_t g0 = 0; g0 < columns; g0 += group) {
      const int64_t count = std::min(group, columns - g0);
      ColumnJob<T, S> cj;
      cj.spec = spec.data_ptr<T>();
      cj.C = C;
      cj.H = H;
      cj.Vb = Vb;
      cj.blocks = blocks;
      cj.g0 = g0;
      cj.plan = cplan.get();
      at::Tensor src2d;
      if constexpr (std::is_same_v<T, S>) {
        src2d = spec.narrow(0, g0 * H * C2, count * H * C2).view({count * H, C2});
      } else {
        cj.group = gin.data_ptr<S>();
        src2d = gin.narrow(0, 0, count * H * C2).view({count * H, C2});
      }
      at::parallel_for(0, count * blocks, 1, [&](int64_t b, int64_t e) {
        auto s = scratch_of(at::get_thread_num());
        K::columns_forward(cj, b, e, s.first, s.second);
      });
      at::Tensor m2d = mbuf.narrow(0, 0, count * H * C2).view({count * H, C2});
      linear_into(src2d, wq, bq, true, m2d);
      cj.group = mbuf.data_ptr<S>();
      at::parallel_for(0, count * blocks, 1, [&](int64_t b, int64_t e) {
        auto s = scratch_of(at::get_thread_num());
        K::columns_inverse(cj, b, e, s.first, s.second);
      });
    }
  }

  // 3. Inverse transforms of the rows: t = y + z (or z alone), then the last conv.
  RowJob<T, S> inv;
  inv.spec = spec.data_ptr<T>();
  inv.C = C;
  inv.H = H;
  inv.W = W;
  inv.Wf = Wf;
  inv.scale = static_cast<T>(scales.second);
  inv.plan = rplan.get();
  auto inverse_rows = [&](int64_t begin, int64_t end) {
    at::parallel_for(begin, end, 1, [&](int64_t b, int64_t e) {
      auto s = scratch_of(at::get_thread_num());
      K::rows_inverse(inv, b, e, s.first, s.second);
    });
  };
  if (pb.fourier_only) {
    at::Tensor out = new_output(N, C, H, W, pb.x.options());
    inv.src = nullptr;
    inv.dst = out.data_ptr<S>();
    inverse_rows(0, rows);
    return out;
  }
  inv.src = y.data_ptr<S>();
  inv.dst = y.data_ptr<S>();
  const int64_t Cout = pb.Cout;
  at::Tensor out = new_output(N, Cout, H, W, pb.x.options());
  const at::Tensor out2d = out.permute({0, 2, 3, 1}).view({rows * W, Cout});
  at::Tensor other2d;
  if (pb.other.has_value()) {
    other2d = pb.other->contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({rows * W, Cout});
  }
  const int64_t chunk = std::max<int64_t>(1, kChunkPositions / W);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    inverse_rows(r0, r1);
    const int64_t p0 = r0 * W, np = (r1 - r0) * W;
    const at::Tensor init = other2d.defined() ? other2d.narrow(0, p0, np) : at::Tensor();
    linear_into(y.narrow(0, p0, np), pb.w2, pb.bias, pb.relu, out2d.narrow(0, p0, np),
                other2d.defined() ? &init : nullptr);
  }
  return out;
}

// Sizes with a prime factor above kMaxRadix: the same math with ATen's FFT.
at::Tensor run_aten(const Problem& pb) {
  const int64_t N = pb.N, C = pb.C, H = pb.H, W = pb.W, Wf = W / 2 + 1;
  const auto dtype = pb.x.scalar_type();
  const auto fft_dtype = dtype == at::kBFloat16 ? at::kFloat : dtype;
  const char* norm = pb.norm == Norm::Ortho ? "ortho" : (pb.norm == Norm::Forward ? "forward" : "backward");
  const at::Tensor x = pb.x.permute({0, 2, 3, 1});  // (N, H, W, Cin)
  at::Tensor y;
  if (pb.fourier_only) {
    y = x;
  } else {
    y = at::empty({N * H * W, C}, x.options());
    linear_into(x.reshape({N * H * W, pb.Cin}), pb.w1, pb.b1, true, y);
    y = y.view({N, H, W, C});
  }
  const at::Tensor s = at::fft_rfft2(y.to(fft_dtype), std::nullopt, {1, 2}, norm);  // (N, H, Wf, C)
  const at::Tensor s2d = at::view_as_real(s).reshape({N * H * Wf, 2 * C}).to(dtype).contiguous();
  at::Tensor m = at::empty({N * H * Wf, 2 * C}, y.options());
  linear_into(s2d, pb.w_freq, pb.b_freq, true, m);
  const at::Tensor mc = at::view_as_complex(m.to(fft_dtype).view({N, H, Wf, C, 2}));
  const at::Tensor z = at::fft_irfft2(mc, c10::IntArrayRef({H, W}), {1, 2}, norm);  // (N, H, W, C)
  if (pb.fourier_only) return z.to(dtype).permute({0, 3, 1, 2}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor t = (y.to(fft_dtype) + z).to(dtype).contiguous().permute({0, 3, 1, 2});
  return final_conv(t, pb.w2, pb.bias, pb.other, pb.relu);
}

at::Tensor run(Problem& pb) {
  // The op has no autograd formula; the ATen calls below see plain tensors.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (pb.N == 0) {
    return at::empty({pb.N, pb.Cout, pb.H, pb.W}, pb.x.options().memory_format(at::MemoryFormat::ChannelsLast));
  }
  // (N, C, H, W) with channels-last memory; no copy when x already is.
  pb.x = pb.x.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
  const bool own_fft = fft_friendly(pb.H) && fft_friendly(pb.W % 2 == 0 ? pb.W / 2 : pb.W);
  if (!own_fft) return run_aten(pb);
  switch (pb.x.scalar_type()) {
    case at::kFloat:
      return run_pipeline<float, float>(pb);
    case at::kDouble:
      return run_pipeline<double, double>(pb);
    case at::kBFloat16:
      return run_pipeline<float, c10::BFloat16>(pb);
    default:
      TORCH_CHECK(false, "lama_fast: unsupported dtype ", dtype_name(pb.x.scalar_type()));
  }
}

at::Tensor spectral_transform_cpu(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                  const at::Tensor& w_freq, const at::Tensor& b_freq, const at::Tensor& w2,
                                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& other,
                                  bool relu, c10::string_view fft_norm) {
  const char* op = "spectral_transform";
  check_x(op, x);
  Problem pb(args::spectral_transform_args(op, x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm), false);
  return run(pb);
}

at::Tensor fourier_unit_cpu(const at::Tensor& x, const at::Tensor& w_freq, const at::Tensor& b_freq,
                            c10::string_view fft_norm) {
  const char* op = "fourier_unit";
  check_x(op, x);
  Problem pb(args::fourier_unit_args(op, x, w_freq, b_freq, fft_norm), true);
  return run(pb);
}

}  // namespace
}  // namespace lama_fast

TORCH_LIBRARY_FRAGMENT(lama_fast, m) {
  m.def(
      "spectral_transform(Tensor x, Tensor w1, Tensor b1, Tensor w_freq, Tensor b_freq, Tensor w2, "
      "Tensor? bias, Tensor? other, bool relu, str fft_norm) -> Tensor");
  m.def("fourier_unit(Tensor x, Tensor w_freq, Tensor b_freq, str fft_norm) -> Tensor");
}

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("spectral_transform", &lama_fast::spectral_transform_cpu);
  m.impl("fourier_unit", &lama_fast::fourier_unit_cpu);
}

