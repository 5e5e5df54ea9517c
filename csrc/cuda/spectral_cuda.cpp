// The torch-facing side of the CUDA spectral transform: argument checks, the
// pipeline of cuda/pipeline.h with its GEMMs through ATen (cuBLAS), and the
// element-wise kernels and cuFFT plans of csrc/cuda/*.cu on the current
// stream, with work areas from PyTorch's caching allocator. Registered for
// CUDA tensors under the ops' schemas (csrc/cpu/module.cpp):
//   lama_fast::spectral_transform, lama_fast::fourier_unit
//   lama_fast::_cufft_plan_cache_limit(int? limit=None) -> (int, int, int)
//       sets the cuFFT plan cache's limit when given; returns (limit, plans
//       cached, plans pinned by CUDA-graph captures), for the tests
// float32, float64, float16 and bfloat16 activations at any size; the FFTs
// run in float32 (float64 for float64). Only built with a CUDA build of torch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "cuda/pipeline.h"
#include "cuda/spectral_cuda.h"
#include "spectral_args.h"

namespace lama_fast {
namespace {

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

// The pipeline's policy on x's GPU (current while it lives), on its current stream.
struct CudaDevice {
  static constexpr const char* kSpectralTransform = "spectral_transform";
  static constexpr const char* kFourierUnit = "fourier_unit";
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;

  const c10::cuda::CUDAGuard guard;
  const int device;
  const cudaStream_t stream;

  explicit CudaDevice(const at::Tensor& x)
      : guard(x.device()),
        device(x.device().index()),
        stream(c10::cuda::getCurrentCUDAStream(x.device().index()).stream()) {}

  void step(cuda_math::Step step, cuda_math::DType dtype, const cuda_math::StepArgs& args) {
    ok(cuda::elementwise(step, dtype, args, stream));
  }

  void fft(const at::Tensor& in, const at::Tensor& out, const args::Dims& d, bool inverse) {
    cuda::FftKey key;
    key.device = device;
    key.channels = d.C;
    key.height = d.H;
    key.width = d.W;
    key.inverse = inverse;
    key.double_precision = in.scalar_type() == at::kDouble;
    // From the caching allocator on the current stream, which is `stream`, the one the plan runs
    // on (so no recordStream): freed when `work` goes out of scope, then reusable only by later
    // work on that stream (inside a CUDA graph: the graph's pool).
    WorkArea work{in.options().dtype(at::kByte), at::Tensor()};
    ok(cuda::fft_exec(key, in.data_ptr(), out.data_ptr(), &WorkArea::allocate, &work, stream));
  }

  void fft_forward(const at::Tensor& y, const at::Tensor& spectrum, const args::Dims& d) {
    fft(y, spectrum, d, false);
  }

  void fft_inverse(const at::Tensor& z, const at::Tensor& u, const args::Dims& d) { fft(z, u, d, true); }
};

using CudaOps = pipeline::Ops<CudaDevice>;

std::tuple<int64_t, int64_t, int64_t> cufft_plan_cache_limit(std::optional<int64_t> limit) {
  TORCH_CHECK(!limit.has_value() || *limit >= 0, "_cufft_plan_cache_limit: limit must be at least 0, got ",
              limit.value_or(0));
  const cuda::FftPlanCache cache =
      limit.has_value() ? cuda::fft_set_plan_limit(static_cast<std::size_t>(*limit)) : cuda::fft_plan_cache();
  return {static_cast<int64_t>(cache.limit), static_cast<int64_t>(cache.cached), static_cast<int64_t>(cache.pinned)};
}

}  // namespace
}  // namespace lama_fast

TORCH_LIBRARY_IMPL(lama_fast, CUDA, m) {
  m.impl("spectral_transform", &lama_fast::args::Entry<lama_fast::CudaOps>::spectral_transform);
  m.impl("fourier_unit", &lama_fast::args::Entry<lama_fast::CudaOps>::fourier_unit);
}

// No tensor arguments: dispatched to its CompositeExplicitAutograd kernel.
TORCH_LIBRARY_IMPL(lama_fast, CompositeExplicitAutograd, m) {
  m.impl("_cufft_plan_cache_limit", &lama_fast::cufft_plan_cache_limit);
}
