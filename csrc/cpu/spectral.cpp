// LaMa's SpectralTransform and FourierUnit as single CPU ops.
//
// lama_fast::spectral_transform(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)
//   y = relu(conv1x1(x, w1) + b1)
//   z = irfft2(relu(conv1x1(rfft2(y) as 2*Ch interleaved (re, im) channels, w_freq) + b_freq))
//   out = conv1x1(y + z, w2) + bias + other, then relu if asked; channels_last.
// lama_fast::fourier_unit(x, w_freq, b_freq, fft_norm) = z computed from x itself.
// lama_fast::spectral_transform_masked / fourier_unit_masked: the same output
//   (the same code, bit for bit) and a uint8 tensor of the ReLU masks that
//   the backward needs, one bit per element: [y > 0], [Z > 0] (Z the
//   frequency conv's output) and, with relu, [out > 0]. Layout: whole bytes
//   per image row (y, out) and per frequency column (Z), in that order, as
//   csrc/cpu/spectral_masks.h says; the Z bits are in the pipeline's split
//   channel order (the ATen path: LaMa's interleaved one).
// lama_fast::spectral_transform_backward(grad, masks, w1, w_freq, w2, relu,
//   fft_norm) -> (grad_x, grad_out_masked) and fourier_unit_backward(grad,
//   masks, w_freq, fft_norm) -> grad_x: the gradient with respect to x (and
//   grad_out_masked = grad where out > 0, the gradient of bias and other),
//   float32 and float64, by the same three passes run backwards (see "The
//   backward" below).
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
#include "spectral_masks.h"

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
  // Optional ReLU bits of the rows (row r at bits + r * bits_row, see
  // spectral_masks.h): forward, the bits of src are written there; inverse,
  // dst is zeroed where they are clear.
  uint8_t* bits = nullptr;
  int64_t bits_row = 0;
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
      S* out = job.dst + row * values;
      fft::irfft_row(*job.plan, spectrum, kstride, job.C, job.scale, job.src ? job.src + row * values : nullptr,
                     out, sa, sb);
      if (job.bits) masks::select(out, job.bits + row * job.bits_row, values, out);
    } else {
      const S* in = job.src + row * values;
      if (job.bits) masks::pack(in, values, job.bits + row * job.bits_row);
      fft::rfft_row(*job.plan, in, job.C, job.scale, spectrum, kstride, sa, sb);
    }
  }
}

// Rows r0 .. r1 of `count` elements each (row r at src + r * stride) and
// their bits (row r at bits + r * bits_row): pack writes the bits of src;
// select writes src where the bit is set, else 0, to dst (same strides as
// src; dst may be src).
template <typename S>
struct MaskJob {
  const S* src = nullptr;
  S* dst = nullptr;
  int64_t stride = 0, count = 0;
  uint8_t* bits = nullptr;
  int64_t bits_row = 0;
};

template <bool Select, typename S>
LF_INLINE void mask_rows_impl(const MaskJob<S>& job, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    if constexpr (Select) {
      masks::select(job.src + r * job.stride, job.bits + r * job.bits_row, job.count, job.dst + r * job.stride);
    } else {
      masks::pack(job.src + r * job.stride, job.count, job.bits + r * job.bits_row);
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

#define LF_MASK_ENTRY(name, S, Select)                                   \
  LF_MULTIVERSION void name(const MaskJob<S>& job, int64_t b, int64_t e) { \
    mask_rows_impl<Select, S>(job, b, e);                                  \
  }

#define LF_DEFINE_KERNELS(suffix, T, S)                                        \
  LF_ENTRY(rows_forward_##suffix, rows_impl, RowJob, T, S, false)              \
  LF_ENTRY(rows_inverse_##suffix, rows_impl, RowJob, T, S, true)               \
  LF_ENTRY(columns_forward_##suffix, columns_impl, ColumnJob, T, S, false)     \
  LF_ENTRY(columns_inverse_##suffix, columns_impl, ColumnJob, T, S, true)      \
  LF_MASK_ENTRY(pack_rows_##suffix, S, false)                                  \
  LF_MASK_ENTRY(select_rows_##suffix, S, true)                                 \
  template <>                                                                  \
  struct Kernels<T, S> {                                                       \
    static constexpr auto rows_forward = rows_forward_##suffix;                \
    static constexpr auto rows_inverse = rows_inverse_##suffix;                \
    static constexpr auto columns_forward = columns_forward_##suffix;          \
    static constexpr auto columns_inverse = columns_inverse_##suffix;          \
    static constexpr auto pack_rows = pack_rows_##suffix;                      \
    static constexpr auto select_rows = select_rows_##suffix;                  \
  };

LF_DEFINE_KERNELS(f32, float, float)
LF_DEFINE_KERNELS(f64, double, double)
LF_DEFINE_KERNELS(bf16, float, c10::BFloat16)

#undef LF_DEFINE_KERNELS
#undef LF_MASK_ENTRY
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
// `out`; `init` (same shape as out) is added before the activation. With
// `accumulate`, out = act(out + in @ w^T + b): out already holds the addend.
void linear_into(const at::Tensor& in, const at::Tensor& w, const std::optional<at::Tensor>& b, bool relu,
                 at::Tensor out, const at::Tensor* init = nullptr, bool accumulate = false) {
  if (use_onednn(in.scalar_type())) {
    // oneDNN writes into `out` only through its accumulate form: out += conv(in).
    if (init) {
      out.copy_(*init);
    } else if (!accumulate) {
      out.zero_();
    }
    at::Tensor image = as_image(out);
    onednn().conv_accumulate->call(image, as_image(in), w.view({w.size(0), w.size(1), 1, 1}), b, kZeros, kOnes,
                                   kOnes, 1, "add", std::nullopt,
                                   relu ? std::optional<c10::string_view>("relu") : std::nullopt, ScalarList(),
                                   std::nullopt);
    return;
  }
  if (accumulate) {
    out.addmm_(in, w.t());
    if (b.has_value()) out.add_(*b);
  } else if (b.has_value()) {
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

// The rows [begin, end) of a mask job on the threads, about 64 Ki elements a task.
template <typename Kernel, typename S>
void over_rows(Kernel kernel, const MaskJob<S>& job, int64_t begin, int64_t end) {
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, job.count));
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { kernel(job, b, e); });
}

// pack_rows / select_rows on `rows` rows of `count` elements of a contiguous
// tensor (select: in place).
void pack_tensor(const at::Tensor& t, int64_t rows, int64_t count, uint8_t* bits, int64_t bits_row) {
  switch (t.scalar_type()) {
    case at::kFloat:
      over_rows(Kernels<float, float>::pack_rows, MaskJob<float>{t.data_ptr<float>(), nullptr, count, count, bits,
                                                                 bits_row},
                0, rows);
      break;
    case at::kDouble:
      over_rows(Kernels<double, double>::pack_rows,
                MaskJob<double>{t.data_ptr<double>(), nullptr, count, count, bits, bits_row}, 0, rows);
      break;
    case at::kBFloat16:
      over_rows(Kernels<float, c10::BFloat16>::pack_rows,
                MaskJob<c10::BFloat16>{t.data_ptr<c10::BFloat16>(), nullptr, count, count, bits, bits_row}, 0, rows);
      break;
    default:
      TORCH_CHECK(false, "lama_fast: unsupported dtype ", args::dtype_name(t.scalar_type()));
  }
}

template <typename T>
void select_tensor(at::Tensor& t, int64_t rows, int64_t count, const uint8_t* bits, int64_t bits_row) {
  T* p = t.data_ptr<T>();
  over_rows(Kernels<T, T>::select_rows, MaskJob<T>{p, p, count, count, const_cast<uint8_t*>(bits), bits_row}, 0,
            rows);
}

// What the passes of one call share: the FFT plans and scales, the spectrum
// and the threads' scratch (work buffers of `ws`); run() runs a pass's
// kernel(job, b, e, scratch) over [begin, end) on the threads, each with its
// own scratch.
template <typename T>
struct Passes {
  Passes(Workspace& ws, args::Norm norm, int64_t N, int64_t C, int64_t H, int64_t W)
      : rplan(fft::real_plan<T>(W)),
        cplan(fft::complex_plan<T>(H)),
        scales(args::norm_scales(norm, H, W)),
        threads(std::max<int64_t>(1, at::get_num_threads())),
        scratch_len(std::max<int64_t>(W + 1, H) * 2 * C),
        scratch(ws.get("scratch", c10::CppTypeToScalarType<T>::value, threads * 2 * scratch_len)),
        spec(ws.get("spec", c10::CppTypeToScalarType<T>::value, N * (W / 2 + 1) * H * 2 * C)),
        column_block(column_block_of(C, H)) {}

  // Channels per task of the column passes: all C, unless three columns of
  // H complex values per channel would not fit in kColumnBytes (then a
  // multiple of 16 that does, at least 16).
  static int64_t column_block_of(int64_t C, int64_t H) {
    const int64_t column_bytes = 3 * H * 2 * static_cast<int64_t>(sizeof(T));
    if (column_bytes * C <= kColumnBytes) return C;
    return std::min(C, std::max<int64_t>(16, (kColumnBytes / column_bytes) / 16 * 16));
  }

  template <typename Kernel, typename Job>
  void run(Kernel kernel, const Job& job, int64_t begin, int64_t end) const {
    T* base = scratch.data_ptr<T>();
    at::parallel_for(begin, end, 1, [&](int64_t b, int64_t e) {
      T* s = base + std::min<int64_t>(at::get_thread_num(), threads - 1) * 2 * scratch_len;
      kernel(job, b, e, s, s + scratch_len);
    });
  }

  decltype(fft::real_plan<T>(1)) rplan;
  decltype(fft::complex_plan<T>(1)) cplan;
  std::pair<double, double> scales;
  int64_t threads, scratch_len;
  at::Tensor scratch, spec;
  int64_t column_block;
};

// x: channels-last (see run()). With `masks` (the op's mask layout, see
// spectral_masks.h) the ReLU bits are written there too; the output does
// not depend on it.
template <typename T, typename S>
at::Tensor run_pipeline(const args::SpectralArgs& pb, uint8_t* masks) {
  using K = Kernels<T, S>;
  const args::Dims& d = pb.d;
  const int64_t N = d.N, C = d.C, C2 = 2 * C, H = d.H, W = d.W, Wf = W / 2 + 1;
  const int64_t rows = N * H;
  const at::ScalarType dtype = c10::CppTypeToScalarType<S>::value;
  const masks::MaskLayout lay = masks::mask_layout(N, C, d.Cout, H, W, pb.relu, pb.fourier_only);

  Workspace ws;
  const Passes<T> passes(ws, pb.norm, N, C, H, W);
  const auto scales = passes.scales;
  const at::Tensor& spec = passes.spec;

  // 1. y and the forward transforms of its rows.
  RowJob<T, S> fwd{nullptr, nullptr, spec.data_ptr<T>(), C, H, W, Wf, static_cast<T>(scales.first),
                   passes.rplan.get()};
  at::Tensor y;  // (N * H * W, C) row-major
  const int64_t chunk = std::max<int64_t>(1, kChunkPositions / W);
  if (pb.fourier_only) {
    fwd.src = pb.x.data_ptr<S>();
    passes.run(K::rows_forward, fwd, 0, rows);
  } else {
    y = ws.get("y", dtype, rows * W * C).view({rows * W, C});
    const at::Tensor x2d = pb.x.permute({0, 2, 3, 1}).reshape({rows * W, d.Cin});
    fwd.src = y.data_ptr<S>();
    if (masks) {
      fwd.bits = masks + lay.y_offset;
      fwd.bits_row = lay.y_row;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t r1 = std::min(rows, r0 + chunk);
      linear_into(x2d.narrow(0, r0 * W, (r1 - r0) * W), pb.w1, pb.b1, true, y.narrow(0, r0 * W, (r1 - r0) * W));
      passes.run(K::rows_forward, fwd, r0, r1);
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
    const int64_t Vb = passes.column_block;
    const int64_t blocks = (C + Vb - 1) / Vb;
    for (int64_t g0 = 0; g0 < columns; g0 += group) {
      const int64_t count = std::min(group, columns - g0);
      ColumnJob<T, S> cj{spec.data_ptr<T>(), nullptr, C, H, Vb, blocks, g0, passes.cplan.get()};
      at::Tensor src2d;
      if constexpr (std::is_same_v<T, S>) {
        src2d = spec.narrow(0, g0 * H * C2, count * H * C2).view({count * H, C2});
      } else {
        cj.group = gin.data_ptr<S>();
        src2d = gin.narrow(0, 0, count * H * C2).view({count * H, C2});
      }
      passes.run(K::columns_forward, cj, 0, count * blocks);
      at::Tensor m2d = mbuf.narrow(0, 0, count * H * C2).view({count * H, C2});
      linear_into(src2d, wq, bq, true, m2d);
      if (masks) {
        const MaskJob<S> zj{mbuf.data_ptr<S>(), nullptr, H * C2, H * C2, masks + lay.z_offset + g0 * lay.z_col,
                            lay.z_col};
        over_rows(K::pack_rows, zj, 0, count);
      }
      cj.group = mbuf.data_ptr<S>();
      passes.run(K::columns_inverse, cj, 0, count * blocks);
    }
  }

  // 3. Inverse transforms of the rows: t = y + z (or z alone), then the last conv.
  RowJob<T, S> inv{nullptr, nullptr, spec.data_ptr<T>(), C, H, W, Wf, static_cast<T>(scales.second),
                   passes.rplan.get()};
  if (pb.fourier_only) {
    at::Tensor out = new_output(N, C, H, W, pb.x.options());
    inv.dst = out.data_ptr<S>();
    passes.run(K::rows_inverse, inv, 0, rows);
    return out;
  }
  inv.src = y.data_ptr<S>();
  inv.dst = y.data_ptr<S>();
  const int64_t Cout = d.Cout;
  // spectral_transform_into: `other` is the output, and already holds the addend.
  at::Tensor out = pb.into_other ? *pb.other : new_output(N, Cout, H, W, pb.x.options());
  const at::Tensor out2d = out.permute({0, 2, 3, 1}).view({rows * W, Cout});
  at::Tensor other2d;
  if (pb.other.has_value() && !pb.into_other) {
    other2d = pb.other->contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({rows * W, Cout});
  }
  const MaskJob<S> oj{out.data_ptr<S>(), nullptr, W * Cout, W * Cout, masks ? masks + lay.out_offset : nullptr,
                      lay.out_row};
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    passes.run(K::rows_inverse, inv, r0, r1);
    const int64_t p0 = r0 * W, np = (r1 - r0) * W;
    const at::Tensor init = other2d.defined() ? other2d.narrow(0, p0, np) : at::Tensor();
    linear_into(y.narrow(0, p0, np), pb.w2, pb.bias, pb.relu, out2d.narrow(0, p0, np),
                other2d.defined() ? &init : nullptr, pb.into_other);
    if (masks && pb.relu) over_rows(K::pack_rows, oj, r0, r1);
  }
  return out;
}

// ATen's name of `norm`, or with `swapped` of the norm whose scales are
// norm's (s_f, s_i) swapped: the backward's rfft2 has the scale s_i and its
// irfft2 the scale s_f (the adjoints of the forward's transforms).
const char* norm_name(args::Norm norm, bool swapped) {
  switch (norm) {
    case args::Norm::Ortho:
      return "ortho";
    case args::Norm::Forward:
      return swapped ? "backward" : "forward";
    case args::Norm::Backward:
    default:
      return swapped ? "forward" : "backward";
  }
}

// Sizes the FFT does not plan: the same math with ATen's FFT. Its masks have
// the layout of spectral_masks.h with the spectrum's channels interleaved.
at::Tensor run_aten(const args::SpectralArgs& pb, uint8_t* masks) {
  const args::Dims& d = pb.d;
  const int64_t N = d.N, C = d.C, H = d.H, W = d.W, Wf = W / 2 + 1;
  const auto dtype = pb.x.scalar_type();
  const auto fft_dtype = dtype == at::kBFloat16 ? at::kFloat : dtype;
  const char* norm = norm_name(pb.norm, false);
  const masks::MaskLayout lay = masks::mask_layout(N, C, d.Cout, H, W, pb.relu, pb.fourier_only);
  const at::Tensor x = pb.x.permute({0, 2, 3, 1});  // (N, H, W, Cin)
  at::Tensor y;
  if (pb.fourier_only) {
    y = x;
  } else {
    y = at::empty({N * H * W, C}, x.options());
    linear_into(x.reshape({N * H * W, d.Cin}), pb.w1, pb.b1, true, y);
    if (masks) pack_tensor(y, N * H, W * C, masks + lay.y_offset, lay.y_row);
    y = y.view({N, H, W, C});
  }
  const at::Tensor s = at::fft_rfft2(y.to(fft_dtype), std::nullopt, {1, 2}, norm);  // (N, H, Wf, C)
  const at::Tensor s2d = at::view_as_real(s).reshape({N * H * Wf, 2 * C}).to(dtype).contiguous();
  at::Tensor m = at::empty({N * H * Wf, 2 * C}, y.options());
  linear_into(s2d, pb.w_freq, pb.b_freq, true, m);
  if (masks) {
    const at::Tensor columns = m.view({N, H, Wf, 2 * C}).permute({0, 2, 1, 3}).contiguous();
    pack_tensor(columns, N * Wf, H * 2 * C, masks + lay.z_offset, lay.z_col);
  }
  const at::Tensor mc = at::view_as_complex(m.to(fft_dtype).view({N, H, Wf, C, 2}));
  const at::Tensor z = at::fft_irfft2(mc, c10::IntArrayRef({H, W}), {1, 2}, norm);  // (N, H, W, C)
  if (pb.fourier_only) return z.to(dtype).permute({0, 3, 1, 2}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor t = (y.to(fft_dtype) + z).to(dtype).contiguous().permute({0, 3, 1, 2});
  at::Tensor out = final_conv(t, pb.w2, pb.bias, pb.other, pb.relu);
  if (masks && pb.relu) pack_tensor(out, N * H, W * d.Cout, masks + lay.out_offset, lay.out_row);
  return out;
}

// --------------------------------------------------------------------------
// The backward
// --------------------------------------------------------------------------
//
// For g, the gradient of out (N, Cout, H, W):
//   gm = g * [out > 0] (relu) or g          -> grad_out_masked
//   h  = gm W2                              (Cout -> Ch)
//   q  = h + irfft2_{s_f}(W_freq^T ([Z > 0] * rfft2_{s_i}(h)))
//   grad_x = (q * [y > 0]) W1               (Ch -> Cin)
// (the Fourier unit alone: grad_x = irfft2_{s_f}(W_freq^T ([Z > 0] * rfft2_{s_i}(g)))).
// rfft2 of scale s_i is the adjoint of the forward's inverse transform up to
// a factor 2 on the columns 1 .. W - Wf, irfft2 of scale s_f that of its
// forward transform up to 1/2 on the same columns; the frequency step
// between them works per position, so the factors cancel. The pipeline is
// the forward's: rows forward (h), column groups (FFT along H, the mask, the
// GEMM by W_freq^T in the split order, inverse FFT), rows inverse (+ h, the
// mask [y > 0], the GEMM by W1).

struct BackwardArgs {
  at::Tensor grad;  // (N, Cout, H, W) with channels-last memory
  at::Tensor mask_tensor;  // the masks of the forward, contiguous
  const uint8_t* masks = nullptr;
  at::Tensor w1, w_freq, w2;  // contiguous (w1, w2 undefined for the Fourier unit alone)
  bool relu = false;
  bool fourier_only = false;
  args::Norm norm = args::Norm::Ortho;
  args::Dims d;
};

// The transpose of w_freq in the split channel order (see split_order):
// row i of the result is column i of the split w_freq.
template <typename S>
at::Tensor split_weight_transposed(const at::Tensor& w, int64_t C) {
  const int64_t C2 = 2 * C;
  at::Tensor out = at::empty({C2, C2}, w.options());
  const S* src = w.data_ptr<S>();
  S* dst = out.data_ptr<S>();
  at::parallel_for(0, C2, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t col = i < C ? 2 * i : 2 * (i - C) + 1;
      S* row = dst + i * C2;
      for (int64_t j = 0; j < C; ++j) {
        row[j] = src[(2 * j) * C2 + col];
        row[C + j] = src[(2 * j + 1) * C2 + col];
      }
    }
  });
  return out;
}

// (grad_x, grad_out_masked; the latter undefined for the Fourier unit alone).
template <typename T>
std::pair<at::Tensor, at::Tensor> run_backward_pipeline(const BackwardArgs& b) {
  using K = Kernels<T, T>;
  const args::Dims& d = b.d;
  const int64_t N = d.N, C = d.C, C2 = 2 * C, H = d.H, W = d.W, Wf = W / 2 + 1, Cout = d.Cout;
  const int64_t rows = N * H;
  const at::ScalarType dtype = c10::CppTypeToScalarType<T>::value;
  const masks::MaskLayout lay = masks::mask_layout(N, C, Cout, H, W, b.relu, b.fourier_only);
  uint8_t* bits = const_cast<uint8_t*>(b.masks);

  Workspace ws;
  const Passes<T> passes(ws, b.norm, N, C, H, W);
  const auto scales = passes.scales;
  const at::Tensor& spec = passes.spec;
  T* spec_ptr = spec.data_ptr<T>();

  // 1. gm, h = gm W2 and the forward transforms of the rows of h (the inverse's scale).
  RowJob<T, T> fwd{nullptr, nullptr, spec_ptr, C, H, W, Wf, static_cast<T>(scales.second), passes.rplan.get()};
  at::Tensor h, gm;  // h: (N * H * W, C) row-major
  const int64_t chunk = std::max<int64_t>(1, kChunkPositions / W);
  if (b.fourier_only) {
    fwd.src = b.grad.data_ptr<T>();
    passes.run(K::rows_forward, fwd, 0, rows);
  } else {
    h = ws.get("y", dtype, rows * W * C).view({rows * W, C});
    gm = new_output(N, Cout, H, W, b.grad.options());
    const at::Tensor g2d = b.grad.permute({0, 2, 3, 1}).view({rows * W, Cout});
    const at::Tensor gm2d = gm.permute({0, 2, 3, 1}).view({rows * W, Cout});
    const at::Tensor w2t = b.w2.t().contiguous();  // (Ch, Cout)
    const MaskJob<T> gj{b.grad.data_ptr<T>(), gm.data_ptr<T>(), W * Cout, W * Cout, bits + lay.out_offset,
                        lay.out_row};
    fwd.src = h.data_ptr<T>();
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t r1 = std::min(rows, r0 + chunk);
      const int64_t p0 = r0 * W, np = (r1 - r0) * W;
      if (b.relu) {
        over_rows(K::select_rows, gj, r0, r1);
      } else {
        gm2d.narrow(0, p0, np).copy_(g2d.narrow(0, p0, np));
      }
      linear_into(gm2d.narrow(0, p0, np), w2t, std::nullopt, false, h.narrow(0, p0, np));
      passes.run(K::rows_forward, fwd, r0, r1);
    }
  }

  // 2. Per group of frequency columns: FFT along H, the mask [Z > 0], the GEMM by W_freq^T, inverse FFT.
  {
    const at::Tensor wqt = split_weight_transposed<T>(b.w_freq, C);
    const int64_t columns = N * Wf;
    const int64_t group = std::min(columns, std::max<int64_t>(1, kGroupPositions / H));
    at::Tensor mbuf = ws.get("m", dtype, group * H * C2);
    const int64_t Vb = passes.column_block;
    const int64_t blocks = (C + Vb - 1) / Vb;
    for (int64_t g0 = 0; g0 < columns; g0 += group) {
      const int64_t count = std::min(group, columns - g0);
      ColumnJob<T, T> cj{spec_ptr, nullptr, C, H, Vb, blocks, g0, passes.cplan.get()};
      passes.run(K::columns_forward, cj, 0, count * blocks);
      T* first = spec_ptr + g0 * H * C2;
      const MaskJob<T> zj{first, first, H * C2, H * C2, bits + lay.z_offset + g0 * lay.z_col, lay.z_col};
      over_rows(K::select_rows, zj, 0, count);
      at::Tensor m2d = mbuf.narrow(0, 0, count * H * C2).view({count * H, C2});
      linear_into(spec.narrow(0, g0 * H * C2, count * H * C2).view({count * H, C2}), wqt, std::nullopt, false, m2d);
      cj.group = mbuf.data_ptr<T>();
      passes.run(K::columns_inverse, cj, 0, count * blocks);
    }
  }

  // 3. Inverse transforms of the rows (the forward's scale): q = h + ..., the mask [y > 0], the GEMM by W1.
  RowJob<T, T> inv{nullptr, nullptr, spec_ptr, C, H, W, Wf, static_cast<T>(scales.first), passes.rplan.get()};
  if (b.fourier_only) {
    at::Tensor gx = new_output(N, C, H, W, b.grad.options());
    inv.dst = gx.data_ptr<T>();
    passes.run(K::rows_inverse, inv, 0, rows);
    return {gx, at::Tensor()};
  }
  inv.src = h.data_ptr<T>();
  inv.dst = h.data_ptr<T>();
  inv.bits = bits + lay.y_offset;
  inv.bits_row = lay.y_row;
  const int64_t Cin = d.Cin;
  at::Tensor gx = new_output(N, Cin, H, W, b.grad.options());
  const at::Tensor gx2d = gx.permute({0, 2, 3, 1}).view({rows * W, Cin});
  const at::Tensor w1t = b.w1.t().contiguous();  // (Cin, Ch)
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    passes.run(K::rows_inverse, inv, r0, r1);
    const int64_t p0 = r0 * W, np = (r1 - r0) * W;
    linear_into(h.narrow(0, p0, np), w1t, std::nullopt, false, gx2d.narrow(0, p0, np));
  }
  return {gx, gm};
}

// The backward with ATen's FFT, for the sizes run_aten serves.
template <typename T>
std::pair<at::Tensor, at::Tensor> run_backward_aten(const BackwardArgs& b) {
  const args::Dims& d = b.d;
  const int64_t N = d.N, C = d.C, H = d.H, W = d.W, Wf = W / 2 + 1, Cout = d.Cout;
  const char* norm = norm_name(b.norm, true);
  const masks::MaskLayout lay = masks::mask_layout(N, C, Cout, H, W, b.relu, b.fourier_only);
  const at::Tensor g = b.grad.permute({0, 2, 3, 1});  // (N, H, W, Cout), contiguous
  at::Tensor h, gm;
  if (b.fourier_only) {
    h = g;
  } else {
    gm = new_output(N, Cout, H, W, b.grad.options());
    if (b.relu) {
      const MaskJob<T> gj{b.grad.data_ptr<T>(), gm.data_ptr<T>(), W * Cout, W * Cout,
                          const_cast<uint8_t*>(b.masks) + lay.out_offset, lay.out_row};
      over_rows(Kernels<T, T>::select_rows, gj, 0, N * H);
    } else {
      gm.copy_(b.grad);
    }
    h = at::mm(gm.permute({0, 2, 3, 1}).reshape({N * H * W, Cout}), b.w2).view({N, H, W, C});
  }
  const at::Tensor s = at::fft_rfft2(h, std::nullopt, {1, 2}, norm);  // (N, H, Wf, C)
  // (N, Wf, H, 2C), channels interleaved: the layout of the masks [Z > 0].
  at::Tensor columns = at::view_as_real(s).reshape({N, H, Wf, 2 * C}).permute({0, 2, 1, 3}).contiguous();
  select_tensor<T>(columns, N * Wf, H * 2 * C, b.masks + lay.z_offset, lay.z_col);
  const at::Tensor m = at::mm(columns.view({N * Wf * H, 2 * C}), b.w_freq);
  const at::Tensor mc = at::view_as_complex(m.view({N, Wf, H, C, 2}).permute({0, 2, 1, 3, 4}).contiguous());
  const at::Tensor z = at::fft_irfft2(mc, c10::IntArrayRef({H, W}), {1, 2}, norm);  // (N, H, W, C)
  if (b.fourier_only) return {z.permute({0, 3, 1, 2}).contiguous(at::MemoryFormat::ChannelsLast), at::Tensor()};
  at::Tensor q = (h + z).contiguous();
  select_tensor<T>(q, N * H, W * C, b.masks + lay.y_offset, lay.y_row);
  at::Tensor gx = new_output(N, d.Cin, H, W, b.grad.options());
  at::Tensor gx2d = gx.permute({0, 2, 3, 1}).view({N * H * W, d.Cin});
  at::mm_out(gx2d, q.view({N * H * W, C}), b.w1);
  return {gx, gm};
}

// The implementation of the ops on CPU tensors (args::Entry).
struct CpuOps {
  static constexpr const char* kSpectralTransform = "spectral_transform";
  static constexpr const char* kFourierUnit = "fourier_unit";

  static void check_x(const char* op, const at::Tensor& x) {
    args::check_x(op, x, c10::DeviceType::CPU, {at::kFloat, at::kDouble, at::kBFloat16},
                  "torch.float32, torch.float64 or torch.bfloat16");
  }

  static bool own_fft(const args::Dims& d) {
    return fft::fft_friendly(d.H) && fft::fft_friendly(d.W % 2 == 0 ? d.W / 2 : d.W);
  }

  // The output and, with `with_masks`, the masks of spectral_masks.h (an empty tensor without).
  static std::pair<at::Tensor, at::Tensor> forward(args::SpectralArgs pb, bool with_masks) {
    // The op has no autograd formula; the ATen calls below see plain tensors.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const args::Dims& d = pb.d;
    at::Tensor bits;
    uint8_t* masks = nullptr;
    if (with_masks) {
      const masks::MaskLayout lay = masks::mask_layout(d.N, d.C, d.Cout, d.H, d.W, pb.relu, pb.fourier_only);
      bits = at::empty({lay.total}, pb.x.options().dtype(at::kByte));
      masks = bits.data_ptr<uint8_t>();
    }
    if (d.N == 0) {
      return {at::empty({d.N, d.Cout, d.H, d.W}, pb.x.options().memory_format(at::MemoryFormat::ChannelsLast)),
              bits};
    }
    // (N, C, H, W) with channels-last memory; no copy when x already is.
    pb.x = pb.x.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
    if (!own_fft(d)) return {run_aten(pb, masks), bits};
    switch (pb.x.scalar_type()) {
      case at::kFloat:
        return {run_pipeline<float, float>(pb, masks), bits};
      case at::kDouble:
        return {run_pipeline<double, double>(pb, masks), bits};
      case at::kBFloat16:
        return {run_pipeline<float, c10::BFloat16>(pb, masks), bits};
      default:
        TORCH_CHECK(false, "lama_fast: unsupported dtype ", args::dtype_name(pb.x.scalar_type()));
    }
  }

  static at::Tensor run(args::SpectralArgs pb) { return forward(std::move(pb), false).first; }

  static std::pair<at::Tensor, at::Tensor> backward(BackwardArgs b) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const args::Dims& d = b.d;
    if (d.N == 0) {
      const auto options = b.grad.options().memory_format(at::MemoryFormat::ChannelsLast);
      return {at::empty({d.N, d.Cin, d.H, d.W}, options),
              b.fourier_only ? at::Tensor() : at::empty({d.N, d.Cout, d.H, d.W}, options)};
    }
    const bool own = own_fft(d);
    if (b.grad.scalar_type() == at::kDouble) {
      return own ? run_backward_pipeline<double>(b) : run_backward_aten<double>(b);
    }
    return own ? run_backward_pipeline<float>(b) : run_backward_aten<float>(b);
  }
};

// --------------------------------------------------------------------------
// The ops with masks and their backward
// --------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> spectral_transform_masked(
    const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w_freq,
    const at::Tensor& b_freq, const at::Tensor& w2, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& other, bool relu, c10::string_view fft_norm) {
  const char* op = "spectral_transform_masked";
  CpuOps::check_x(op, x);
  auto result = CpuOps::forward(
      args::spectral_transform_args(op, x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm), true);
  return {result.first, result.second};
}

// other = act(spectral_transform(x, ..., bias) + other), written into other:
// the FFC layer's global output accumulated onto its l2g convolution's
// result without copying that result first.
void spectral_transform_into(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                             const at::Tensor& w_freq, const at::Tensor& b_freq, const at::Tensor& w2,
                             const std::optional<at::Tensor>& bias, const at::Tensor& other, bool relu,
                             c10::string_view fft_norm) {
  const char* op = "spectral_transform_into";
  CpuOps::check_x(op, x);
  args::SpectralArgs pb = args::spectral_transform_args(op, x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm);
  TORCH_CHECK(other.scalar_type() == x.scalar_type(), op, ": other is ", args::dtype_name(other.scalar_type()),
              " but x is ", args::dtype_name(x.scalar_type()));
  TORCH_CHECK(other.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": other must be channels_last contiguous");
  if (other.numel() == 0) return;
  if (!CpuOps::own_fft(pb.d)) {  // the ATen FFT path makes a new output
    other.copy_(CpuOps::run(std::move(pb)));
    return;
  }
  pb.into_other = true;
  CpuOps::run(std::move(pb));
}

std::tuple<at::Tensor, at::Tensor> fourier_unit_masked(const at::Tensor& x, const at::Tensor& w_freq,
                                                       const at::Tensor& b_freq, c10::string_view fft_norm) {
  const char* op = "fourier_unit_masked";
  CpuOps::check_x(op, x);
  auto result = CpuOps::forward(args::fourier_unit_args(op, x, w_freq, b_freq, fft_norm), true);
  return {result.first, result.second};
}

// A weight of the backward: on the CPU, of grad's dtype, of shape `expected` (what `meaning` says).
void check_backward_weight(const char* op, const char* name, const at::Tensor& t, const at::Tensor& grad,
                           c10::IntArrayRef expected, const std::string& meaning) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, " must be a dense (strided) tensor, got layout ",
              t.layout());
  TORCH_CHECK(t.scalar_type() == grad.scalar_type(), op, ": ", name, " must have the dtype of grad (",
              args::dtype_name(grad.scalar_type()), "), got ", args::dtype_name(t.scalar_type()));
  args::check_shape(op, name, t, expected, meaning);
}

// The checked arguments of a backward op; w1 and w2 are null for the Fourier unit alone.
BackwardArgs backward_args(const char* op, const char* forward_op, const at::Tensor& grad, const at::Tensor& masks,
                           const at::Tensor* w1, const at::Tensor& w_freq, const at::Tensor* w2, bool relu,
                           c10::string_view fft_norm) {
  TORCH_CHECK(grad.device().is_cpu(), op, ": grad must be a CPU tensor, got one on ", grad.device());
  TORCH_CHECK(grad.layout() == at::kStrided, op, ": grad must be a dense (strided) tensor, got layout ",
              grad.layout());
  TORCH_CHECK(grad.scalar_type() != at::kBFloat16, op, ": bfloat16 is not supported, use float32 or float64");
  TORCH_CHECK(grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kDouble, op,
              ": grad must have dtype torch.float32 or torch.float64, got ", args::dtype_name(grad.scalar_type()));
  TORCH_CHECK(grad.dim() == 4, op, ": grad must be a 4-D (N, C, H, W) tensor, got shape ",
              args::shape_str(grad.sizes()));
  TORCH_CHECK(grad.size(1) >= 1 && grad.size(2) >= 1 && grad.size(3) >= 1, op,
              ": grad must have at least one channel, row and column, got shape ", args::shape_str(grad.sizes()));
  BackwardArgs b;
  b.d = args::dims_of(grad);
  b.fourier_only = w1 == nullptr;
  b.relu = relu && !b.fourier_only;
  b.norm = args::parse_norm(op, fft_norm);
  if (!b.fourier_only) {
    TORCH_CHECK(w1->dim() == 2 && w1->size(0) >= 1 && w1->size(1) >= 1, op,
                ": w1 must have shape [Ch, Cin] with Ch, Cin >= 1, got ", args::shape_str(w1->sizes()));
    b.d.C = w1->size(0);
    b.d.Cin = w1->size(1);
    const std::string Ch = std::to_string(b.d.C);
    check_backward_weight(op, "w1", *w1, grad, w1->sizes(), "Ch, Cin");
    check_backward_weight(op, "w2", *w2, grad, {b.d.Cout, b.d.C},
                          "Cout, Ch where Cout = " + std::to_string(b.d.Cout) + " channels of grad and Ch = " + Ch +
                              " from w1");
    check_backward_weight(op, "w_freq", w_freq, grad, {2 * b.d.C, 2 * b.d.C},
                          "2*Ch, 2*Ch where Ch = " + Ch + " from w1");
    b.w1 = w1->contiguous();
    b.w2 = w2->contiguous();
  } else {
    check_backward_weight(op, "w_freq", w_freq, grad, {2 * b.d.C, 2 * b.d.C},
                          "2*C, 2*C where C = " + std::to_string(b.d.C) + " channels of grad");
  }
  b.w_freq = w_freq.contiguous();
  const masks::MaskLayout lay = masks::mask_layout(b.d.N, b.d.C, b.d.Cout, b.d.H, b.d.W, b.relu, b.fourier_only);
  TORCH_CHECK(masks.device().is_cpu() && masks.scalar_type() == at::kByte && masks.dim() == 1 &&
                  masks.numel() == lay.total,
              op, ": masks must be the 1-D uint8 CPU tensor of ", lay.total, " bytes that ", forward_op,
              " returns for these shapes, got a ", masks.device(), " tensor of dtype ",
              args::dtype_name(masks.scalar_type()), " and shape ", args::shape_str(masks.sizes()));
  b.mask_tensor = masks.contiguous();
  b.masks = b.mask_tensor.data_ptr<uint8_t>();
  b.grad = grad.contiguous(at::MemoryFormat::ChannelsLast);
  return b;
}

std::tuple<at::Tensor, at::Tensor> spectral_transform_backward(const at::Tensor& grad, const at::Tensor& masks,
                                                               const at::Tensor& w1, const at::Tensor& w_freq,
                                                               const at::Tensor& w2, bool relu,
                                                               c10::string_view fft_norm) {
  auto result = CpuOps::backward(backward_args("spectral_transform_backward", "spectral_transform_masked", grad,
                                               masks, &w1, w_freq, &w2, relu, fft_norm));
  return {result.first, result.second};
}

at::Tensor fourier_unit_backward(const at::Tensor& grad, const at::Tensor& masks, const at::Tensor& w_freq,
                                 c10::string_view fft_norm) {
  return CpuOps::backward(backward_args("fourier_unit_backward", "fourier_unit_masked", grad, masks, nullptr,
                                        w_freq, nullptr, false, fft_norm))
      .first;
}

}  // namespace
}  // namespace lama_fast

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("spectral_transform", &lama_fast::args::Entry<lama_fast::CpuOps>::spectral_transform);
  m.impl("fourier_unit", &lama_fast::args::Entry<lama_fast::CpuOps>::fourier_unit);
  m.impl("spectral_transform_masked", &lama_fast::spectral_transform_masked);
  m.impl("spectral_transform_into", &lama_fast::spectral_transform_into);
  m.impl("fourier_unit_masked", &lama_fast::fourier_unit_masked);
  m.impl("spectral_transform_backward", &lama_fast::spectral_transform_backward);
  m.impl("fourier_unit_backward", &lama_fast::fourier_unit_backward);
}
