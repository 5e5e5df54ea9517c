// cuFFT plans of the CUDA spectral transform: one per (device, C, H, W,
// direction, precision), made once and cached. Each plan is a batch of C
// unnormalised 2-D real transforms laid out channels last on both sides
// (cuda_math::fft_layout), so the transforms read and write the op's
// tensors where they lie. Plans own no work area: the caller passes one
// (from PyTorch's caching allocator) for every execution, which keeps the
// memory in PyTorch's pools, CUDA-graph pools included.
//
// CUDA graphs: making a plan allocates device memory and uploads twiddles,
// which a stream capture cannot record, so a plan missing while the stream
// captures is an error (the op must run once with that shape first). A plan
// used while the stream captures is pinned: a graph replays its launches for
// as long as the graph lives, so the cache never destroys it.
#include <cuda_runtime.h>
#include <cufft.h>

#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "cuda/spectral_cuda.h"
#include "cuda/spectral_device.h"

namespace lama_fast {
namespace cuda {
namespace {

// A plan holds little device memory (no work area): keep many. Pinned plans
// count toward the limit but are never evicted: past it with only pinned
// plans left to drop, the cache grows.
constexpr std::size_t kMaxPlans = 1024;

struct Plan {
  FftKey key;
  cufftHandle handle = 0;
  std::size_t work_bytes = 0;
  bool pinned = false;  // used during a stream capture: kept for the process's life
};

bool same_key(const FftKey& a, const FftKey& b) {
  return std::tie(a.device, a.channels, a.height, a.width, a.inverse, a.double_precision) ==
         std::tie(b.device, b.channels, b.height, b.width, b.inverse, b.double_precision);
}

const char* cufft_error_name(cufftResult r) {
  switch (r) {
    case CUFFT_SUCCESS:
      return "CUFFT_SUCCESS";
    case CUFFT_INVALID_PLAN:
      return "CUFFT_INVALID_PLAN";
    case CUFFT_ALLOC_FAILED:
      return "CUFFT_ALLOC_FAILED";
    case CUFFT_INVALID_VALUE:
      return "CUFFT_INVALID_VALUE";
    case CUFFT_INTERNAL_ERROR:
      return "CUFFT_INTERNAL_ERROR";
    case CUFFT_EXEC_FAILED:
      return "CUFFT_EXEC_FAILED";
    case CUFFT_SETUP_FAILED:
      return "CUFFT_SETUP_FAILED";
    case CUFFT_INVALID_SIZE:
      return "CUFFT_INVALID_SIZE";
    case CUFFT_NOT_SUPPORTED:
      return "CUFFT_NOT_SUPPORTED";
    default:
      return "cuFFT error";
  }
}

std::string describe(const FftKey& k) {
  return std::string(k.inverse ? "c2r" : "r2c") + (k.double_precision ? " (double)" : " (float)") + " of " +
         std::to_string(k.channels) + " channels of " + std::to_string(k.height) + "x" + std::to_string(k.width) +
         " on cuda:" + std::to_string(k.device);
}

std::string failed(const char* call, cufftResult r, const FftKey& k) {
  return std::string(call) + " failed with " + cufft_error_name(r) + " (" + std::to_string(static_cast<int>(r)) +
         ") for the " + describe(k);
}

// Most recently used first.
std::list<Plan>& plans() {
  static std::list<Plan> cache;
  return cache;
}

std::mutex& plans_mutex() {
  static std::mutex m;
  return m;
}

cufftType type_of(const FftKey& k) {
  if (k.double_precision) return k.inverse ? CUFFT_Z2D : CUFFT_D2Z;
  return k.inverse ? CUFFT_C2R : CUFFT_R2C;
}

// Plans kept before the least recently used unpinned ones are destroyed.
std::size_t& plan_limit() {
  static std::size_t limit = kMaxPlans;
  return limit;
}

// Destroys the least recently used unpinned plans, never one of the first
// `keep` (most recently used), until at most plan_limit() remain or none of the
// rest is unpinned. Called with plans_mutex() held.
void trim(std::list<Plan>& cache, std::size_t keep) {
  std::size_t index = cache.size();
  auto it = cache.end();
  while (cache.size() > plan_limit() && index > keep) {
    --it;
    --index;
    if (!it->pinned) {
      cufftDestroy(it->handle);
      it = cache.erase(it);
    }
  }
}

// The cached plan for `key`, moved to the front, or null; called with plans_mutex() held.
Plan* cached_plan(const FftKey& key) {
  auto& cache = plans();
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (same_key(it->key, key)) {
      cache.splice(cache.begin(), cache, it);
      return &cache.front();
    }
  }
  return nullptr;
}

// Makes the plan for `key` and caches it in front; called with plans_mutex() held.
std::string make_plan(const FftKey& key, Plan** made) {
  int current = 0;
  cudaError_t cerr = cudaGetDevice(&current);
  if (cerr != cudaSuccess) return std::string("cudaGetDevice failed: ") + cudaGetErrorString(cerr);
  if (current != key.device) {
    return "the cuFFT plan for the " + describe(key) + " must be made with that device current, not cuda:" +
           std::to_string(current);
  }
  const cuda_math::FftLayout l = cuda_math::fft_layout(key.channels, key.height, key.width, key.inverse);
  long long n[2] = {l.n[0], l.n[1]};
  long long inembed[2] = {l.inembed[0], l.inembed[1]};
  long long onembed[2] = {l.onembed[0], l.onembed[1]};
  Plan plan;
  plan.key = key;
  cufftResult r = cufftCreate(&plan.handle);
  if (r != CUFFT_SUCCESS) return failed("cufftCreate", r, key);
  r = cufftSetAutoAllocation(plan.handle, 0);
  if (r == CUFFT_SUCCESS) {
    r = cufftMakePlanMany64(plan.handle, 2, n, inembed, l.istride, l.idist, onembed, l.ostride, l.odist,
                            type_of(key), l.batch, &plan.work_bytes);
    if (r != CUFFT_SUCCESS) {
      cufftDestroy(plan.handle);
      return failed("cufftMakePlanMany64", r, key);
    }
  } else {
    cufftDestroy(plan.handle);
    return failed("cufftSetAutoAllocation", r, key);
  }
  auto& cache = plans();
  cache.push_front(plan);
  trim(cache, 1);
  *made = &cache.front();
  return std::string();
}

FftPlanCache cache_state() {
  FftPlanCache state;
  state.limit = plan_limit();
  for (const Plan& plan : plans()) {
    ++state.cached;
    if (plan.pinned) ++state.pinned;
  }
  return state;
}

}  // namespace

std::string fft_exec(const FftKey& key, const void* in, void* out, WorkAllocator allocate, void* context,
                     cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const cudaError_t cerr = cudaStreamIsCapturing(stream, &capture);
  if (cerr != cudaSuccess) {
    cudaGetLastError();  // not left for a later launch check to report
    return std::string("cudaStreamIsCapturing failed: ") + cudaGetErrorString(cerr) + " for the " + describe(key);
  }
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  // The handle's stream and work area are set and used under the lock, so two
  // threads sharing a plan cannot swap them between setting and launching.
  std::lock_guard<std::mutex> lock(plans_mutex());
  Plan* plan = cached_plan(key);
  if (plan == nullptr) {
    if (capturing) {
      return "the cuFFT plan for the " + describe(key) +
             " is made on first use, which cannot happen inside CUDA-graph capture: call the op once with this "
             "shape and dtype before capturing";
    }
    std::string error = make_plan(key, &plan);
    if (!error.empty()) return error;
  }
  if (capturing) plan->pinned = true;
  cufftResult r = cufftSetStream(plan->handle, stream);
  if (r != CUFFT_SUCCESS) return failed("cufftSetStream", r, key);
  if (plan->work_bytes > 0) {
    void* work = allocate(plan->work_bytes, context);
    if (work == nullptr) return "no work area of " + std::to_string(plan->work_bytes) + " bytes for the " + describe(key);
    r = cufftSetWorkArea(plan->handle, work);
    if (r != CUFFT_SUCCESS) return failed("cufftSetWorkArea", r, key);
  }
  void* src = const_cast<void*>(in);
  if (key.double_precision) {
    r = key.inverse ? cufftExecZ2D(plan->handle, static_cast<cufftDoubleComplex*>(src), static_cast<cufftDoubleReal*>(out))
                    : cufftExecD2Z(plan->handle, static_cast<cufftDoubleReal*>(src), static_cast<cufftDoubleComplex*>(out));
  } else {
    r = key.inverse ? cufftExecC2R(plan->handle, static_cast<cufftComplex*>(src), static_cast<cufftReal*>(out))
                    : cufftExecR2C(plan->handle, static_cast<cufftReal*>(src), static_cast<cufftComplex*>(out));
  }
  if (r != CUFFT_SUCCESS) return failed(key.inverse ? "cufftExec (c2r)" : "cufftExec (r2c)", r, key);
  return std::string();
}

FftPlanCache fft_plan_cache() {
  std::lock_guard<std::mutex> lock(plans_mutex());
  return cache_state();
}

FftPlanCache fft_set_plan_limit(std::size_t limit) {
  std::lock_guard<std::mutex> lock(plans_mutex());
  plan_limit() = limit;
  trim(plans(), 0);
  return cache_state();
}

void fft_clear_plans() {
  std::lock_guard<std::mutex> lock(plans_mutex());
  auto& cache = plans();
  for (auto it = cache.begin(); it != cache.end();) {
    if (it->pinned) {
      ++it;
    } else {
      cufftDestroy(it->handle);
      it = cache.erase(it);
    }
  }
}

}  // namespace cuda
}  // namespace lama_fast
