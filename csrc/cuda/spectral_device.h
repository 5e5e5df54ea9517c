// The per-element index arithmetic and math of the CUDA spectral transform's
// kernels, as __host__ __device__ functions: csrc/cuda/spectral_kernels.cu
// launches them over CUDA grids, and the CPU build compiles the same
// functions into the emulation of the CUDA pipeline
// (csrc/cpu/cuda_emulation.cpp), which the CPU tests check against the
// reference. No torch headers here: nvcc compiles this with CUDA headers only.
//
// Layouts (all dense, channels last):
//   activations  (N, H, W, C):   element (n, c, h, w) at ((n*H + h)*W + w)*C + c
//   spectra      (N, H, Wf, C):  complex, Wf = W/2 + 1, as (re, im) pairs, so
//                one frequency bin's 2C reals are LaMa's interleaved channels
//                (2c = Re of channel c, 2c + 1 = Im) and the frequency-domain
//                1x1 convolution is a plain row-major GEMM on them.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define LF_HD __host__ __device__ __forceinline__
#else
#define LF_HD inline
#endif

namespace lama_fast {
namespace cuda_math {

LF_HD int64_t half_width(int64_t W) { return W / 2 + 1; }

// The DC column, and for an even width the Nyquist column, of a real
// transform's half spectrum: the columns a c2r transform reads only the
// Hermitian part of.
LF_HD bool is_edge_column(int64_t wf, int64_t W) { return wf == 0 || (W % 2 == 0 && wf == W / 2); }

// cuFFT's advanced data layout for one image of C channels (a batch of C
// 2-D transforms over (H, W)): the element of transform b at (h, w) lies at
// b * dist + (h * embed[1] + w) * stride. With stride = C and dist = 1 both
// sides are the channels-last tensors above, so no copy is needed on either
// side. Offsets count reals on the real side and complex values on the other.
struct FftLayout {
  int64_t n[2];
  int64_t inembed[2];
  int64_t istride, idist;
  int64_t onembed[2];
  int64_t ostride, odist;
  int64_t batch;
  int64_t in_elements, out_elements;  // per image
};

LF_HD FftLayout fft_layout(int64_t C, int64_t H, int64_t W, bool inverse) {
  FftLayout l;
  const int64_t Wf = half_width(W);
  l.n[0] = H;
  l.n[1] = W;
  l.batch = C;
  l.istride = l.ostride = C;
  l.idist = l.odist = 1;
  l.inembed[0] = l.onembed[0] = H;
  l.inembed[1] = inverse ? Wf : W;
  l.onembed[1] = inverse ? W : Wf;
  l.in_elements = H * l.inembed[1] * C;
  l.out_elements = H * l.onembed[1] * C;
  return l;
}

LF_HD int64_t advanced_offset(int64_t b, int64_t h, int64_t w, const int64_t* embed, int64_t stride, int64_t dist) {
  return b * dist + (h * embed[1] + w) * stride;
}

// Conversions between the activations' type T and the arithmetic type A. The
// general case is a static_cast; csrc/cuda/spectral_kernels.cu specialises
// Convert for CUDA's __half and __nv_bfloat16, whose casts torch's build
// flags (__CUDA_NO_HALF_CONVERSIONS__ and friends) switch off.
template <typename To, typename From>
struct Convert {
  LF_HD static To apply(From v) { return static_cast<To>(v); }
};

template <typename To, typename From>
LF_HD To to_type(From v) {
  return Convert<To, From>::apply(v);
}

LF_HD float relu(float v) { return v > 0.0f ? v : 0.0f; }
LF_HD double relu(double v) { return v > 0.0 ? v : 0.0; }

// The element-wise steps of the pipeline (csrc/cuda/pipeline.h), each a
// functor over one index: a CUDA kernel calls it for every index of its grid,
// the CPU emulation for every index in a loop. Their untyped arguments (which
// a step reads is said at its functor) and the number of indices:
enum class Step : int { BiasRelu = 0, ScaleConvert, MixEpilogue, Residual, OutputEpilogue };

struct SpectrumShape {
  int64_t N, H, W, Wf, C;
};

struct StepArgs {
  const void* in = nullptr;
  const void* in2 = nullptr;
  void* out = nullptr;
  int64_t channels = 0;
  double scale = 1.0, scale2 = 1.0;
  bool relu = false;
  SpectrumShape shape{0, 0, 0, 0, 0};
  int64_t count = 0;
};

// The activations' dtype; the arithmetic (and FFT) type A is double for
// Float64 and float otherwise.
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// y[i] = relu(g[i] + bias[i % C]) in the FFT's precision A (g and y may be
// the same buffer when T is A): the first 1x1 convolution's epilogue.
// in: g, in2: bias, out: y.
template <typename T, typename A>
struct BiasRelu {
  const T* g;
  const T* bias;
  int64_t C;
  A* y;
  explicit BiasRelu(const StepArgs& a)
      : g(static_cast<const T*>(a.in)), bias(static_cast<const T*>(a.in2)), C(a.channels), y(static_cast<A*>(a.out)) {}
  LF_HD void operator()(int64_t i) const { y[i] = relu(to_type<A>(g[i]) + to_type<A>(bias[i % C])); }
};

// out[i] = scale * in[i], rounded to T: the spectrum as the half-precision
// GEMM's operand, scaled first so that it cannot overflow.
template <typename T, typename A>
struct ScaleConvert {
  const A* in;
  A scale;
  T* out;
  explicit ScaleConvert(const StepArgs& a)
      : in(static_cast<const A*>(a.in)), scale(static_cast<A>(a.scale)), out(static_cast<T*>(a.out)) {}
  LF_HD void operator()(int64_t i) const { out[i] = to_type<T>(scale * in[i]); }
};

// The frequency-domain mixing's epilogue for complex element e of the
// (N, H, Wf, C) spectrum: g (in) holds the GEMM's raw output (2C reals per
// bin), z (out) receives what the inverse FFT reads, bias (in2) is b_freq,
// scale and scale2 the scales before and after the ReLU. The folded
// BatchNorm's shift and the ReLU apply to each real; the norm's scales are
// folded in (ReLU commutes with a positive scale), so both FFTs run
// unnormalised. In the edge columns the pair (h, H - h) is replaced by its
// Hermitian part X[h] <- (X[h] + conj(X[H - h])) / 2 by the element with the
// smaller h (the other returns), which is exactly what a c2r transform as
// defined reads: cuFFT's c2r kernels would otherwise read the non-Hermitian
// columns that the ReLU makes in their own way. g and z may be the same
// buffer.
template <typename T, typename A>
struct MixEpilogue {
  const T* g;
  const T* bias;
  A in_scale, out_scale;
  SpectrumShape s;
  A* z;
  explicit MixEpilogue(const StepArgs& a)
      : g(static_cast<const T*>(a.in)),
        bias(static_cast<const T*>(a.in2)),
        in_scale(static_cast<A>(a.scale)),
        out_scale(static_cast<A>(a.scale2)),
        s(a.shape),
        z(static_cast<A*>(a.out)) {}

  // out_scale * relu(in_scale * g + bias) for the real (part 0) or imaginary
  // (part 1) half of complex element e of channel c.
  LF_HD A value(int64_t e, int64_t c, int part) const {
    return out_scale * relu(in_scale * to_type<A>(g[2 * e + part]) + to_type<A>(bias[2 * c + part]));
  }

  LF_HD void operator()(int64_t e) const {
    const int64_t c = e % s.C;
    const int64_t bin = e / s.C;
    const int64_t wf = bin % s.Wf;
    const int64_t h = (bin / s.Wf) % s.H;
    if (!is_edge_column(wf, s.W)) {
      const A re = value(e, c, 0);
      const A im = value(e, c, 1);
      z[2 * e] = re;
      z[2 * e + 1] = im;
      return;
    }
    const int64_t hp = (s.H - h) % s.H;
    if (hp < h) return;  // the element at hp reads and writes both
    const A re = value(e, c, 0);
    const A im = value(e, c, 1);
    const int64_t ep = e + (hp - h) * s.Wf * s.C;
    const A re_p = value(ep, c, 0);
    const A im_p = value(ep, c, 1);
    const A half = static_cast<A>(0.5);
    const A re_h = half * (re + re_p);
    const A im_h = half * (im - im_p);
    z[2 * e] = re_h;
    z[2 * e + 1] = im_h;
    z[2 * ep] = re_h;
    z[2 * ep + 1] = -im_h;
  }
};

// t[i] = y[i] + u[i] rounded to T: the residual x + fu(x) that the last 1x1
// convolution reads (t may be u when T is A). in: y, in2: u, out: t.
template <typename T, typename A>
struct Residual {
  const A* y;
  const A* u;
  T* t;
  explicit Residual(const StepArgs& a)
      : y(static_cast<const A*>(a.in)), u(static_cast<const A*>(a.in2)), t(static_cast<T*>(a.out)) {}
  LF_HD void operator()(int64_t i) const { t[i] = to_type<T>(y[i] + u[i]); }
};

// out[i] = relu?(out[i] + bias[i % C]) (bias, in2, may be null): the last
// 1x1 convolution's epilogue, in float (double for T = double).
template <typename T, typename A>
struct OutputEpilogue {
  T* out;
  const T* bias;
  int64_t C;
  bool apply_relu;
  explicit OutputEpilogue(const StepArgs& a)
      : out(static_cast<T*>(a.out)), bias(static_cast<const T*>(a.in2)), C(a.channels), apply_relu(a.relu) {}
  LF_HD void operator()(int64_t i) const {
    A v = to_type<A>(out[i]);
    if (bias != nullptr) v += to_type<A>(bias[i % C]);
    if (apply_relu) v = relu(v);
    out[i] = to_type<T>(v);
  }
};

// Returns f(Op<T, A>(a)) for `step` with activations of `dtype`: T is float,
// double, or Half / BFloat16 (the host's or CUDA's half types).
template <typename Half, typename BFloat16, typename F>
auto with_step(Step step, DType dtype, const StepArgs& a, F&& f) {
  auto typed = [&](auto* tp, auto* ap) {
    using T = std::remove_pointer_t<decltype(tp)>;
    using A = std::remove_pointer_t<decltype(ap)>;
    switch (step) {
      case Step::BiasRelu: return f(BiasRelu<T, A>(a));
      case Step::ScaleConvert: return f(ScaleConvert<T, A>(a));
      case Step::MixEpilogue: return f(MixEpilogue<T, A>(a));
      case Step::Residual: return f(Residual<T, A>(a));
      default: return f(OutputEpilogue<T, A>(a));
    }
  };
  switch (dtype) {
    case DType::Float64: return typed(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
    case DType::Float16: return typed(static_cast<Half*>(nullptr), static_cast<float*>(nullptr));
    case DType::BFloat16: return typed(static_cast<BFloat16*>(nullptr), static_cast<float*>(nullptr));
    default: return typed(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  }
}

}  // namespace cuda_math
}  // namespace lama_fast
