// Host entry points of the CUDA spectral transform's kernels and cuFFT plans
// (csrc/cuda/spectral_kernels.cu, csrc/cuda/fft_plans.cu), called by the
// torch-facing csrc/cuda/spectral_cuda.cpp. Raw pointers and a stream only:
// the .cu files compile with CUDA and cuFFT headers, without torch's.
// Every function returns an empty string on success, else what went wrong.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda/spectral_device.h"

namespace lama_fast {
namespace cuda {

// The activations' type; the arithmetic (and FFT) type is double for
// Float64 and float otherwise.
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// y = relu(g + bias[channel]) in the arithmetic type (y may be g for Float32/Float64).
std::string bias_relu(DType t, const void* g, const void* bias, int64_t channels, void* y, int64_t count,
                      cudaStream_t stream);
// out = scale * in, rounded to t (in: arithmetic type).
std::string scale_convert(DType t, const void* in, double scale, void* out, int64_t count, cudaStream_t stream);
// The frequency mixing's epilogue over every complex element of the (N, H, Wf, C) spectrum.
std::string mix_epilogue(DType t, const void* g, const void* bias, double in_scale, double out_scale,
                         const cuda_math::SpectrumShape& shape, void* z, cudaStream_t stream);
// out = y + u rounded to t (y, u: arithmetic type; out may be u for Float32/Float64).
std::string residual(DType t, const void* y, const void* u, void* out, int64_t count, cudaStream_t stream);
// out = relu?(out + bias[channel]), bias may be null.
std::string output_epilogue(DType t, void* out, const void* bias, int64_t channels, bool relu, int64_t count,
                            cudaStream_t stream);

// One cached cuFFT plan: the unnormalised 2-D real transform of one image of
// C channels, channels last on both sides (cuda_math::fft_layout), in float
// (or double), forward (r2c) or inverse (c2r), on one device.
struct FftKey {
  int device = 0;
  int64_t channels = 0, height = 0, width = 0;
  bool inverse = false;
  bool double_precision = false;
};

// Returns a work area of `bytes` bytes (called only when the plan needs one),
// which must stay valid until the transform has run on the stream.
using WorkAllocator = void* (*)(std::size_t bytes, void* context);

// Runs the plan (made on first use, then cached) on `stream`, with a work area
// from `allocate(bytes, context)`. A c2r transform overwrites its input.
std::string fft_exec(const FftKey& key, const void* in, void* out, WorkAllocator allocate, void* context,
                     cudaStream_t stream);
// Plans currently cached, and dropping them all (e.g. to give their memory back).
std::size_t fft_plans_cached();
void fft_clear_plans();

}  // namespace cuda
}  // namespace lama_fast
