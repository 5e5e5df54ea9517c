// The CUDA spectral transform run on the CPU: the pipeline of
// csrc/cuda/pipeline.h with the per-element functors of
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
// (schemas in csrc/cpu/module.cpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "cuda/pipeline.h"
#include "cuda/spectral_device.h"
#include "spectral_args.h"

namespace lama_fast {
namespace {

using namespace cuda_math;

constexpr int64_t kGrain = 4096;

// Copies between a dense (B, H, width) array of elements of `parts` reals and
// the same elements addressed through a cuFFT advanced layout (embed, stride,
// dist; `elements` of them per image), to_dense or back. `what` says which
// side, in the message if an offset falls outside it.
template <typename S>
void copy_layout(S* advanced, S* dense, int64_t B, int64_t H, int64_t width, int64_t parts, const int64_t* embed,
                 int64_t stride, int64_t dist, int64_t elements, bool to_dense, const char* what) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < width; ++w) {
        const int64_t at_ = advanced_offset(b, h, w, embed, stride, dist);
        TORCH_CHECK(at_ >= 0 && at_ < elements, "cuFFT layout ", what);
        S* a = advanced + parts * at_;
        S* d = dense + parts * ((b * H + h) * width + w);
        for (int64_t p = 0; p < parts; ++p) {
          if (to_dense) {
            d[p] = a[p];
          } else {
            a[p] = d[p];
          }
        }
      }
}

struct EmulatedDevice {
  static constexpr const char* kSpectralTransform = "cuda_emulated_spectral_transform";
  static constexpr const char* kFourierUnit = "cuda_emulated_fourier_unit";
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;

  explicit EmulatedDevice(const at::Tensor&) {}

  // The step for every index, as the CUDA grid covers them.
  void step(Step step, DType dtype, const StepArgs& a) {
    with_step<c10::Half, c10::BFloat16>(step, dtype, a, [&](auto f) {
      at::parallel_for(0, a.count, kGrain, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) f(i);
      });
    });
  }

  // cuFFT's r2c of one image, as the plan made from fft_layout would address it.
  void fft_forward(const at::Tensor& y, const at::Tensor& spectrum, const args::Dims& d) {
    const FftLayout l = fft_layout(d.C, d.H, d.W, /*inverse=*/false);
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "fft_forward", [&] {
      const at::Tensor dense = at::empty({l.batch, d.H, d.W}, y.options());
      copy_layout(const_cast<scalar_t*>(y.data_ptr<scalar_t>()), dense.data_ptr<scalar_t>(), l.batch, d.H, d.W, 1,
                  l.inembed, l.istride, l.idist, l.in_elements, true, "reads outside the input image");
      const at::Tensor s = at::view_as_real(at::fft_rfft2(dense, std::nullopt, {1, 2}, "backward")).contiguous();
      copy_layout(spectrum.data_ptr<scalar_t>(), const_cast<scalar_t*>(s.data_ptr<scalar_t>()), l.batch, d.H,
                  half_width(d.W), 2, l.onembed, l.ostride, l.odist, l.out_elements, false,
                  "writes outside the spectrum");
    });
  }

  // cuFFT's c2r of one image.
  void fft_inverse(const at::Tensor& z, const at::Tensor& u, const args::Dims& d) {
    const FftLayout l = fft_layout(d.C, d.H, d.W, /*inverse=*/true);
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fft_inverse", [&] {
      const at::Tensor dense = at::empty({l.batch, d.H, half_width(d.W), 2}, z.options());
      copy_layout(const_cast<scalar_t*>(z.data_ptr<scalar_t>()), dense.data_ptr<scalar_t>(), l.batch, d.H,
                  half_width(d.W), 2, l.inembed, l.istride, l.idist, l.in_elements, true,
                  "reads outside the spectrum");
      const at::Tensor r =
          at::fft_irfft2(at::view_as_complex(dense), c10::IntArrayRef({d.H, d.W}), {1, 2}, "forward").contiguous();
      copy_layout(u.data_ptr<scalar_t>(), const_cast<scalar_t*>(r.data_ptr<scalar_t>()), l.batch, d.H, d.W, 1,
                  l.onembed, l.ostride, l.odist, l.out_elements, false, "writes outside the output image");
    });
  }
};

using Emulation = pipeline::Ops<EmulatedDevice>;

at::Tensor emulated_mixed_spectrum(const at::Tensor& y, const at::Tensor& w_freq, const at::Tensor& b_freq,
                                   c10::string_view fft_norm) {
  const char* op = "cuda_emulated_mixed_spectrum";
  pipeline::check_input(op, y, c10::DeviceType::CPU);
  const args::SpectralArgs a = args::fourier_unit_args(op, y, w_freq, b_freq, fft_norm);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  EmulatedDevice dev(y);
  const args::Dims& d = a.d;
  const at::Tensor y2d = pipeline::positions_by_channels(y.to(pipeline::arithmetic_type(y.scalar_type())));
  const at::Tensor z =
      pipeline::mixed_spectrum(dev, y2d.contiguous(), a.w_freq, a.b_freq, y.scalar_type(), a.norm, d);
  return at::view_as_complex(z.view({d.N, d.H, half_width(d.W), d.C, 2}));
}

}  // namespace
}  // namespace lama_fast

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("cuda_emulated_spectral_transform", &lama_fast::args::Entry<lama_fast::Emulation>::spectral_transform);
  m.impl("cuda_emulated_fourier_unit", &lama_fast::args::Entry<lama_fast::Emulation>::fourier_unit);
  m.impl("cuda_emulated_mixed_spectrum", &lama_fast::emulated_mixed_spectrum);
}
