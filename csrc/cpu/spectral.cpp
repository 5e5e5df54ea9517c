// LaMa's SpectralTransform and FourierUnit as single CPU ops.
//
// lama_fast::spectral_transform(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)
//   y = relu(conv1x1(x, w1) + b1)
//   z = irfft2(relu(conv1x1(rfft2(y) as 2*Ch interleaved (re, im) channels, w_freq) + b_freq))
//   out = conv1x1(y + z, w2) + bias + other, then relu if asked; channels_last.
// lama_fast::fourier_unit(x, w_freq, b_freq, fft_norm) = z computed from x itself.
// (Schemas in csrc/cpu/module.cpp, argument checks in csrc/spectral_args.h.)
//
// Everything runs on channels-last data, where one position's channels are
// contiguous, with the channel-vectorised FFT of csrc/cpu/fft.h:
//
//   1. In chunks of rows: y = relu(x W1^T + b1) (oneDNN), then the real FFT of
//      each row of y along W while the chunk is still in cache. The spectrum
//      is stored column-major, spec[n][kw][h][re(Ch) | im(Ch)], so that one
//      frequency column (all h of one kw) is a contiguous (H, 2*Ch) matrix.
//   2. In groups of columns: complex FFT along H in place, the frequency 1x1
//      conv as one GEMM on the group (oneDNN, bias and ReLU fused; its weight
//      rows and columns permuted to the split (re | im) channel order), then
//      the inverse FFT along H back into the spectrum.
//   3. In chunks of rows: inverse real FFT along W adding y (t = y + z in
//      place), then out = t W2^T + bias (+ other) (relu) straight into the
//      channels-last output.
//
// Sizes with a prime factor the FFT does not plan use ATen's FFT instead;
// the scale of fft_norm is applied where the rows are written (forward) and
// read (inverse). float64 uses the same FFT in double and ATen GEMMs;
// bfloat16 keeps x, y, t and both GEMMs' operands in bfloat16 (float32
// accumulation) and runs the FFTs in float32. The work buffers (y, the
// spectrum, per-thread scratch) are kept between calls.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/List.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "fft.h"
#include "spectral_args.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

// The transform loops are compiled for AVX-512, AVX2 and baseline x86-64 and
// picked at load time; everything they call is force-inlined into them.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LF_MULTIVERSION __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define LF_MULTIVERSION
#endif

namespace lama_fast {
namespace {

// Rows of the GEMM in one chunk of step 1 / one column group of step 2.
constexpr int64_t kChunkPositions = 4096;
constexpr int64_t kGroupPositions = 2048;
// A column transform's working set (input + two scratch buffers) is kept
// under this many bytes by splitting the channels into blocks.
constexpr int64_t kColumnBytes = 640 * 1024;
// Work buffers larger than this are not kept between calls.
constexpr int64_t kMaxCachedBytes = int64_t(512) << 20;

using fft::load;
using fft::store;

// --------------------------------------------------------------------------
// The three transform passes over rows and columns.
// --------------------------------------------------------------------------

// spec layout: element (n, kw, h) at spec + ((n * Wf + kw) * H + h) * 2C,
// real parts first, then the C imaginary parts.
template <typename T, typename S>
struct RowJob {
  const S* src = nullptr;  // forward: the rows of y (or x); inverse: y to add, or null
  S* dst = nullptr;        // inverse: where t = y + z (or z) goes
  T* spec = nullptr;
  int64_t C = 0, H = 0, W = 0, Wf = 0;
  T scale = 1;
  const fft::RealPlan<T>* plan = nullptr;
};

// The real FFTs along W of rows r0 .. r1 (row n * H + h): forward from src
// into the spectrum, or (Inv) inverse from the spectrum into dst, adding src.
template <bool Inv, typename T, typename S>
LF_INLINE void rows_impl(const RowJob<T, S>& job, int64_t r0, int64_t r1, T* sa, T* sb) {
  const int64_t values = job.W * job.C, kstride = job.H * 2 * job.C;
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / job.H, h = row % job.H;
    T* spectrum = job.spec + (n * job.Wf * job.H + h) * 2 * job.C;
    if constexpr (Inv) {
      fft::irfft_row(*job.plan, spectrum, kstride, job.C, job.scale, job.src ? job.src + row * values : nullptr,
                     job.dst + row * values, sa, sb);
    } else {
      fft::rfft_row(*job.plan, job.src + row * values, job.C, job.scale, spectrum, kstride, sa, sb);
    }
  }
}

// Columns g0 .. of spec, each (H, 2C), split into channel blocks of Vb.
// Work item i is column g0 + i / blocks, channel block i % blocks.
template <typename T, typename S>
struct ColumnJob {
  T* spec = nullptr;
  S* group = nullptr;  // (columns of the group, H, 2C): GEMM input (bf16 forward) or output (inverse)
  int64_t C = 0, H = 0, Vb = 0, blocks = 0, g0 = 0;
  const fft::ComplexPlan<T>* plan = nullptr;
};

// Work item i of a column job: its V channels from `col` in the spectrum,
// and from `at` in the group.
template <typename T>
struct ColumnBlock {
  T* col;
  int64_t at, V;
};

template <typename T, typename S>
LF_INLINE ColumnBlock<T> column_block(const ColumnJob<T, S>& job, int64_t i) {
  const int64_t c0 = (i % job.blocks) * job.Vb;
  const int64_t at = (i / job.blocks) * job.H * 2 * job.C + c0;
  return {job.spec + job.g0 * job.H * 2 * job.C + at, at, std::min(job.Vb, job.C - c0)};
}

// The complex FFTs along H of work items i0 .. i1: forward in place in the
// spectrum (for bfloat16 activations, a copy in S to the group: the GEMM's
// input), or (Inv) inverse from the group (the GEMM's output) into the spectrum.
template <bool Inv, typename T, typename S>
LF_INLINE void columns_impl(const ColumnJob<T, S>& job, int64_t i0, int64_t i1, T* sa, T* sb) {
  const int64_t C = job.C, C2 = 2 * C, H = job.H;
  for (int64_t i = i0; i < i1; ++i) {
    const ColumnBlock<T> b = column_block(job, i);
    const int64_t V = b.V;
    if constexpr (std::is_same_v<T, S>) {
      fft::fft_exec<T, Inv>(*job.plan, Inv ? job.group + b.at : b.col, C2, C, b.col, C2, C, V, sa, sb);
    } else if constexpr (!Inv) {
      const T* r = fft::fft_exec<T, false>(*job.plan, b.col, C2, C, nullptr, 0, 0, V, sa, sb);
      S* g = job.group + b.at;
      for (int64_t e = 0; e < H; ++e) {
        const T* re = r + e * 2 * V;
        S* ge = g + e * C2;
        LF_IVDEP
        for (int64_t c = 0; c < V; ++c) {
          ge[c] = store<S>(re[c]);
          ge[c + C] = store<S>(re[c + V]);
        }
      }
    } else {
      const S* g = job.group + b.at;
      for (int64_t e = 0; e < H; ++e) {
        const S* ge = g + e * C2;
        T* de = sa + e * 2 * V;
        LF_IVDEP
        for (int64_t c = 0; c < V; ++c) {
          de[c] = load(ge[c]);
          de[c + V] = load(ge[c + C]);
        }
      }
      fft::fft_exec<T, true>(*job.plan, sa, 2 * V, V, b.col, C2, C, V, sb, sa);
    }
  }
}

// The passes for activations S with transforms in T: entry points compiled
// once per instruction set (see LF_MULTIVERSION).
template <typename T, typename S>
struct Kernels;

#define LF_ENTRY(name, impl, Job, T, S, Inv)                                          \
  LF_MULTIVERSION void name(const Job<T, S>& job, int64_t b, int64_t e, T* sa, T* sb) { \
    impl<Inv, T, S>(job, b, e, sa, sb);                                                 \
  }

#define LF_DEFINE_KERNELS(suffix, T, S)                                        \
  LF_ENTRY(rows_forward_##suffix, rows_impl, RowJob, T, S, false)              \
  LF_ENTRY(rows_inverse_##suffix, rows_impl, RowJob, T, S, true)               \
  LF_ENTRY(columns_forward_##suffix, columns_impl, ColumnJob, T, S, false)     \
  LF_ENTRY(columns_inverse_##suffix, columns_impl, ColumnJob, T, S, true)      \
  template <>                                                                  \
  struct Kernels<T, S> {                                                       \
    static constexpr auto rows_forward = rows_forward_##suffix;                \
    static constexpr auto rows_inverse = rows_inverse_##suffix;                \
    static constexpr auto columns_forward = columns_forward_##suffix;          \
    static constexpr auto columns_inverse = columns_inverse_##suffix;          \
  };

LF_DEFINE_KERNELS(f32, float, float)
LF_DEFINE_KERNELS(f64, double, double)
LF_DEFINE_KERNELS(bf16, float, c10::BFloat16)

#undef LF_DEFINE_KERNELS
#undef LF_ENTRY

// Lets the kernel back a large, not yet touched allocation with 2 MiB pages:
// a fresh output is otherwise mostly page-fault time, and the column-major
// spectrum walks pages fast. Advisory only.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  if (bytes < (int64_t(4) << 20)) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (start + page - 1) / page * page;
  const uintptr_t end = (start + static_cast<uintptr_t>(bytes)) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// --------------------------------------------------------------------------
// Work buffers kept between calls (one set; a concurrent call gets its own).
// --------------------------------------------------------------------------

struct BufferCache {
  std::mutex mutex;
  std::map<std::string, at::Tensor> buffers;
};

BufferCache& buffer_cache() {
  static auto* cache = new BufferCache();
  return *cache;
}

class Workspace {
 public:
  Workspace() : lock_(buffer_cache().mutex, std::try_to_lock) {}

  // A 1-D tensor of at least numel elements; its contents are undefined.
  at::Tensor get(const std::string& role, at::ScalarType dtype, int64_t numel) {
    numel = std::max<int64_t>(numel, 1);
    const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(dtype));
    const auto options = at::TensorOptions().dtype(dtype).device(at::kCPU);
    if (!lock_.owns_lock() || bytes > kMaxCachedBytes) {
      at::Tensor fresh = at::empty({numel}, options);
      advise_huge_pages(fresh);
      return fresh;
    }
    at::Tensor& held = buffer_cache().buffers[role];
    if (!held.defined() || held.scalar_type() != dtype || held.numel() < numel) {
      held = at::Tensor();
      held = at::empty({numel}, options);
      advise_huge_pages(held);
    }
    return held.narrow(0, 0, numel);
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

// --------------------------------------------------------------------------
// 1x1 convolutions on row-major (positions, channels) matrices.
// --------------------------------------------------------------------------

using ScalarList = c10::List<std::optional<at::Scalar>>;
// mkldnn::_convolution_pointwise_.binary: other += conv(X) (+ B), then an
// optional unary op; the one oneDNN entry point that writes into our memory.
using ConvAccumulateFn = at::Tensor&(at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const std::optional<at::Tensor>&, c10::IntArrayRef, c10::IntArrayRef,
                                     c10::IntArrayRef, int64_t, c10::string_view, std::optional<at::Scalar>,
                                     std::optional<c10::string_view>, ScalarList,
                                     std::optional<c10::string_view>);

struct OneDnn {
  bool available = false;
  bool bf16 = false;
  std::optional<c10::TypedOperatorHandle<ConvAccumulateFn>> conv_accumulate;
};

const OneDnn& onednn() {
  static const OneDnn* handles = [] {
    auto* h = new OneDnn();
    try {
      auto op = c10::Dispatcher::singleton().findSchema({"mkldnn::_convolution_pointwise_", "binary"});
      if (at::hasMKLDNN() && op && op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
        h->conv_accumulate = op->typed<ConvAccumulateFn>();
        h->available = true;
#if defined(__GNUC__) && defined(__x86_64__)
        h->bf16 = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512dq");
#endif
      }
    } catch (const std::exception&) {
      h->available = false;
      h->bf16 = false;
    }
    return h;
  }();
  return *handles;
}

bool use_onednn(at::ScalarType dtype) {
  const OneDnn& h = onednn();
  if (dtype == at::kFloat) return h.available;
  if (dtype == at::kBFloat16) return h.available && h.bf16;
  return false;
}

const std::vector<int64_t> kZeros = {0, 0};
const std::vector<int64_t> kOnes = {1, 1};

// (rows, channels) row-major as a channels-last (1, channels, rows, 1) image.
at::Tensor as_image(const at::Tensor& m) {
  return m.view({1, m.size(0), 1, m.size(1)}).permute({0, 3, 1, 2});
}

// out = act(in @ w^T + b [+ init]), written into the preallocated row-major
// `out`; `init` (same shape as out) is added before the activation.
void linear_into(const at::Tensor& in, const at::Tensor& w, const std::optional<at::Tensor>& b, bool relu,
                 at::Tensor out, const at::Tensor* init = nullptr) {
  if (use_onednn(in.scalar_type())) {
    // oneDNN writes into `out` only through its accumulate form: out += conv(in).
    if (init) {
      out.copy_(*init);
    } else {
      out.zero_();
    }
    at::Tensor image = as_image(out);
    onednn().conv_accumulate->call(image, as_image(in), w.view({w.size(0), w.size(1), 1, 1}), b, kZeros, kOnes,
                                   kOnes, 1, "add", std::nullopt,
                                   relu ? std::optional<c10::string_view>("relu") : std::nullopt, ScalarList(),
                                   std::nullopt);
    return;
  }
  if (b.has_value()) {
    at::addmm_out(out, *b, in, w.t());
  } else {
    at::mm_out(out, in, w.t());
  }
  if (init) out.add_(*init);
  if (relu) out.clamp_min_(0);
}

// A new channels-last (N, C, H, W) tensor.
at::Tensor new_output(int64_t N, int64_t C, int64_t H, int64_t W, const at::TensorOptions& options) {
  at::Tensor out = at::empty({N, C, H, W}, options.memory_format(at::MemoryFormat::ChannelsLast));
  advise_huge_pages(out);
  return out;
}

// The last 1x1 conv: t (N, Ch, H, W) channels-last -> a new channels-last output.
at::Tensor final_conv(const at::Tensor& t, const at::Tensor& w2, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& other, bool relu) {
  const int64_t N = t.size(0), Ch = t.size(1), H = t.size(2), W = t.size(3), Cout = w2.size(0);
  at::Tensor out = new_output(N, Cout, H, W, t.options());
  at::Tensor other2d;
  if (other.has_value()) other2d = other->permute({0, 2, 3, 1}).reshape({N * H * W, Cout});
  linear_into(t.permute({0, 2, 3, 1}).reshape({N * H * W, Ch}), w2, bias, relu,
              out.permute({0, 2, 3, 1}).view({N * H * W, Cout}), other.has_value() ? &other2d : nullptr);
  return out;
}

// --------------------------------------------------------------------------
// The pipeline
// --------------------------------------------------------------------------

// w_freq and b_freq with rows and columns in the split channel order (the C
// real parts, then the C imaginary parts) instead of LaMa's interleaved one
// (channel 2c real, 2c + 1 imaginary). Both inputs are contiguous.
template <typename S>
std::pair<at::Tensor, at::Tensor> split_order(const at::Tensor& w, const at::Tensor& b, int64_t C) {
  const int64_t C2 = 2 * C;
  at::Tensor wq = at::empty({C2, C2}, w.options());
  at::Tensor bq = at::empty({C2}, b.options());
  const S* wsrc = w.data_ptr<S>();
  const S* bsrc = b.data_ptr<S>();
  S* wdst = wq.data_ptr<S>();
  S* bdst = bq.data_ptr<S>();
  for (int64_t j = 0; j < C; ++j) {
    bdst[j] = bsrc[2 * j];
    bdst[C + j] = bsrc[2 * j + 1];
  }
  at::parallel_for(0, C2, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const S* row = wsrc + (i < C ? 2 * i : 2 * (i - C) + 1) * C2;
      S* out = wdst + i * C2;
      for (int64_t j = 0; j < C; ++j) {
        out[j] = row[2 * j];
        out[C + j] = row[2 * j + 1];
      }
    }
  });
  return {wq, bq};
}

// x: channels-last (see run()).
template <typename T, typename S>
at::Tensor run_pipeline(const args::SpectralArgs& pb) {
  using K = Kernels<T, S>;
  const args::Dims& d = pb.d;
  const int64_t N = d.N, C = d.C, C2 = 2 * C, H = d.H, W = d.W, Wf = W / 2 + 1;
  const int64_t rows = N * H;
  const at::ScalarType acc_dtype = c10::CppTypeToScalarType<T>::value;
  const at::ScalarType dtype = c10::CppTypeToScalarType<S>::value;

  const auto rplan = fft::real_plan<T>(W);
  const auto cplan = fft::complex_plan<T>(H);
  const auto scales = args::norm_scales(pb.norm, H, W);

  Workspace ws;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t scratch_len = std::max<int64_t>(W + 1, H) * C2;
  at::Tensor scratch = ws.get("scratch", acc_dtype, threads * 2 * scratch_len);
  T* scratch_ptr = scratch.data_ptr<T>();
  // Runs kernel(job, b, e, scratch) over [begin, end) on the threads, each with its own scratch.
  auto in_parallel = [&](auto kernel, const auto& job, int64_t begin, int64_t end) {
    at::parallel_for(begin, end, 1, [&](int64_t b, int64_t e) {
      T* s = scratch_ptr + std::min<int64_t>(at::get_thread_num(), threads - 1) * 2 * scratch_len;
      kernel(job, b, e, s, s + scratch_len);
    });
  };
  at::Tensor spec = ws.get("spec", acc_dtype, N * Wf * H * C2);

  // 1. y and the forward transforms of its rows.
  RowJob<T, S> fwd{nullptr, nullptr, spec.data_ptr<T>(), C, H, W, Wf, static_cast<T>(scales.first), rplan.get()};
  at::Tensor y;  // (N * H * W, C) row-major
  const int64_t chunk = std::max<int64_t>(1, kChunkPositions / W);
  if (pb.fourier_only) {
    fwd.src = pb.x.data_ptr<S>();
    in_parallel(K::rows_forward, fwd, 0, rows);
  } else {
    y = ws.get("y", dtype, rows * W * C).view({rows * W, C});
    const at::Tensor x2d = pb.x.permute({0, 2, 3, 1}).reshape({rows * W, d.Cin});
    fwd.src = y.data_ptr<S>();
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t r1 = std::min(rows, r0 + chunk);
      linear_into(x2d.narrow(0, r0 * W, (r1 - r0) * W), pb.w1, pb.b1, true, y.narrow(0, r0 * W, (r1 - r0) * W));
      in_parallel(K::rows_forward, fwd, r0, r1);
    }
  }

  // 2. Per group of frequency columns: FFT along H, the frequency conv, inverse FFT.
  {
    const auto split = split_order<S>(pb.w_freq, pb.b_freq, C);
    const at::Tensor& wq = split.first;
    const at::Tensor& bq = split.second;
    const int64_t columns = N * Wf;
    const int64_t group = std::min(columns, std::max<int64_t>(1, kGroupPositions / H));
    at::Tensor mbuf = ws.get("m", dtype, group * H * C2);
    at::Tensor gin;  // the GEMM input of a group when it is not the spectrum itself
    if constexpr (!std::is_same_v<T, S>) gin = ws.get("g", dtype, group * H * C2);
    int64_t Vb = C;
    const int64_t column_bytes = 3 * H * 2 * static_cast<int64_t>(sizeof(T));
    if (column_bytes * C > kColumnBytes) {
      Vb = std::max<int64_t>(16, (kColumnBytes / column_bytes) / 16 * 16);
      Vb = std::min(Vb, C);
    }
    const int64_t blocks = (C + Vb - 1) / Vb;
    for (int64_t g0 = 0; g0 < columns; g0 += group) {
      const int64_t count = std::min(group, columns - g0);
      ColumnJob<T, S> cj{spec.data_ptr<T>(), nullptr, C, H, Vb, blocks, g0, cplan.get()};
      at::Tensor src2d;
      if constexpr (std::is_same_v<T, S>) {
        src2d = spec.narrow(0, g0 * H * C2, count * H * C2).view({count * H, C2});
      } else {
        cj.group = gin.data_ptr<S>();
        src2d = gin.narrow(0, 0, count * H * C2).view({count * H, C2});
      }
      in_parallel(K::columns_forward, cj, 0, count * blocks);
      at::Tensor m2d = mbuf.narrow(0, 0, count * H * C2).view({count * H, C2});
      linear_into(src2d, wq, bq, true, m2d);
      cj.group = mbuf.data_ptr<S>();
      in_parallel(K::columns_inverse, cj, 0, count * blocks);
    }
  }

  // 3. Inverse transforms of the rows: t = y + z (or z alone), then the last conv.
  RowJob<T, S> inv{nullptr, nullptr, spec.data_ptr<T>(), C, H, W, Wf, static_cast<T>(scales.second), rplan.get()};
  if (pb.fourier_only) {
    at::Tensor out = new_output(N, C, H, W, pb.x.options());
    inv.dst = out.data_ptr<S>();
    in_parallel(K::rows_inverse, inv, 0, rows);
    return out;
  }
  inv.src = y.data_ptr<S>();
  inv.dst = y.data_ptr<S>();
  const int64_t Cout = d.Cout;
  at::Tensor out = new_output(N, Cout, H, W, pb.x.options());
  const at::Tensor out2d = out.permute({0, 2, 3, 1}).view({rows * W, Cout});
  at::Tensor other2d;
  if (pb.other.has_value()) {
    other2d = pb.other->contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({rows * W, Cout});
  }
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    in_parallel(K::rows_inverse, inv, r0, r1);
    const int64_t p0 = r0 * W, np = (r1 - r0) * W;
    const at::Tensor init = other2d.defined() ? other2d.narrow(0, p0, np) : at::Tensor();
    linear_into(y.narrow(0, p0, np), pb.w2, pb.bias, pb.relu, out2d.narrow(0, p0, np),
                other2d.defined() ? &init : nullptr);
  }
  return out;
}

// Sizes the FFT does not plan: the same math with ATen's FFT.
at::Tensor run_aten(const args::SpectralArgs& pb) {
  const args::Dims& d = pb.d;
  const int64_t N = d.N, C = d.C, H = d.H, W = d.W, Wf = W / 2 + 1;
  const auto dtype = pb.x.scalar_type();
  const auto fft_dtype = dtype == at::kBFloat16 ? at::kFloat : dtype;
  const char* norm = pb.norm == args::Norm::Ortho ? "ortho" : (pb.norm == args::Norm::Forward ? "forward" : "backward");
  const at::Tensor x = pb.x.permute({0, 2, 3, 1});  // (N, H, W, Cin)
  at::Tensor y;
  if (pb.fourier_only) {
    y = x;
  } else {
    y = at::empty({N * H * W, C}, x.options());
    linear_into(x.reshape({N * H * W, d.Cin}), pb.w1, pb.b1, true, y);
    y = y.view({N, H, W, C});
  }
  const at::Tensor s = at::fft_rfft2(y.to(fft_dtype), std::nullopt, {1, 2}, norm);  // (N, H, Wf, C)
  const at::Tensor s2d = at::view_as_real(s).reshape({N * H * Wf, 2 * C}).to(dtype).contiguous();
  at::Tensor m = at::empty({N * H * Wf, 2 * C}, y.options());
  linear_into(s2d, pb.w_freq, pb.b_freq, true, m);
  const at::Tensor mc = at::view_as_complex(m.to(fft_dtype).view({N, H, Wf, C, 2}));
  const at::Tensor z = at::fft_irfft2(mc, c10::IntArrayRef({H, W}), {1, 2}, norm);  // (N, H, W, C)
  if (pb.fourier_only) return z.to(dtype).permute({0, 3, 1, 2}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor t = (y.to(fft_dtype) + z).to(dtype).contiguous().permute({0, 3, 1, 2});
  return final_conv(t, pb.w2, pb.bias, pb.other, pb.relu);
}

// The implementation of the ops on CPU tensors (args::Entry).
struct CpuOps {
  static constexpr const char* kSpectralTransform = "spectral_transform";
  static constexpr const char* kFourierUnit = "fourier_unit";

  static void check_x(const char* op, const at::Tensor& x) {
    args::check_x(op, x, c10::DeviceType::CPU, {at::kFloat, at::kDouble, at::kBFloat16},
                  "torch.float32, torch.float64 or torch.bfloat16");
  }

  static at::Tensor run(args::SpectralArgs pb) {
    // The op has no autograd formula; the ATen calls below see plain tensors.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const args::Dims& d = pb.d;
    if (d.N == 0) {
      return at::empty({d.N, d.Cout, d.H, d.W}, pb.x.options().memory_format(at::MemoryFormat::ChannelsLast));
    }
    // (N, C, H, W) with channels-last memory; no copy when x already is.
    pb.x = pb.x.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
    const bool own_fft = fft::fft_friendly(d.H) && fft::fft_friendly(d.W % 2 == 0 ? d.W / 2 : d.W);
    if (!own_fft) return run_aten(pb);
    switch (pb.x.scalar_type()) {
      case at::kFloat:
        return run_pipeline<float, float>(pb);
      case at::kDouble:
        return run_pipeline<double, double>(pb);
      case at::kBFloat16:
        return run_pipeline<float, c10::BFloat16>(pb);
      default:
        TORCH_CHECK(false, "lama_fast: unsupported dtype ", args::dtype_name(pb.x.scalar_type()));
    }
  }
};

}  // namespace
}  // namespace lama_fast

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("spectral_transform", &lama_fast::args::Entry<lama_fast::CpuOps>::spectral_transform);
  m.impl("fourier_unit", &lama_fast::args::Entry<lama_fast::CpuOps>::fourier_unit);
}
