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

// Runs one element-wise step of the pipeline (cuda_math::Step, with its
// arguments and count in `args`) for activations of `dtype` on `stream`.
std::string elementwise(cuda_math::Step step, cuda_math::DType dtype, const cuda_math::StepArgs& args,
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
// from `allocate(bytes, context)`. A c2r transform overwrites its input. While
// `stream` is capturing a CUDA graph, a plan not yet cached is an error (made
// outside the capture only) and the plan used is pinned: never destroyed.
std::string fft_exec(const FftKey& key, const void* in, void* out, WorkAllocator allocate, void* context,
                     cudaStream_t stream);

// The plan cache: its limit (1024 unless set), the plans in it, and how many of
// them are pinned. Beyond the limit the least recently used unpinned plans are
// destroyed (never the one just made); pinned ones count but stay.
struct FftPlanCache {
  std::size_t limit = 0, cached = 0, pinned = 0;
};
FftPlanCache fft_plan_cache();
// Sets the limit, destroying unpinned plans above it at once.
FftPlanCache fft_set_plan_limit(std::size_t limit);
// Destroys every unpinned plan (e.g. to give their memory back).
void fft_clear_plans();

}  // namespace cuda
}  // namespace lama_fast
