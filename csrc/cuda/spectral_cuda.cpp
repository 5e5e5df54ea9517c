// The torch-facing side of the CUDA spectral transform: argument checks, the
// pipeline of cuda/pipeline.h with its GEMMs through ATen (cuBLAS), and the
// element-wise kernels and cuFFT plans of csrc/cuda/*.cu on the current
// stream, with work areas from PyTorch's caching allocator. Registered for
// CUDA tensors under the CPU ops' schemas (csrc/cpu/spectral.cpp):
//   lama_fast::spectral_transform, lama_fast::fourier_unit
// float32, float64, float16 and bfloat16 activations at any size; the FFTs
// run in float32 (float64 for float64). Only built with a CUDA build of torch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <string>

#include "cuda/pipeline.h"
#include "cuda/spectral_cuda.h"
#include "spectral_args.h"

namespace lama_fast {
namespace {

cuda::DType dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return cuda::DType::Float32;
    case at::kDouble:
      return cuda::DType::Float64;
    case at::kHalf:
      return cuda::DType::Float16;
    case at::kBFloat16:
      return cuda::DType::BFloat16;
    default:
      TORCH_CHECK(false, "lama_fast CUDA ops: unsupported dtype ", args::dtype_name(t));
  }
}

void ok(const std::string& error) { TORCH_CHECK(error.empty(), "lama_fast CUDA ops: ", error); }

struct WorkArea {
  at::TensorOptions options;
  at::Tensor tensor;

  static void* allocate(std::size_t bytes, void* self) {
    auto* area = static_cast<WorkArea*>(self);
    area->tensor = at::empty({static_cast<int64_t>(bytes)}, area->options);
    return area->tensor.data_ptr();
  }
};

struct CudaDevice {
  cudaStream_t stream;
  int device;

  void bias_relu(const at::Tensor& g, const at::Tensor& bias, const at::Tensor& y) {
    ok(cuda::bias_relu(dtype_code(g.scalar_type()), g.data_ptr(), bias.data_ptr(), g.size(1), y.data_ptr(),
                       g.numel(), stream));
  }

  void scale_convert(const at::Tensor& in, double scale, const at::Tensor& out) {
    ok(cuda::scale_convert(dtype_code(out.scalar_type()), in.data_ptr(), scale, out.data_ptr(), in.numel(), stream));
  }

  void mix_epilogue(const at::Tensor& g, const at::Tensor& bias, double in_scale, double out_scale,
                    const cuda_math::SpectrumShape& shape, const at::Tensor& z) {
    ok(cuda::mix_epilogue(dtype_code(g.scalar_type()), g.data_ptr(), bias.data_ptr(), in_scale, out_scale, shape,
                          z.data_ptr(), stream));
  }

  void residual(const at::Tensor& y, const at::Tensor& u, const at::Tensor& t) {
    ok(cuda::residual(dtype_code(t.scalar_type()), y.data_ptr(), u.data_ptr(), t.data_ptr(), t.numel(), stream));
  }

  void output_epilogue(const at::Tensor& out, const std::optional<at::Tensor>& bias, bool relu) {
    ok(cuda::output_epilogue(dtype_code(out.scalar_type()), out.data_ptr(),
                             bias.has_value() ? bias->data_ptr() : nullptr, out.size(1), relu, out.numel(), stream));
  }

  void fft(const at::Tensor& in, const at::Tensor& out, const args::Dims& d, bool inverse) {
    cuda::FftKey key;
    key.device = device;
    key.channels = d.C;
    key.height = d.H;
    key.width = d.W;
    key.inverse = inverse;
    key.double_precision = in.scalar_type() == at::kDouble;
    // From the caching allocator on the current stream: freed when `work` goes out of scope,
    // then reusable by later work on the same stream (inside a CUDA graph: the graph's pool).
    WorkArea work{in.options().dtype(at::kByte), at::Tensor()};
    ok(cuda::fft_exec(key, in.data_ptr(), out.data_ptr(), &WorkArea::allocate, &work, stream));
  }

  void fft_forward(const at::Tensor& y, const at::Tensor& spectrum, const args::Dims& d) {
    fft(y, spectrum, d, false);
  }

  void fft_inverse(const at::Tensor& z, const at::Tensor& u, const args::Dims& d) { fft(z, u, d, true); }
};

CudaDevice current_device(const at::Tensor& x) {
  CudaDevice dev;
  dev.device = x.device().index();
  dev.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  return dev;
}

at::Tensor spectral_transform_cuda(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w_freq, const at::Tensor& b_freq, const at::Tensor& w2,
                                   const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& other,
                                   bool relu, c10::string_view fft_norm) {
  const char* op = "spectral_transform";
  pipeline::check_input(op, x, c10::DeviceType::CUDA);
  const pipeline::Problem pb =
      args::spectral_transform_args(op, x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm);
  const c10::cuda::CUDAGuard guard(x.device());
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  CudaDevice dev = current_device(x);
  return pipeline::spectral_transform(dev, pb);
}

at::Tensor fourier_unit_cuda(const at::Tensor& x, const at::Tensor& w_freq, const at::Tensor& b_freq,
                             c10::string_view fft_norm) {
  const char* op = "fourier_unit";
  pipeline::check_input(op, x, c10::DeviceType::CUDA);
  const pipeline::Problem pb = args::fourier_unit_args(op, x, w_freq, b_freq, fft_norm);
  const c10::cuda::CUDAGuard guard(x.device());
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  CudaDevice dev = current_device(x);
  return pipeline::fourier_unit(dev, pb);
}

}  // namespace
}  // namespace lama_fast

TORCH_LIBRARY_IMPL(lama_fast, CUDA, m) {
  m.impl("spectral_transform", &lama_fast::spectral_transform_cuda);
  m.impl("fourier_unit", &lama_fast::fourier_unit_cuda);
}
