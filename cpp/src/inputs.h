// A frame's inputs, checked and converted into exactly what the compiled models take
// (FILE_CONTRACT §1, §4). Internal to the runtime.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <optional>
#include <string>

#include "nequip/runtime.h"

namespace nequip::detail {

struct PreparedInputs {
  at::Tensor pos;              // (N, 3) float64
  at::Tensor edge_index;       // (2, E) int64
  at::Tensor atom_types;       // (N,) int64
  at::Tensor cell;             // (1, 3, 3) float64
  at::Tensor edge_cell_shift;  // (E, 3) float64
  at::Tensor local_mask;       // (N,) bool, only for models taking it
  double volume = 0.0;         // |det(cell)|
  // The two atoms of the shortest edge and its length (empty without edges): what the output
  // checks and the close-pair warning report, found in one pass over the edges.
  std::optional<NonFiniteOutputError::ClosestPair> closest;
  // A batch (batch.h): cell is (F, 3, 3); batch (N,) and num_atoms (F,) int64; volumes (F,)
  // float64 on the CPU, |det(cell)| of each frame. Undefined for one frame, except batch and
  // num_atoms for a file that requires them (as_batch_of_one).
  at::Tensor batch;
  at::Tensor num_atoms;
  at::Tensor volumes;

  // The input named `name` (fields.h).
  const at::Tensor& get(const std::string& name) const;
};

// `inputs` checked where they are given (on the CPU for every front end, so that checking a
// call on a GPU reads nothing back from it), converted, and moved to `device`.
// `takes_local_mask`: whether the model has a local_mask input (checked by the caller, who
// knows the file to name when a mask is given to a model without one). Throws InputError.
PreparedInputs prepare_inputs(const Inputs& inputs, int64_t num_types, const c10::Device& device,
                              bool takes_local_mask);

// numpy's name of a dtype ("float64", "int32", "bool"), torch's for the others.
std::string dtype_name(at::ScalarType dtype);

// Exactly `dtype`, contiguous, on `device`: AOTI models check none of this (FILE_CONTRACT §4).
at::Tensor convert(const at::Tensor& tensor, const c10::Device& device, at::ScalarType dtype);

}  // namespace nequip::detail
