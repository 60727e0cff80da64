// The oneMKL vector-math kernels torch calls, chosen once on one thread before any model call
// (vector_math.cpp says why). Internal to the runtime.
#pragma once

#include <string>
#include <vector>

namespace nequip::detail {

// The torch functions that ATen computes with oneMKL's vector math (ATen/cpu/vml.h), by name:
// those the library calls once on one thread when it loads.
std::vector<std::string> vector_math_functions();

}  // namespace nequip::detail
