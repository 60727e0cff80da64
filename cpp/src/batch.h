// A batch of frames in one call (Model::compute_batch): its inputs checked and converted, its
// outputs collected. Internal to the runtime.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "inputs.h"
#include "nequip/runtime.h"

namespace nequip::detail {

// Refuses (ModelFileError) a file whose input `fields` (stored under metadata `key`) name one
// of batch and num_atoms without the other: a batch needs both.
void check_batch_fields(const std::string& path, const std::string& key,
                        const std::vector<std::string>& fields);

// `inputs` checked on the CPU (every check of prepare_inputs, then cell (F, 3, 3), batch and
// num_atoms, and that no edge joins two frames), converted, and moved to `device`. The
// result's volumes hold each frame's |det(cell)|. Throws InputError.
PreparedInputs prepare_batch_inputs(const BatchInputs& inputs, int64_t num_types,
                                    const c10::Device& device);

// One frame as a batch of one (batch all zero, num_atoms (N)), for a file that requires them.
void as_batch_of_one(PreparedInputs& prepared);

// Float64 CPU copies of a batch call's outputs (`raw`, already on the CPU), shapes checked
// (TorchError naming `path`), with the total energies summed from the atomic energies and
// virial and stress derived from each other frame by frame where the model gives only some.
BatchOutputs collect_batch_outputs(const std::string& path, std::map<std::string, at::Tensor> raw,
                                   const PreparedInputs& prepared);

// Whether every energy and force of `outputs` is finite.
bool batch_outputs_finite(const BatchOutputs& outputs);

// The closest pair of atoms over the batch's edges (each edge's shift by its own frame's cell).
std::optional<NonFiniteOutputError::ClosestPair> closest_pair_of_batch(
    const PreparedInputs& prepared);

}  // namespace nequip::detail
