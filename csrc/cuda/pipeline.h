// The CUDA spectral transform's sequence of steps, written once over a
// "device" policy: csrc/cuda/spectral_cuda.cpp runs it with the CUDA kernels
// and cuFFT plans, csrc/cpu/cuda_emulation.cpp with the same per-element
// functors looped on the CPU and ATen's FFT addressed like cuFFT, so the CPU
// tests exercise every view, scale and buffer choice the GPU makes.
//
// With T the activations' type and A the arithmetic type (double for double,
// float otherwise), on channels-last data viewed as (positions, channels):
//   g1 = x W1^T                     (ATen GEMM in T: cuBLAS on the GPU)
//   y  = relu(g1 + b1)              BiasRelu, in A (in place when T is A)
//   S  = rfft2(y), unnormalised     one plan per image, channels last
//   g  = S Wf^T                     GEMM in T on the interleaved (re, im)
//                                   channels; for half types S is first
//                                   scaled by 1/sqrt(HW) and rounded
//                                   (ScaleConvert)
//   Z  = s_i relu(s_f' g + b_freq)  MixEpilogue, edge columns made Hermitian
//                                   (s_f' = s_f, or s_f sqrt(HW) for half)
//   u  = irfft2(Z), unnormalised
//   t  = y + u                      Residual, rounded to T
//   out = t W2^T (+ other)          ATen GEMM (addmm when other is given)
//   out = relu?(out + bias)         OutputEpilogue, when needed
// (s_f, s_i) are fft_norm's forward and inverse scales; the steps are the
// functors of cuda/spectral_device.h.
//
// A policy provides step(Step, DType, StepArgs) (runs one element-wise step)
// and fft_forward / fft_inverse (one image: (H, W, C) reals <-> (H, Wf, C)
// complex as (re, im) pairs); Ops<Device> below registers the ops with it.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include "cuda/spectral_device.h"
#include "spectral_args.h"

namespace lama_fast {
namespace pipeline {

using Problem = args::SpectralArgs;  // x: (N, C, H, W), any memory format

// x on `device`, 4-D, in one of the dtypes the pipeline runs in.
inline void check_input(const char* op, const at::Tensor& x, c10::DeviceType device) {
  args::check_x(op, x, device, {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16},
                "torch.float32, torch.float64, torch.float16 or torch.bfloat16");
}

inline at::ScalarType arithmetic_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline cuda_math::DType dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda_math::DType::Float32;
    case at::kDouble: return cuda_math::DType::Float64;
    case at::kHalf: return cuda_math::DType::Float16;
    case at::kBFloat16: return cuda_math::DType::BFloat16;
    default: TORCH_CHECK(false, "lama_fast: the CUDA pipeline does not run in ", args::dtype_name(t));
  }
}

// The arguments of an element-wise step that reads `in` (and in2) and writes
// `out`, over `count` indices.
inline cuda_math::StepArgs step_args(const at::Tensor& in, const void* in2, const at::Tensor& out, int64_t count,
                                     int64_t channels = 0) {
  cuda_math::StepArgs a;
  a.in = in.data_ptr();
  a.in2 = in2;
  a.out = out.data_ptr();
  a.count = count;
  a.channels = channels;
  return a;
}

// (N, C, H, W) `t` as its (N*H*W, C) matrix: a view when t is channels last,
// also when it is a channel slice of a channels-last tensor (rows then lie
// further apart than C, which the GEMMs read as they are), else a copy.
// Such a slice (x, or `other`, which addmm copies into the output first)
// may start at any channel with any row stride: ATen gives cuBLAS the
// pointer and leading dimension as they are and tells cuBLASLt their actual
// alignment, so a start or stride off 16 bytes costs at most the vectorised
// kernels, never a failure. Every other GEMM operand is a fresh dense tensor.
inline at::Tensor positions_by_channels(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).reshape({t.size(0) * t.size(2) * t.size(3), t.size(1)});
}

// The (N*H*Wf, 2C) array of arithmetic type that the inverse FFT reads, from
// y, the (N*H*W, C) FFT input of arithmetic type.
template <class Device>
at::Tensor mixed_spectrum(Device& dev, const at::Tensor& y, const at::Tensor& w_freq, const at::Tensor& b_freq,
                          at::ScalarType dtype, args::Norm norm, const args::Dims& d) {
  const int64_t N = d.N, C = d.C, H = d.H, W = d.W, Wf = cuda_math::half_width(W);
  const at::Tensor spectrum = at::empty({N * H * Wf, 2 * C}, y.options());
  for (int64_t n = 0; n < N; ++n) {
    dev.fft_forward(y.narrow(0, n * H * W, H * W), spectrum.narrow(0, n * H * Wf, H * Wf), d);
  }
  const auto scales = args::norm_scales(norm, H, W);
  at::Tensor operand = spectrum;
  double in_scale = scales.first;
  if (dtype != y.scalar_type()) {
    // Rounded to the half type at the "ortho" scale whatever the norm, so that an unnormalised
    // spectrum (sums over H * W points) cannot overflow float16; the epilogue restores the norm's.
    const double operand_scale = 1.0 / std::sqrt(static_cast<double>(H) * static_cast<double>(W));
    operand = at::empty({N * H * Wf, 2 * C}, y.options().dtype(dtype));
    cuda_math::StepArgs convert = step_args(spectrum, nullptr, operand, spectrum.numel());
    convert.scale = operand_scale;
    dev.step(cuda_math::Step::ScaleConvert, dtype_code(dtype), convert);
    in_scale = scales.first / operand_scale;
  }
  const at::Tensor g = at::mm(operand, w_freq.t());
  const at::Tensor z = dtype == y.scalar_type() ? g : at::empty_like(spectrum);
  cuda_math::StepArgs mix = step_args(g, b_freq.data_ptr(), z, N * H * Wf * C);
  mix.scale = in_scale;
  mix.scale2 = scales.second;
  mix.shape = cuda_math::SpectrumShape{N, H, W, Wf, C};
  dev.step(cuda_math::Step::MixEpilogue, dtype_code(dtype), mix);
  return z;
}

// u = irfft2(z), unnormalised: (N*H*W, C) of arithmetic type.
template <class Device>
at::Tensor inverse(Device& dev, const at::Tensor& z, const args::Dims& d) {
  const int64_t H = d.H, W = d.W, Wf = cuda_math::half_width(W);
  const at::Tensor u = at::empty({d.N * H * W, d.C}, z.options());
  for (int64_t n = 0; n < d.N; ++n) {
    dev.fft_inverse(z.narrow(0, n * H * Wf, H * Wf), u.narrow(0, n * H * W, H * W), d);
  }
  return u;
}

// A new channels-last output of the op: (N, Cout, H, W).
inline at::Tensor new_output(const Problem& pb) {
  const args::Dims& d = pb.d;
  return at::empty({d.N, d.Cout, d.H, d.W}, pb.x.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// The op that pb describes, spectral_transform or (pb.fourier_only) fourier_unit, on `dev`.
template <class Device>
at::Tensor run(Device& dev, const Problem& pb) {
  // The op has no autograd formula; the ATen calls below see plain tensors.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const args::Dims& d = pb.d;
  const at::ScalarType dtype = pb.x.scalar_type();
  const at::ScalarType acc = arithmetic_type(dtype);
  if (d.N == 0) return new_output(pb);
  if (pb.fourier_only) {
    // The FFT reads dense rows of C.
    const at::Tensor y = positions_by_channels(pb.x.to(acc)).contiguous();
    const at::Tensor u = inverse(dev, mixed_spectrum(dev, y, pb.w_freq, pb.b_freq, dtype, pb.norm, d), d);
    return u.view({d.N, d.H, d.W, d.C}).permute({0, 3, 1, 2}).to(dtype);
  }
  const cuda_math::DType code = dtype_code(dtype);
  const at::Tensor out = new_output(pb);
  const at::Tensor g1 = at::mm(positions_by_channels(pb.x), pb.w1.t());
  const at::Tensor y = dtype == acc ? g1 : at::empty(g1.sizes(), g1.options().dtype(acc));
  dev.step(cuda_math::Step::BiasRelu, code, step_args(g1, pb.b1.data_ptr(), y, g1.numel(), g1.size(1)));
  const at::Tensor z = mixed_spectrum(dev, y, pb.w_freq, pb.b_freq, dtype, pb.norm, d);
  const at::Tensor u = inverse(dev, z, d);
  const at::Tensor t = dtype == acc ? u : at::empty(u.sizes(), u.options().dtype(dtype));
  dev.step(cuda_math::Step::Residual, code, step_args(y, u.data_ptr(), t, t.numel()));
  at::Tensor om = positions_by_channels(out);
  if (pb.other.has_value()) {
    at::addmm_out(om, positions_by_channels(*pb.other), t, pb.w2.t());
  } else {
    at::mm_out(om, t, pb.w2.t());
  }
  if (pb.bias.has_value() || pb.relu) {
    cuda_math::StepArgs epilogue =
        step_args(om, pb.bias.has_value() ? pb.bias->data_ptr() : nullptr, om, om.numel(), om.size(1));
    epilogue.relu = pb.relu;
    dev.step(cuda_math::Step::OutputEpilogue, code, epilogue);
  }
  return out;
}

// The implementation (args::Entry) of spectral_transform and fourier_unit by
// the pipeline on a Device policy, which names the ops (kSpectralTransform,
// kFourierUnit), takes x on kDevice, and is made from x for each call.
template <class Device>
struct Ops {
  static constexpr const char* kSpectralTransform = Device::kSpectralTransform;
  static constexpr const char* kFourierUnit = Device::kFourierUnit;

  static void check_x(const char* op, const at::Tensor& x) { check_input(op, x, Device::kDevice); }

  static at::Tensor run(const Problem& pb) {
    Device dev(pb.x);
    return pipeline::run(dev, pb);
  }
};

}  // namespace pipeline
}  // namespace lama_fast
