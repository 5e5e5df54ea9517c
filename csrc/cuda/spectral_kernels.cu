// The element-wise kernels of the CUDA spectral transform: a grid-stride
// loop over one step of cuda/spectral_device.h (a __host__ __device__
// functor), instantiated for float, double, __half and __nv_bfloat16
// activations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/spectral_cuda.h"
#include "cuda/spectral_device.h"

namespace lama_fast {
namespace cuda_math {

// The conversions of CUDA's half types, whose casts torch's build flags switch off.
#define LF_CONVERT(To, From, function)                     \
  template <>                                              \
  struct Convert<To, From> {                               \
    LF_HD static To apply(From v) { return function(v); } \
  };

LF_CONVERT(float, __half, __half2float)
LF_CONVERT(__half, float, __float2half_rn)
LF_CONVERT(float, __nv_bfloat16, __bfloat162float)
LF_CONVERT(__nv_bfloat16, float, __float2bfloat16_rn)

#undef LF_CONVERT

}  // namespace cuda_math

namespace cuda {
namespace {

using namespace cuda_math;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 32;
// The steps' names in error messages, by Step.
constexpr const char* kStepNames[] = {"bias_relu", "scale_convert", "mix_epilogue", "residual", "output_epilogue"};

int64_t blocks_for(int64_t count) {
  return std::max<int64_t>(1, std::min<int64_t>((count + kThreads - 1) / kThreads, kMaxBlocks));
}

// f(i) for every i in [0, count), a grid-stride loop.
template <typename F>
__global__ void each_index(F f, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    f(i);
  }
}

}  // namespace

std::string elementwise(Step step, DType dtype, const StepArgs& args, cudaStream_t stream) {
  if (args.count == 0) return std::string();
  return with_step<__half, __nv_bfloat16>(step, dtype, args, [&](auto f) {
    each_index<<<blocks_for(args.count), kThreads, 0, stream>>>(f, args.count);
    const cudaError_t error = cudaGetLastError();
    if (error == cudaSuccess) return std::string();
    return std::string(kStepNames[static_cast<int>(step)]) + ": kernel launch failed: " + cudaGetErrorString(error);
  });
}

}  // namespace cuda
}  // namespace lama_fast
