// What the runtime checks of a model's outputs before handing them over. Internal to the
// runtime (NonFiniteOutputError is public: nequip/runtime.h).
#pragma once

#include <ATen/Tensor.h>

#include <optional>

#include "nequip/runtime.h"

namespace nequip::detail {

// Whether every value of a contiguous float64 CPU tensor is finite.
bool all_finite(const at::Tensor& tensor);

// The two atoms of the shortest edge (edge vectors pos[j] - pos[i] + shift . cell) and its
// length; empty without edges. pos (N, 3), edge_index (2, E), edge_cell_shift (E, 3) and cell
// (1, 3, 3) as prepare_inputs makes them.
std::optional<NonFiniteOutputError::ClosestPair> closest_pair(const at::Tensor& pos,
                                                              const at::Tensor& edge_index,
                                                              const at::Tensor& edge_cell_shift,
                                                              const at::Tensor& cell);

}  // namespace nequip::detail
