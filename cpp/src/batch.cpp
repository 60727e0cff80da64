#include "batch.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "fields.h"
#include "output_checks.h"
#include "text.h"
#include "torch_errors.h"

namespace nequip::detail {
namespace {

// An index tensor of `name`: integer dtype, one dimension of `size` (when >= 0), as int64 on
// the CPU.
at::Tensor checked_index(const at::Tensor& tensor, const char* name, const std::string& shape,
                         int64_t size) {
  if (!tensor.defined()) throw InputError(std::string(name) + " is required for a batch");
  if (!at::isIntegralType(tensor.scalar_type(), /*includeBool=*/false)) {
    throw InputError(std::string(name) + " must have an integer dtype, got " +
                     dtype_name(tensor.scalar_type()));
  }
  if (tensor.dim() != 1 || (size >= 0 && tensor.size(0) != size)) {
    throw InputError(std::string(name) + " must have shape " + shape + ", got " +
                     shape_string(tensor));
  }
  return tensor.to(at::kCPU, at::kLong).contiguous();
}

// The frame of each atom, checked against num_atoms: in [0, F), sorted, and each frame's count.
void check_batch(const at::Tensor& batch, const at::Tensor& num_atoms) {
  const int64_t num_frames = num_atoms.size(0);
  const int64_t low = batch.min().item<int64_t>();
  const int64_t high = batch.max().item<int64_t>();
  if (low < 0 || high >= num_frames) {
    throw InputError("batch values must lie in [0, F) = [0, " + std::to_string(num_frames) +
                     "), the frames of num_atoms, got values in [" + std::to_string(low) + ", " +
                     std::to_string(high) + "]");
  }
  const at::Tensor descents = (batch.slice(0, 1) < batch.slice(0, 0, -1)).nonzero();
  if (descents.size(0) > 0) {
    const int64_t atom = descents[0].item<int64_t>() + 1;
    throw InputError(
        "batch must be sorted (the atoms of frame 0, then those of frame 1, ...): "
        "batch[" +
        std::to_string(atom) + "] = " + std::to_string(batch[atom].item<int64_t>()) +
        " follows batch[" + std::to_string(atom - 1) +
        "] = " + std::to_string(batch[atom - 1].item<int64_t>()));
  }
  const at::Tensor counts = at::bincount(batch, /*weights=*/{}, num_frames);
  const at::Tensor differ = (counts != num_atoms).nonzero();
  if (differ.size(0) > 0) {
    const int64_t frame = differ[0].item<int64_t>();
    throw InputError("batch puts " + std::to_string(counts[frame].item<int64_t>()) +
                     " atoms in frame " + std::to_string(frame) + " but num_atoms[" +
                     std::to_string(frame) +
                     "] = " + std::to_string(num_atoms[frame].item<int64_t>()));
  }
}

}  // namespace

void check_batch_fields(const std::string& path, const std::string& key,
                        const std::vector<std::string>& fields) {
  const bool batch = std::find(fields.begin(), fields.end(), kBatch) != fields.end();
  const bool num_atoms = std::find(fields.begin(), fields.end(), kNumAtoms) != fields.end();
  if (batch != num_atoms) {
    throw ModelFileError(path + ": metadata key '" + key + "' is malformed: '" + kBatch +
                         "' and '" + kNumAtoms + "' go together (a batch needs both), got '" +
                         join(fields) + "'");
  }
}

PreparedInputs prepare_batch_inputs(const BatchInputs& inputs, int64_t num_types,
                                    const c10::Device& device) {
  // pos, atom_types, edge_index and edge_cell_shift as for one frame, on the CPU
  Inputs atoms{inputs.pos,   inputs.atom_types, inputs.edge_index, inputs.edge_cell_shift,
               at::Tensor(), at::Tensor()};
  PreparedInputs prepared = prepare_inputs(atoms, num_types, at::kCPU, false);
  const int64_t num_atoms_total = prepared.pos.size(0);

  const at::Tensor num_atoms = checked_index(inputs.num_atoms, kNumAtoms, "(F,)", -1);
  const int64_t num_frames = num_atoms.size(0);
  if (num_frames == 0) throw InputError("num_atoms must hold at least one frame, got shape (0,)");
  const at::Tensor empty = (num_atoms < 1).nonzero();
  if (empty.size(0) > 0) {
    const int64_t frame = empty[0].item<int64_t>();
    throw InputError("num_atoms must be at least 1 for every frame, got " +
                     std::to_string(num_atoms[frame].item<int64_t>()) + " for frame " +
                     std::to_string(frame));
  }
  const int64_t total = num_atoms.sum().item<int64_t>();
  if (total != num_atoms_total) {
    throw InputError("num_atoms must sum to N = " + std::to_string(num_atoms_total) +
                     " (the atoms in pos), got " + std::to_string(total));
  }
  const at::Tensor batch = checked_index(
      inputs.batch, kBatch, "(N,) = (" + std::to_string(num_atoms_total) + ",)", num_atoms_total);
  check_batch(batch, num_atoms);

  const at::Tensor& edge_index = prepared.edge_index;
  const at::Tensor center_frame = batch.index_select(0, edge_index[0]);
  const at::Tensor across = (center_frame != batch.index_select(0, edge_index[1])).nonzero();
  if (across.size(0) > 0) {
    const int64_t edge = across[0].item<int64_t>();
    const int64_t i = edge_index[0][edge].item<int64_t>();
    const int64_t j = edge_index[1][edge].item<int64_t>();
    throw InputError("edge " + std::to_string(edge) + " joins atom " + std::to_string(i) +
                     " (frame " + std::to_string(batch[i].item<int64_t>()) + ") and atom " +
                     std::to_string(j) + " (frame " + std::to_string(batch[j].item<int64_t>()) +
                     "): an edge must join two atoms of the same frame");
  }

  at::Tensor cell;
  if (inputs.cell.defined()) {
    if (inputs.cell.is_complex() || inputs.cell.scalar_type() == at::kBool) {
      throw InputError("cell must have a real dtype, got " + dtype_name(inputs.cell.scalar_type()));
    }
    if (inputs.cell.dim() != 3 || inputs.cell.size(0) != num_frames || inputs.cell.size(1) != 3 ||
        inputs.cell.size(2) != 3) {
      throw InputError("cell must have shape (F, 3, 3) = (" + std::to_string(num_frames) +
                       ", 3, 3), one per frame (zero for a non-periodic frame), got " +
                       shape_string(inputs.cell));
    }
    cell = inputs.cell.to(at::kCPU, at::kDouble).contiguous();
    if (!at::isfinite(cell).all().item<bool>()) {
      throw InputError("cell contains non-finite values (NaN or infinity)");
    }
  } else {
    cell = at::zeros({num_frames, 3, 3}, at::TensorOptions(at::kDouble));
  }

  prepared.volumes = at::linalg_det(cell).abs();
  prepared.volume = 0.0;  // per frame: volumes
  auto to_device = [&](const at::Tensor& tensor) { return tensor.to(device); };
  prepared.pos = to_device(prepared.pos);
  prepared.atom_types = to_device(prepared.atom_types);
  prepared.edge_index = to_device(prepared.edge_index);
  prepared.edge_cell_shift = to_device(prepared.edge_cell_shift);
  prepared.cell = to_device(cell);
  prepared.batch = to_device(batch);
  prepared.num_atoms = to_device(num_atoms);
  return prepared;
}

void as_batch_of_one(PreparedInputs& prepared) {
  const int64_t num_atoms = prepared.pos.size(0);
  const auto options = at::TensorOptions(at::kLong).device(prepared.pos.device());
  prepared.batch = at::zeros({num_atoms}, options);
  prepared.num_atoms = at::full({1}, num_atoms, options);
}

BatchOutputs collect_batch_outputs(const std::string& path, std::map<std::string, at::Tensor> raw,
                                   const PreparedInputs& prepared) {
  const int64_t num_atoms = prepared.pos.size(0);
  const int64_t num_frames = prepared.volumes.size(0);
  auto take = [&](const char* name, std::vector<int64_t> shape) -> std::optional<at::Tensor> {
    auto it = raw.find(name);
    if (it == raw.end()) return std::nullopt;
    int64_t numel = 1;
    for (int64_t size : shape) numel *= size;
    if (it->second.numel() != numel) {
      throw TorchError(path + ": the model returned '" + name + "' with shape " +
                       shape_string(it->second) + " for " + std::to_string(num_frames) +
                       " frames of " + std::to_string(num_atoms) + " atoms");
    }
    return translate_torch_errors(path + ": reading output '" + name + "'", [&] {
      return convert(it->second.reshape(shape), at::kCPU, at::kDouble);
    });
  };
  auto require = [&](const char* name, std::vector<int64_t> shape) {
    std::optional<at::Tensor> tensor = take(name, std::move(shape));
    if (!tensor) throw TorchError(path + ": the model did not return '" + name + "'");
    return *tensor;
  };

  BatchOutputs outputs;
  outputs.atomic_energy = require(kAtomicEnergy, {num_atoms});
  outputs.forces = require(kForces, {num_atoms, 3});
  std::optional<at::Tensor> total_energy = take(kTotalEnergy, {num_frames});
  outputs.total_energy = total_energy
                             ? *total_energy
                             : at::zeros({num_frames}, at::TensorOptions(at::kDouble))
                                   .index_add(0, prepared.batch.cpu(), outputs.atomic_energy);

  // Stress is per unit volume: NaN for a frame without one (the model's, or set here).
  const at::Tensor volume = prepared.volumes.view({num_frames, 1, 1});
  const at::Tensor has_volume = volume > 0.0;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::optional<at::Tensor> stress = take(kStress, {num_frames, 3, 3});
  std::optional<at::Tensor> virial = take(kVirial, {num_frames, 3, 3});
  if (stress && !virial) virial = at::where(has_volume, -*stress * volume, nan);
  if (virial && !stress) stress = -*virial / volume;
  if (stress) stress = at::where(has_volume, *stress, nan);
  outputs.virial = virial;
  outputs.stress = stress;
  outputs.atom_virial = take(kAtomVirial, {num_atoms, 3, 3});
  return outputs;
}

bool batch_outputs_finite(const BatchOutputs& outputs) {
  return all_finite(outputs.total_energy) && all_finite(outputs.atomic_energy) &&
         all_finite(outputs.forces);
}

std::optional<NonFiniteOutputError::ClosestPair> closest_pair_of_batch(
    const PreparedInputs& prepared) {
  const at::Tensor pos = prepared.pos.cpu();
  const at::Tensor edge_index = prepared.edge_index.cpu();
  const at::Tensor edge_frame = prepared.batch.cpu().index_select(0, edge_index[0]);
  // each edge's shift in Å (shift . cell of its frame), given with an identity cell
  const at::Tensor shift_vectors = at::bmm(prepared.edge_cell_shift.cpu().unsqueeze(1),
                                           prepared.cell.cpu().index_select(0, edge_frame))
                                       .squeeze(1);
  return closest_pair(pos, edge_index, shift_vectors,
                      at::eye(3, at::TensorOptions(at::kDouble)).view({1, 3, 3}));
}

}  // namespace nequip::detail
