// The oneMKL vector-math kernels torch calls, chosen once on one thread before any model call
// (vector_math.cpp says why). Internal to the runtime.
#pragma once

#include <string>
#include <vector>

namespace nequip::detail {

// The torch functions that ATen computes with oneMKL's vector math (ATen/cpu/vml.h), by name.
const std::vector<std::string>& vector_math_functions();

// Calls each of them once on a few float32 and float64 elements on this thread, so that
// oneMKL chooses their kernels now. Runs when the runtime library loads.
void settle_vector_math_kernels();

}  // namespace nequip::detail
