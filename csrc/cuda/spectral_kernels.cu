// The element-wise kernels of the CUDA spectral transform: each is a
// grid-stride loop over one __host__ __device__ function of
// cuda/spectral_device.h, instantiated for float, double, __half and
// __nv_bfloat16 activations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "cuda/spectral_cuda.h"
#include "cuda/spectral_device.h"

namespace lama_fast {
namespace cuda_math {

template <>
struct Convert<float, __half> {
  LF_HD static float apply(__half v) { return __half2float(v); }
};
template <>
struct Convert<__half, float> {
  LF_HD static __half apply(float v) { return __float2half_rn(v); }
};
template <>
struct Convert<float, __nv_bfloat16> {
  LF_HD static float apply(__nv_bfloat16 v) { return __bfloat162float(v); }
};
template <>
struct Convert<__nv_bfloat16, float> {
  LF_HD static __nv_bfloat16 apply(float v) { return __float2bfloat16_rn(v); }
};

}  // namespace cuda_math

namespace cuda {
namespace {

using namespace cuda_math;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 32;

int64_t blocks_for(int64_t count) {
  return std::max<int64_t>(1, std::min<int64_t>((count + kThreads - 1) / kThreads, kMaxBlocks));
}

std::string launched(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return std::string();
  return std::string(what) + ": kernel launch failed: " + cudaGetErrorString(error);
}

#define LF_GRID_STRIDE(i, count)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (count);     \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T, typename A>
__global__ void bias_relu_kernel(const T* g, const T* bias, int64_t channels, A* y, int64_t count) {
  LF_GRID_STRIDE(i, count) { bias_relu_element<T, A>(i, g, bias, channels, y); }
}

template <typename A, typename T>
__global__ void scale_convert_kernel(const A* in, A scale, T* out, int64_t count) {
  LF_GRID_STRIDE(i, count) { scale_convert_element<A, T>(i, in, scale, out); }
}

template <typename T, typename A>
__global__ void mix_epilogue_kernel(const T* g, const T* bias, A in_scale, A out_scale, SpectrumShape shape, A* z,
                                    int64_t count) {
  LF_GRID_STRIDE(e, count) { mix_epilogue_element<T, A>(e, g, bias, in_scale, out_scale, shape, z); }
}

template <typename A, typename T>
__global__ void residual_kernel(const A* y, const A* u, T* out, int64_t count) {
  LF_GRID_STRIDE(i, count) { residual_element<A, T>(i, y, u, out); }
}

template <typename T, typename A>
__global__ void output_epilogue_kernel(T* out, const T* bias, int64_t channels, bool relu, int64_t count) {
  LF_GRID_STRIDE(i, count) { output_epilogue_element<T, A>(i, out, bias, channels, relu); }
}

// Calls f with (T, A) set for the activations' dtype.
template <typename F>
std::string dispatch(DType t, F&& f) {
  switch (t) {
    case DType::Float32:
      return f(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
    case DType::Float64:
      return f(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
    case DType::Float16:
      return f(static_cast<__half*>(nullptr), static_cast<float*>(nullptr));
    case DType::BFloat16:
      return f(static_cast<__nv_bfloat16*>(nullptr), static_cast<float*>(nullptr));
  }
  return "unknown dtype code " + std::to_string(static_cast<int>(t));
}

}  // namespace

std::string bias_relu(DType t, const void* g, const void* bias, int64_t channels, void* y, int64_t count,
                      cudaStream_t stream) {
  if (count == 0) return std::string();
  return dispatch(t, [&](auto* tp, auto* ap) {
    using T = std::remove_pointer_t<decltype(tp)>;
    using A = std::remove_pointer_t<decltype(ap)>;
    bias_relu_kernel<T, A><<<blocks_for(count), kThreads, 0, stream>>>(
        static_cast<const T*>(g), static_cast<const T*>(bias), channels, static_cast<A*>(y), count);
    return launched("bias_relu");
  });
}

std::string scale_convert(DType t, const void* in, double scale, void* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return std::string();
  return dispatch(t, [&](auto* tp, auto* ap) {
    using T = std::remove_pointer_t<decltype(tp)>;
    using A = std::remove_pointer_t<decltype(ap)>;
    scale_convert_kernel<A, T><<<blocks_for(count), kThreads, 0, stream>>>(
        static_cast<const A*>(in), static_cast<A>(scale), static_cast<T*>(out), count);
    return launched("scale_convert");
  });
}

std::string mix_epilogue(DType t, const void* g, const void* bias, double in_scale, double out_scale,
                         const SpectrumShape& shape, void* z, cudaStream_t stream) {
  const int64_t count = shape.N * shape.H * shape.Wf * shape.C;
  if (count == 0) return std::string();
  return dispatch(t, [&](auto* tp, auto* ap) {
    using T = std::remove_pointer_t<decltype(tp)>;
    using A = std::remove_pointer_t<decltype(ap)>;
    mix_epilogue_kernel<T, A><<<blocks_for(count), kThreads, 0, stream>>>(
        static_cast<const T*>(g), static_cast<const T*>(bias), static_cast<A>(in_scale), static_cast<A>(out_scale),
        shape, static_cast<A*>(z), count);
    return launched("mix_epilogue");
  });
}

std::string residual(DType t, const void* y, const void* u, void* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return std::string();
  return dispatch(t, [&](auto* tp, auto* ap) {
    using T = std::remove_pointer_t<decltype(tp)>;
    using A = std::remove_pointer_t<decltype(ap)>;
    residual_kernel<A, T><<<blocks_for(count), kThreads, 0, stream>>>(
        static_cast<const A*>(y), static_cast<const A*>(u), static_cast<T*>(out), count);
    return launched("residual");
  });
}

std::string output_epilogue(DType t, void* out, const void* bias, int64_t channels, bool relu, int64_t count,
                            cudaStream_t stream) {
  if (count == 0) return std::string();
  return dispatch(t, [&](auto* tp, auto* ap) {
    using T = std::remove_pointer_t<decltype(tp)>;
    using A = std::remove_pointer_t<decltype(ap)>;
    output_epilogue_kernel<T, A><<<blocks_for(count), kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(bias), channels, relu, count);
    return launched("output_epilogue");
  });
}

}  // namespace cuda
}  // namespace lama_fast
