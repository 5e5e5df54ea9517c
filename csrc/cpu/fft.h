// The channel-vectorised FFT of the CPU spectral ops (csrc/cpu/spectral.cpp).
//
// One "element" of a transform is a whole vector of V channels: its V real
// parts at base + e * es and its V imaginary parts `im` further on, so every
// butterfly is plain vertical arithmetic on contiguous memory with scalar
// twiddles. The transforms are unnormalised Stockham transforms (radix 8, 4,
// 2, 3 and a direct DFT step for other primes up to kMaxRadix); a real
// transform of even length n runs as a complex one of length n / 2 on
// (even, odd) sample pairs. Plans are made once per length and cached
// (csrc/cpu/fft.cpp); the kernels here are force-inlined into their callers,
// which are compiled once per instruction set.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__GNUC__)
#define LF_INLINE inline __attribute__((always_inline))
#else
#define LF_INLINE inline
#endif

#if defined(__GNUC__) && !defined(__clang__)
#define LF_IVDEP _Pragma("GCC ivdep")
#define LF_UNROLL _Pragma("GCC unroll 8")
#else
#define LF_IVDEP
#define LF_UNROLL
#endif

namespace lama_fast {
namespace fft {

// Prime factors above this are not planned: fft_friendly() says no.
constexpr int64_t kMaxRadix = 64;

// Whether every prime factor of n is at most kMaxRadix.
bool fft_friendly(int64_t n);

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

// Real transform of length n: a complex transform of length n / 2 on
// (even, odd) sample pairs when n is even, of length n otherwise.
template <typename T>
struct RealPlan {
  int64_t n = 1;
  bool even = false;
  std::shared_ptr<const ComplexPlan<T>> complex;
  std::vector<T> wr, wi;  // exp(-2 pi i k / n), k = 0..n/2 (even n only)
};

// The cached plans of length n (float and double).
template <typename T>
std::shared_ptr<const ComplexPlan<T>> complex_plan(int64_t n);
template <typename T>
std::shared_ptr<const RealPlan<T>> real_plan(int64_t n);

// --------------------------------------------------------------------------
// Stages
// --------------------------------------------------------------------------

// The r-point DFTs of the fixed radices: x = DFT(r + i i), before the stage's
// twiddles (the inverse transform's, with Inv).
template <typename T, bool Inv>
struct Radix2 {
  static constexpr int R = 2;
  static LF_INLINE void dft(const T* r, const T* i, T* xr, T* xi) {
    xr[0] = r[0] + r[1];
    xi[0] = i[0] + i[1];
    xr[1] = r[0] - r[1];
    xi[1] = i[0] - i[1];
  }
};

template <typename T, bool Inv>
struct Radix3 {
  static constexpr int R = 3;
  static LF_INLINE void dft(const T* r, const T* i, T* xr, T* xi) {
    // sin(2 pi / 3), with the sign of the transform's direction.
    const T h = static_cast<T>(Inv ? -0.86602540378443864676 : 0.86602540378443864676);
    const T half = static_cast<T>(0.5);
    const T sr = r[1] + r[2], si = i[1] + i[2];
    const T dr = r[1] - r[2], di = i[1] - i[2];
    const T mr = r[0] - half * sr, mi = i[0] - half * si;
    // X1 = m - i h d, X2 = m + i h d
    xr[0] = r[0] + sr;
    xi[0] = i[0] + si;
    xr[1] = mr + h * di;
    xi[1] = mi - h * dr;
    xr[2] = mr - h * di;
    xi[2] = mi + h * dr;
  }
};

template <typename T, bool Inv>
struct Radix4 {
  static constexpr int R = 4;
  static LF_INLINE void dft(const T* r, const T* i, T* xr, T* xi) {
    const T t0r = r[0] + r[2], t0i = i[0] + i[2];
    const T t1r = r[0] - r[2], t1i = i[0] - i[2];
    const T t2r = r[1] + r[3], t2i = i[1] + i[3];
    const T dr = r[1] - r[3], di = i[1] - i[3];
    // (r1 - r3) times -i (forward) or +i (inverse)
    const T t3r = Inv ? -di : di;
    const T t3i = Inv ? dr : -dr;
    xr[0] = t0r + t2r;
    xi[0] = t0i + t2i;
    xr[1] = t1r + t3r;
    xi[1] = t1i + t3i;
    xr[2] = t0r - t2r;
    xi[2] = t0i - t2i;
    xr[3] = t1r - t3r;
    xi[3] = t1i - t3i;
  }
};

template <typename T, bool Inv>
struct Radix8 {
  static constexpr int R = 8;
  static LF_INLINE void dft(const T* r, const T* i, T* xr, T* xi) {
    const T h = static_cast<T>(0.70710678118654752440);  // 1 / sqrt(2)
    // Sums and differences of inputs j and j + 4.
    const T b0r = r[0] + r[4], b0i = i[0] + i[4];
    const T b1r = r[1] + r[5], b1i = i[1] + i[5];
    const T b2r = r[2] + r[6], b2i = i[2] + i[6];
    const T b3r = r[3] + r[7], b3i = i[3] + i[7];
    const T d0r = r[0] - r[4], d0i = i[0] - i[4];
    T d1r = r[1] - r[5], d1i = i[1] - i[5];
    T d2r = r[2] - r[6], d2i = i[2] - i[6];
    T d3r = r[3] - r[7], d3i = i[3] - i[7];
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
    xr[0] = e0r + e2r, xi[0] = e0i + e2i;
    xr[2] = e1r + e3r, xi[2] = e1i + e3i;
    xr[4] = e0r - e2r, xi[4] = e0i - e2i;
    xr[6] = e1r - e3r, xi[6] = e1i - e3i;
    xr[1] = o0r + o2r, xi[1] = o0i + o2i;
    xr[3] = o1r + o3r, xi[3] = o1i + o3i;
    xr[5] = o0r - o2r, xi[5] = o0i - o2i;
    xr[7] = o1r - o3r, xi[7] = o1i - o3i;
  }
};

// One stage of a fixed radix: for every butterfly (p, q), the r-point DFT of
// its r inputs, outputs k > 0 times the twiddle w_len^(p k).
template <template <typename, bool> class Radix, typename T, bool Inv>
LF_INLINE void stage_fixed(const T* in, int64_t ies, int64_t iim, T* out, int64_t oes, int64_t oim, int64_t V,
                           int64_t m, int64_t s, const T* twr, const T* twi) {
  constexpr int R = Radix<T, Inv>::R;
  for (int64_t p = 0; p < m; ++p) {
    T wr[R], wi[R];
    LF_UNROLL
    for (int k = 1; k < R; ++k) {
      wr[k] = twr[(R - 1) * p + k - 1];
      wi[k] = Inv ? -twi[(R - 1) * p + k - 1] : twi[(R - 1) * p + k - 1];
    }
    for (int64_t q = 0; q < s; ++q) {
      const T* a[R];
      T* y[R];
      LF_UNROLL
      for (int j = 0; j < R; ++j) {
        a[j] = in + (q + s * (p + j * m)) * ies;
        y[j] = out + (q + s * (R * p + j)) * oes;
      }
      LF_IVDEP
      for (int64_t c = 0; c < V; ++c) {
        T r[R], i[R], xr[R], xi[R];
        LF_UNROLL
        for (int j = 0; j < R; ++j) {
          r[j] = a[j][c];
          i[j] = a[j][c + iim];
        }
        Radix<T, Inv>::dft(r, i, xr, xi);
        y[0][c] = xr[0];
        y[0][c + oim] = xi[0];
        LF_UNROLL
        for (int k = 1; k < R; ++k) {
          y[k][c] = xr[k] * wr[k] - xi[k] * wi[k];
          y[k][c + oim] = xr[k] * wi[k] + xi[k] * wr[k];
        }
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
    const bool last = i == count - 1 && out != nullptr;
    T* dst = last ? out : ((src == s1) ? s2 : s1);
    const int64_t dst_es = last ? oes : ses, dst_im = last ? oim : V;
    const T* twr = plan.twr.data() + st.tw;
    const T* twi = plan.twi.data() + st.tw;
    switch (st.radix) {
      case 2: stage_fixed<Radix2, T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi); break;
      case 3: stage_fixed<Radix3, T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi); break;
      case 4: stage_fixed<Radix4, T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi); break;
      case 8: stage_fixed<Radix8, T, Inv>(src, src_es, src_im, dst, dst_es, dst_im, V, st.m, st.s, twr, twi); break;
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

// --------------------------------------------------------------------------
// Real transforms of one row of W channel vectors
// --------------------------------------------------------------------------

// Reading and writing the activations' type S (float, double or bfloat16)
// in the transform's type T.
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

// The half spectrum (W / 2 + 1 complex vectors of C, the one for bin k at
// out + k * kstride, C real parts then C imaginary parts) of the row of W
// channel vectors y (W * C values), times scale. sa, sb: scratch of
// (W + 1) * 2C values each.
template <typename T, typename S>
LF_INLINE void rfft_row(const RealPlan<T>& plan, const S* y, int64_t C, T scale, T* out, int64_t kstride, T* sa,
                        T* sb) {
  const int64_t C2 = 2 * C, W = plan.n;
  const ComplexPlan<T>& cplan = *plan.complex;
  if (plan.even) {
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
    const T hs = scale * static_cast<T>(0.5);
    for (int64_t k = 0; k <= n2; ++k) {
      const T* zk = Z + (k % n2) * C2;
      const T* zc = Z + ((n2 - k) % n2) * C2;
      const T wr = plan.wr[k], wi = plan.wi[k];
      T* d = out + k * kstride;
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
    return;
  }
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
  for (int64_t k = 0; k < W / 2 + 1; ++k) {
    const T* xk = X + k * C2;
    T* d = out + k * kstride;
    LF_IVDEP
    for (int64_t c = 0; c < C2; ++c) d[c] = scale * xk[c];
  }
}

// The inverse of rfft_row: the row of W channel vectors whose half spectrum
// (times scale) is `in`, written to out (plus `add` when it is not null; out
// may be add). The imaginary parts of the DC bin, and of the Nyquist bin of
// an even W, are ignored.
template <typename T, typename S>
LF_INLINE void irfft_row(const RealPlan<T>& plan, const T* in, int64_t kstride, int64_t C, T scale, const S* add,
                         S* out, T* sa, T* sb) {
  const int64_t C2 = 2 * C, W = plan.n;
  const ComplexPlan<T>& cplan = *plan.complex;
  const T* z;
  if (plan.even) {
    const int64_t n2 = W / 2;
    // Z[k] = E[k] + i O[k], E = X[k] + X[k + n2], O = (X[k] - X[k + n2]) w^-k,
    // X[k + n2] = conj(X[n2 - k]).
    {
      const T* x0 = in;
      const T* xn = in + n2 * kstride;
      LF_IVDEP
      for (int64_t c = 0; c < C; ++c) {
        const T a = x0[c], b = xn[c];
        sa[c] = scale * (a + b);
        sa[c + C] = scale * (a - b);
      }
    }
    for (int64_t k = 1; k < n2; ++k) {
      const T* xk = in + k * kstride;
      const T* xm = in + (n2 - k) * kstride;
      const T wr = plan.wr[k], wi = -plan.wi[k];
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
    z = fft_exec<T, true>(cplan, sa, C2, C, nullptr, 0, 0, C, sb, sa);
    if (add) {
      LF_IVDEP
      for (int64_t i = 0; i < W * C; ++i) out[i] = store<S>(load(add[i]) + z[i]);
    } else {
      LF_IVDEP
      for (int64_t i = 0; i < W * C; ++i) out[i] = store<S>(z[i]);
    }
    return;
  }
  // The full Hermitian spectrum of length W.
  for (int64_t k = 0; k < W; ++k) {
    T* d = sa + k * C2;
    if (k == 0) {
      LF_IVDEP
      for (int64_t c = 0; c < C; ++c) {
        d[c] = scale * in[c];
        d[c + C] = T(0);
      }
    } else if (k < W / 2 + 1) {
      const T* xk = in + k * kstride;
      LF_IVDEP
      for (int64_t c = 0; c < C2; ++c) d[c] = scale * xk[c];
    } else {
      const T* xk = in + (W - k) * kstride;
      LF_IVDEP
      for (int64_t c = 0; c < C; ++c) {
        d[c] = scale * xk[c];
        d[c + C] = -scale * xk[c + C];
      }
    }
  }
  z = fft_exec<T, true>(cplan, sa, C2, C, nullptr, 0, 0, C, sb, sa);
  for (int64_t e = 0; e < W; ++e) {
    const T* ze = z + e * C2;
    S* oe = out + e * C;
    if (add) {
      const S* ae = add + e * C;
      LF_IVDEP
      for (int64_t c = 0; c < C; ++c) oe[c] = store<S>(load(ae[c]) + ze[c]);
    } else {
      LF_IVDEP
      for (int64_t c = 0; c < C; ++c) oe[c] = store<S>(ze[c]);
    }
  }
}

}  // namespace fft
}  // namespace lama_fast
