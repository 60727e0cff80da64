// torch computes some float functions of contiguous CPU tensors (sin, sqrt, exp, ... : the
// IMPLEMENT_VML_MKL list of ATen/cpu/vml.h) with oneMKL's vector math (VML), each intra-op
// thread on its chunk of the tensor. oneMKL 2024.2, which torch 2.13's wheels carry, chooses a
// VML function's kernel at that function's first call in the process; when the first call runs
// on several threads at once, one thread can compute its whole chunk with a low-accuracy kernel
// (pytorch/pytorch#188792). Seen here: the Bessel basis of a model's first call after a fresh
// start, on 2 threads, had the second thread's half of the edges 2.7e-5 off (float32, the
// correct result 2.2e-7 off), so the first energies of about one process in eight were 1.3e-5
// eV off per atom; a float64 model was 1.4e-10 off. Later calls were right.
//
// So when this library loads (every process that runs a model through it: Python, ASE,
// nequip-test, the LAMMPS plugin), each of those functions is called once, in float32 and
// float64, on one thread (a few elements, below torch's grain size), before any model call can
// run it on several.
#include "vector_math.h"

#include <ATen/ATen.h>

#include <utility>

namespace nequip::detail {
namespace {

using UnaryFunction = at::Tensor (*)(const at::Tensor&);

// By name: what ATen/cpu/vml.h lists with IMPLEMENT_VML_MKL.
const std::vector<std::pair<std::string, UnaryFunction>>& functions() {
  static const std::vector<std::pair<std::string, UnaryFunction>> table = {
      {"acos", [](const at::Tensor& x) { return at::acos(x); }},
      {"asin", [](const at::Tensor& x) { return at::asin(x); }},
      {"atan", [](const at::Tensor& x) { return at::atan(x); }},
      {"cos", [](const at::Tensor& x) { return at::cos(x); }},
      {"erf", [](const at::Tensor& x) { return at::erf(x); }},
      {"erfc", [](const at::Tensor& x) { return at::erfc(x); }},
      {"erfinv", [](const at::Tensor& x) { return at::erfinv(x); }},
      {"exp", [](const at::Tensor& x) { return at::exp(x); }},
      {"log", [](const at::Tensor& x) { return at::log(x); }},
      {"log10", [](const at::Tensor& x) { return at::log10(x); }},
      {"log2", [](const at::Tensor& x) { return at::log2(x); }},
      {"sin", [](const at::Tensor& x) { return at::sin(x); }},
      {"sqrt", [](const at::Tensor& x) { return at::sqrt(x); }},
      {"tan", [](const at::Tensor& x) { return at::tan(x); }},
      {"tanh", [](const at::Tensor& x) { return at::tanh(x); }},
      {"trunc", [](const at::Tensor& x) { return at::trunc(x); }},
  };
  return table;
}

// Calls each function once on a few float32 and float64 elements on this thread (below torch's
// grain size, so on no other), so that oneMKL chooses their kernels now.
void settle_vector_math_kernels() {
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    // in every function's domain (erfinv, acos and asin: |x| < 1; log: x > 0)
    const at::Tensor x = at::full({8}, 0.5, at::TensorOptions(dtype));
    for (const auto& [name, function] : functions()) function(x);
  }
}

// Runs when the library loads; libtorch, which it links, has loaded (and registered its
// operators) before.
const bool settled_at_load = [] {
  try {
    settle_vector_math_kernels();
  } catch (...) {
    // nothing to report to at load; torch's own first calls then run as they would without us
  }
  return true;
}();

}  // namespace

std::vector<std::string> vector_math_functions() {
  std::vector<std::string> names;
  for (const auto& [name, function] : functions()) names.push_back(name);
  return names;
}

}  // namespace nequip::detail
