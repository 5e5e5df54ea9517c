// The Python module lama_fast._C and the schema of every op it registers.
//
// Importing lama_fast._C runs the static registrations: the schemas below
// (TORCH_LIBRARY_FRAGMENT, as Python adds the Triton ops to the same
// namespace) and each implementation's TORCH_LIBRARY_IMPL, which make the
// ops available as torch.ops.lama_fast.<name>. Where each op is implemented:
//   spectral_transform, fourier_unit    cpu/spectral.cpp (CPU), cuda/spectral_cuda.cpp (CUDA)
//   spectral_transform_masked,          cpu/spectral.cpp (CPU): the forward with its ReLU masks and
//   fourier_unit_masked, *_backward     the input gradient from them
//   spectral_transform_into             cpu/spectral.cpp (CPU): the output accumulated into `other`
//   winograd_weight, conv3x3_winograd,  cpu/winograd.cpp (CPU)
//   winograd_isa, winograd_weight_transpose
//   relu_mask, apply_mask               cpu/masks.cpp (CPU)
//   reflect_pad_into,                   cpu/layout.cpp (CPU): a padded copy and an upsampling
//   interleave_phases_into,             layer's output, written once into the consumer's buffer,
//   reflect_pad_border                  and a padded buffer's border filled from its interior
//   cuda_emulated_spectral_transform,   cpu/cuda_emulation.cpp: the CUDA pipeline on the CPU,
//   cuda_emulated_fourier_unit,         for the tests
//   cuda_emulated_mixed_spectrum
//   _cufft_plan_cache_limit             cuda/spectral_cuda.cpp (CUDA builds only): the cuFFT plan
//                                       cache's limit and contents, for the tests
// docs/ops.md lists them with their Python wrappers, references, tests and
// benchmarks.

#include <pybind11/pybind11.h>
#include <torch/library.h>

// The arguments of spectral_transform and of fourier_unit (also those of their emulations).
#define LF_SPECTRAL_TRANSFORM_ARGS                                                                    \
  "(Tensor x, Tensor w1, Tensor b1, Tensor w_freq, Tensor b_freq, Tensor w2, Tensor? bias, Tensor? other, " \
  "bool relu, str fft_norm) -> Tensor"
// spectral_transform_masked: the same arguments, the output and the ReLU masks its backward needs.
#define LF_SPECTRAL_TRANSFORM_MASKED_ARGS                                                             \
  "(Tensor x, Tensor w1, Tensor b1, Tensor w_freq, Tensor b_freq, Tensor w2, Tensor? bias, Tensor? other, " \
  "bool relu, str fft_norm) -> (Tensor, Tensor)"
#define LF_FOURIER_UNIT_ARGS "(Tensor x, Tensor w_freq, Tensor b_freq, str fft_norm) -> Tensor"

TORCH_LIBRARY_FRAGMENT(lama_fast, m) {
  m.def("spectral_transform" LF_SPECTRAL_TRANSFORM_ARGS);
  m.def("fourier_unit" LF_FOURIER_UNIT_ARGS);
  m.def("winograd_weight(Tensor weight) -> Tensor");
  m.def(
      "conv3x3_winograd(Tensor x, Tensor packed_weight, Tensor? bias=None, Tensor? other=None, bool relu=False, "
      "int reflect_pad=0) -> Tensor");
  m.def("winograd_isa() -> str");
  m.def("winograd_weight_transpose(Tensor packed_weight) -> Tensor");
  m.def("relu_mask(Tensor x) -> Tensor");
  m.def("apply_mask(Tensor grad, Tensor bits) -> Tensor");
  m.def("reflect_pad_into(Tensor x, Tensor(a!) out, int left, int right, int top, int bottom) -> ()");
  m.def("reflect_pad_border(Tensor(a!) out, int left, int right, int top, int bottom) -> ()");
  m.def(
      "interleave_phases_into(Tensor p00, Tensor p01, Tensor p10, Tensor p11, Tensor(a!) out, int row0, int col0) "
      "-> ()");
  m.def("spectral_transform_masked" LF_SPECTRAL_TRANSFORM_MASKED_ARGS);
  m.def(
      "spectral_transform_into(Tensor x, Tensor w1, Tensor b1, Tensor w_freq, Tensor b_freq, Tensor w2, Tensor? bias, "
      "Tensor(a!) other, bool relu, str fft_norm) -> ()");
  m.def(
      "spectral_transform_backward(Tensor grad, Tensor masks, Tensor w1, Tensor w_freq, Tensor w2, bool relu, "
      "str fft_norm) -> (Tensor, Tensor)");
  m.def("fourier_unit_masked(Tensor x, Tensor w_freq, Tensor b_freq, str fft_norm) -> (Tensor, Tensor)");
  m.def("fourier_unit_backward(Tensor grad, Tensor masks, Tensor w_freq, str fft_norm) -> Tensor");
  m.def("cuda_emulated_spectral_transform" LF_SPECTRAL_TRANSFORM_ARGS);
  m.def("cuda_emulated_fourier_unit" LF_FOURIER_UNIT_ARGS);
  m.def("cuda_emulated_mixed_spectrum(Tensor y, Tensor w_freq, Tensor b_freq, str fft_norm) -> Tensor");
  m.def("_cufft_plan_cache_limit(int? limit=None) -> (int, int, int)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Compiled ops of lama_fast, registered under torch.ops.lama_fast";
}
