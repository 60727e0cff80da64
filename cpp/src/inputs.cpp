#include "inputs.h"

#include <ATen/ATen.h>

#include <cmath>

#include "fields.h"
#include "output_checks.h"
#include "text.h"

namespace nequip::detail {

// numpy-style names (what users of both front ends know), torch's for the rest.
std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble:
      return "float64";
    case at::kFloat:
      return "float32";
    case at::kHalf:
      return "float16";
    case at::kLong:
      return "int64";
    case at::kInt:
      return "int32";
    case at::kShort:
      return "int16";
    case at::kChar:
      return "int8";
    case at::kByte:
      return "uint8";
    case at::kBool:
      return "bool";
    default:
      return c10::toString(dtype);
  }
}

namespace {

void check_defined(const at::Tensor& tensor, const char* name) {
  if (!tensor.defined()) throw InputError(std::string(name) + " is required");
}

void check_real(const at::Tensor& tensor, const char* name) {
  if (tensor.is_complex() || tensor.scalar_type() == at::kBool) {
    throw InputError(std::string(name) + " must have a real dtype, got " +
                     dtype_name(tensor.scalar_type()));
  }
}

void check_integer(const at::Tensor& tensor, const char* name) {
  if (!at::isIntegralType(tensor.scalar_type(), /*includeBool=*/false)) {
    throw InputError(std::string(name) + " must have an integer dtype, got " +
                     dtype_name(tensor.scalar_type()));
  }
}

void check_finite(const at::Tensor& tensor, const char* name) {
  if (tensor.numel() > 0 && !at::isfinite(tensor).all().item<bool>()) {
    throw InputError(std::string(name) + " contains non-finite values (NaN or infinity)");
  }
}

void check_range(const at::Tensor& values, int64_t end, const char* name, const char* bound) {
  if (values.numel() == 0) return;
  const int64_t low = values.min().item<int64_t>();
  const int64_t high = values.max().item<int64_t>();
  if (low < 0 || high >= end) {
    throw InputError(std::string(name) + " values must lie in [0, " + bound + ") = [0, " +
                     std::to_string(end) + "), got values in [" + std::to_string(low) + ", " +
                     std::to_string(high) + "]");
  }
}

// `tensor` in `dtype` where it is: the inputs are checked there.
// (Not to(..., MemoryFormat::Contiguous): for tensors of fewer than four dimensions it
// returns a strided tensor unchanged.)
at::Tensor as_dtype(const at::Tensor& tensor, at::ScalarType dtype) {
  return tensor.to(dtype).contiguous();
}

}  // namespace

const at::Tensor& PreparedInputs::get(const std::string& name) const {
  if (name == kPos) return pos;
  if (name == kEdgeIndex) return edge_index;
  if (name == kAtomTypes) return atom_types;
  if (name == kCell) return cell;
  if (name == kLocalMask) return local_mask;
  if (name == kEdgeCellShift) return edge_cell_shift;
  if (name == kBatch) return batch;
  if (name == kNumAtoms) return num_atoms;
  // the model's fields are among kKnownInputs (model.cpp), so this is a bug in the runtime
  throw Error("internal error of the nequip runtime: no prepared input named '" + name +
              "' (known: " + join(kKnownInputs) + ")");
}

at::Tensor convert(const at::Tensor& tensor, const c10::Device& device, at::ScalarType dtype) {
  return tensor.to(device, dtype).contiguous();
}

PreparedInputs prepare_inputs(const Inputs& inputs, int64_t num_types, const c10::Device& device,
                              bool takes_local_mask) {
  check_defined(inputs.pos, kPos);
  check_real(inputs.pos, kPos);
  if (inputs.pos.dim() != 2 || inputs.pos.size(1) != 3) {
    throw InputError("pos must have shape (N, 3), got " + shape_string(inputs.pos));
  }
  const int64_t num_atoms = inputs.pos.size(0);
  if (num_atoms == 0) throw InputError("pos must hold at least one atom, got shape (0, 3)");
  at::Tensor pos = as_dtype(inputs.pos, at::kDouble);
  check_finite(pos, kPos);

  check_defined(inputs.atom_types, kAtomTypes);
  check_integer(inputs.atom_types, kAtomTypes);
  if (inputs.atom_types.dim() != 1 || inputs.atom_types.size(0) != num_atoms) {
    throw InputError("atom_types must have shape (N,) = (" + std::to_string(num_atoms) +
                     ",), got " + shape_string(inputs.atom_types));
  }
  at::Tensor atom_types = as_dtype(inputs.atom_types, at::kLong);
  check_range(atom_types, num_types, kAtomTypes, "num_types");

  check_defined(inputs.edge_index, kEdgeIndex);
  check_integer(inputs.edge_index, kEdgeIndex);
  if (inputs.edge_index.dim() != 2 || inputs.edge_index.size(0) != 2) {
    throw InputError("edge_index must have shape (2, E), got " + shape_string(inputs.edge_index));
  }
  const int64_t num_edges = inputs.edge_index.size(1);
  at::Tensor edge_index = as_dtype(inputs.edge_index, at::kLong);
  check_range(edge_index, num_atoms, kEdgeIndex, "N");

  at::Tensor edge_cell_shift;
  if (inputs.edge_cell_shift.defined()) {
    check_real(inputs.edge_cell_shift, kEdgeCellShift);
    if (inputs.edge_cell_shift.dim() != 2 || inputs.edge_cell_shift.size(0) != num_edges ||
        inputs.edge_cell_shift.size(1) != 3) {
      throw InputError("edge_cell_shift must have shape (E, 3) = (" + std::to_string(num_edges) +
                       ", 3), got " + shape_string(inputs.edge_cell_shift));
    }
    edge_cell_shift = as_dtype(inputs.edge_cell_shift, at::kDouble);
    check_finite(edge_cell_shift, kEdgeCellShift);
  } else {
    edge_cell_shift = at::zeros({num_edges, 3}, at::TensorOptions(at::kDouble));
  }

  at::Tensor cell;
  if (inputs.cell.defined()) {
    check_real(inputs.cell, kCell);
    const bool square =
        inputs.cell.dim() == 2 && inputs.cell.size(0) == 3 && inputs.cell.size(1) == 3;
    const bool framed = inputs.cell.dim() == 3 && inputs.cell.size(0) == 1 &&
                        inputs.cell.size(1) == 3 && inputs.cell.size(2) == 3;
    if (!square && !framed) {
      throw InputError("cell must have shape (3, 3) or (1, 3, 3), got " +
                       shape_string(inputs.cell));
    }
    cell = as_dtype(inputs.cell, at::kDouble).reshape({1, 3, 3});
    check_finite(cell, kCell);
  } else {
    cell = at::zeros({1, 3, 3}, at::TensorOptions(at::kDouble));
  }

  // Every atom is local unless told otherwise: the model then sums every atomic energy.
  at::Tensor local_mask;
  if (inputs.local_mask.defined()) {
    if (!at::isIntegralType(inputs.local_mask.scalar_type(), /*includeBool=*/true)) {
      throw InputError(std::string("local_mask must have a bool or integer dtype, got ") +
                       dtype_name(inputs.local_mask.scalar_type()));
    }
    if (inputs.local_mask.dim() != 1 || inputs.local_mask.size(0) != num_atoms) {
      throw InputError("local_mask must have shape (N,) = (" + std::to_string(num_atoms) +
                       ",), got " + shape_string(inputs.local_mask));
    }
    local_mask = as_dtype(inputs.local_mask, at::kBool);
  } else if (takes_local_mask) {
    local_mask = at::ones({num_atoms}, at::TensorOptions(at::kBool));
  }

  PreparedInputs prepared;
  prepared.volume = std::abs(at::linalg_det(cell[0].cpu()).item<double>());
  prepared.closest = closest_pair(pos, edge_index, edge_cell_shift, cell);
  auto to_device = [&](at::Tensor& tensor) {
    return tensor.defined() ? tensor.to(device, /*non_blocking=*/false) : tensor;
  };
  prepared.local_mask = to_device(local_mask);
  prepared.pos = to_device(pos);
  prepared.atom_types = to_device(atom_types);
  prepared.edge_index = to_device(edge_index);
  prepared.edge_cell_shift = to_device(edge_cell_shift);
  prepared.cell = to_device(cell);
  return prepared;
}

}  // namespace nequip::detail
