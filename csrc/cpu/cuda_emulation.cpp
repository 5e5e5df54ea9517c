// The CUDA spectral transform run on the CPU: the pipeline of
// csrc/cuda/pipeline.h with the per-element functions of
// csrc/cuda/spectral_device.h looped over every index (as the CUDA grids
// cover them), and the cuFFT plans replaced by ATen's FFT read and written
// through cuFFT's advanced-layout addressing with the plans' parameters
// (cuda_math::fft_layout). Tests compare these ops with the reference, so the
// GPU's index arithmetic, scale folding and Hermitian edge handling are
// checked on machines without a GPU.
//
//   lama_fast::cuda_emulated_spectral_transform   schema of spectral_transform
//   lama_fast::cuda_emulated_fourier_unit         schema of fourier_unit
//   lama_fast::cuda_emulated_mixed_spectrum(y, w_freq, b_freq, fft_norm)
//       the (N, H, Wf, C) complex array the inverse FFT reads
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <optional>

#include "cuda/pipeline.h"
#include "cuda/spectral_device.h"
#include "spectral_args.h"

namespace lama_fast {
namespace {

using namespace cuda_math;

constexpr int64_t kGrain = 4096;

template <typename F>
void for_each_index(int64_t count, F&& f) {
  at::parallel_for(0, count, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) f(i);
  });
}

// Calls f with (T, A) pointers' types for the activations' dtype.
template <typename F>
void dispatch(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat:
      return f(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
    case at::kDouble:
      return f(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
    case at::kHalf:
      return f(static_cast<c10::Half*>(nullptr), static_cast<float*>(nullptr));
    case at::kBFloat16:
      return f(static_cast<c10::BFloat16*>(nullptr), static_cast<float*>(nullptr));
    default:
      TORCH_CHECK(false, "cuda emulation: unsupported dtype ", args::dtype_name(t));
  }
}

struct EmulatedDevice {
  void bias_relu(const at::Tensor& g, const at::Tensor& bias, const at::Tensor& y) {
    dispatch(g.scalar_type(), [&](auto* tp, auto* ap) {
      using T = std::remove_pointer_t<decltype(tp)>;
      using A = std::remove_pointer_t<decltype(ap)>;
      const T* gp = g.data_ptr<T>();
      const T* bp = bias.data_ptr<T>();
      A* yp = y.data_ptr<A>();
      const int64_t C = g.size(1);
      for_each_index(g.numel(), [&](int64_t i) { bias_relu_element<T, A>(i, gp, bp, C, yp); });
    });
  }

  void scale_convert(const at::Tensor& in, double scale, const at::Tensor& out) {
    dispatch(out.scalar_type(), [&](auto* tp, auto* ap) {
      using T = std::remove_pointer_t<decltype(tp)>;
      using A = std::remove_pointer_t<decltype(ap)>;
      const A* ip = in.data_ptr<A>();
      T* op = out.data_ptr<T>();
      for_each_index(in.numel(), [&](int64_t i) { scale_convert_element<A, T>(i, ip, static_cast<A>(scale), op); });
    });
  }

  void mix_epilogue(const at::Tensor& g, const at::Tensor& bias, double in_scale, double out_scale,
                    const SpectrumShape& shape, const at::Tensor& z) {
    dispatch(g.scalar_type(), [&](auto* tp, auto* ap) {
      using T = std::remove_pointer_t<decltype(tp)>;
      using A = std::remove_pointer_t<decltype(ap)>;
      const T* gp = g.data_ptr<T>();
      const T* bp = bias.data_ptr<T>();
      A* zp = z.data_ptr<A>();
      const int64_t count = shape.N * shape.H * shape.Wf * shape.C;
      for_each_index(count, [&](int64_t e) {
        mix_epilogue_element<T, A>(e, gp, bp, static_cast<A>(in_scale), static_cast<A>(out_scale), shape, zp);
      });
    });
  }

  void residual(const at::Tensor& y, const at::Tensor& u, const at::Tensor& t) {
    dispatch(t.scalar_type(), [&](auto* tp, auto* ap) {
      using T = std::remove_pointer_t<decltype(tp)>;
      using A = std::remove_pointer_t<decltype(ap)>;
      const A* yp = y.data_ptr<A>();
      const A* up = u.data_ptr<A>();
      T* outp = t.data_ptr<T>();
      for_each_index(t.numel(), [&](int64_t i) { residual_element<A, T>(i, yp, up, outp); });
    });
  }

  void output_epilogue(const at::Tensor& out, const std::optional<at::Tensor>& bias, bool relu) {
    dispatch(out.scalar_type(), [&](auto* tp, auto* ap) {
      using T = std::remove_pointer_t<decltype(tp)>;
      using A = std::remove_pointer_t<decltype(ap)>;
      T* op = out.data_ptr<T>();
      const T* bp = bias.has_value() ? bias->data_ptr<T>() : nullptr;
      const int64_t C = out.size(1);
      for_each_index(out.numel(), [&](int64_t i) { output_epilogue_element<T, A>(i, op, bp, C, relu); });
    });
  }

  // cuFFT's r2c of one image, as the plan made from fft_layout would address it.
  void fft_forward(const at::Tensor& y, const at::Tensor& spectrum, const args::Dims& d) {
    const FftLayout l = fft_layout(d.C, d.H, d.W, /*inverse=*/false);
    const int64_t H = d.H, W = d.W, Wf = half_width(W), B = l.batch;
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "fft_forward", [&] {
      const scalar_t* in = y.data_ptr<scalar_t>();
      scalar_t* out = spectrum.data_ptr<scalar_t>();
      const at::Tensor dense = at::empty({B, H, W}, y.options());
      scalar_t* dp = dense.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) {
            const int64_t at_ = advanced_offset(b, h, w, l.inembed, l.istride, l.idist);
            TORCH_CHECK(at_ >= 0 && at_ < l.in_elements, "cuFFT layout reads outside the input image");
            dp[(b * H + h) * W + w] = in[at_];
          }
      const at::Tensor s = at::view_as_real(at::fft_rfft2(dense, std::nullopt, {1, 2}, "backward")).contiguous();
      const scalar_t* sp = s.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t k = 0; k < Wf; ++k) {
            const int64_t at_ = advanced_offset(b, h, k, l.onembed, l.ostride, l.odist);
            TORCH_CHECK(at_ >= 0 && at_ < l.out_elements, "cuFFT layout writes outside the spectrum");
            out[2 * at_] = sp[2 * ((b * H + h) * Wf + k)];
            out[2 * at_ + 1] = sp[2 * ((b * H + h) * Wf + k) + 1];
          }
    });
  }

  // cuFFT's c2r of one image.
  void fft_inverse(const at::Tensor& z, const at::Tensor& u, const args::Dims& d) {
    const FftLayout l = fft_layout(d.C, d.H, d.W, /*inverse=*/true);
    const int64_t H = d.H, W = d.W, Wf = half_width(W), B = l.batch;
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fft_inverse", [&] {
      const scalar_t* in = z.data_ptr<scalar_t>();
      scalar_t* out = u.data_ptr<scalar_t>();
      const at::Tensor dense = at::empty({B, H, Wf, 2}, z.options());
      scalar_t* dp = dense.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t k = 0; k < Wf; ++k) {
            const int64_t at_ = advanced_offset(b, h, k, l.inembed, l.istride, l.idist);
            TORCH_CHECK(at_ >= 0 && at_ < l.in_elements, "cuFFT layout reads outside the spectrum");
            dp[2 * ((b * H + h) * Wf + k)] = in[2 * at_];
            dp[2 * ((b * H + h) * Wf + k) + 1] = in[2 * at_ + 1];
          }
      const at::Tensor r =
          at::fft_irfft2(at::view_as_complex(dense), c10::IntArrayRef({H, W}), {1, 2}, "forward").contiguous();
      const scalar_t* rp = r.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) {
            const int64_t at_ = advanced_offset(b, h, w, l.onembed, l.ostride, l.odist);
            TORCH_CHECK(at_ >= 0 && at_ < l.out_elements, "cuFFT layout writes outside the output image");
            out[at_] = rp[(b * H + h) * W + w];
          }
    });
  }
};

at::Tensor emulated_spectral_transform(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                       const at::Tensor& w_freq, const at::Tensor& b_freq, const at::Tensor& w2,
                                       const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& other,
                                       bool relu, c10::string_view fft_norm) {
  const char* op = "cuda_emulated_spectral_transform";
  pipeline::check_input(op, x, c10::DeviceType::CPU);
  const pipeline::Problem pb =
      args::spectral_transform_args(op, x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  EmulatedDevice dev;
  return pipeline::spectral_transform(dev, pb);
}

at::Tensor emulated_fourier_unit(const at::Tensor& x, const at::Tensor& w_freq, const at::Tensor& b_freq,
                                 c10::string_view fft_norm) {
  const char* op = "cuda_emulated_fourier_unit";
  pipeline::check_input(op, x, c10::DeviceType::CPU);
  const pipeline::Problem pb = args::fourier_unit_args(op, x, w_freq, b_freq, fft_norm);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  EmulatedDevice dev;
  return pipeline::fourier_unit(dev, pb);
}

at::Tensor emulated_mixed_spectrum(const at::Tensor& y, const at::Tensor& w_freq, const at::Tensor& b_freq,
                                   c10::string_view fft_norm) {
  const char* op = "cuda_emulated_mixed_spectrum";
  pipeline::check_input(op, y, c10::DeviceType::CPU);
  const args::Dims d = args::check_fourier_unit(op, y, w_freq, b_freq);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  EmulatedDevice dev;
  const at::ScalarType dtype = y.scalar_type();
  const at::Tensor y2d = pipeline::positions_by_channels(y.to(pipeline::arithmetic_type(dtype))).contiguous();
  const at::Tensor z = pipeline::mixed_spectrum(dev, y2d, w_freq.contiguous(), b_freq.contiguous(), dtype,
                                                args::parse_norm(op, fft_norm), d);
  return at::view_as_complex(z.view({d.N, d.H, half_width(d.W), d.C, 2}));
}

}  // namespace
}  // namespace lama_fast

TORCH_LIBRARY_FRAGMENT(lama_fast, m) {
  m.def(
      "cuda_emulated_spectral_transform(Tensor x, Tensor w1, Tensor b1, Tensor w_freq, Tensor b_freq, Tensor w2, "
      "Tensor? bias, Tensor? other, bool relu, str fft_norm) -> Tensor");
  m.def("cuda_emulated_fourier_unit(Tensor x, Tensor w_freq, Tensor b_freq, str fft_norm) -> Tensor");
  m.def("cuda_emulated_mixed_spectrum(Tensor y, Tensor w_freq, Tensor b_freq, str fft_norm) -> Tensor");
}

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("cuda_emulated_spectral_transform", &lama_fast::emulated_spectral_transform);
  m.impl("cuda_emulated_fourier_unit", &lama_fast::emulated_fourier_unit);
  m.impl("cuda_emulated_mixed_spectrum", &lama_fast::emulated_mixed_spectrum);
}
