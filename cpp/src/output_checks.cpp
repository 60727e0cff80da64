#include "output_checks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "text.h"
#include "torch_errors.h"

namespace nequip {
namespace {

std::string non_finite_message(const std::string& path, double r_max,
                               const std::optional<NonFiniteOutputError::ClosestPair>& closest,
                               bool overlap, const std::string& pair) {
  const std::string what =
      path + ": the model gave a non-finite energy or forces (NaN or infinity)";
  const std::string threshold =
      detail::short_number(NonFiniteOutputError::kOverlapFraction) +
      " * r_max = " + detail::short_number(NonFiniteOutputError::kOverlapFraction * r_max) + " Å";
  if (overlap) {
    return what + ": " + pair + " are " + detail::short_number(closest->distance) +
           " Å apart (closer than " + threshold +
           "); overlapping atoms are the likely cause: check the structure";
  }
  const std::string closest_text =
      closest ? "the closest two atoms are " + detail::short_number(closest->distance) + " Å apart"
              : "no two atoms are within the cutoff";
  return what + " for finite inputs (" + closest_text +
         "); its weights may be non-finite: check the file";
}

std::string default_pair(const std::optional<NonFiniteOutputError::ClosestPair>& closest) {
  return closest
             ? "atoms " + std::to_string(closest->first) + " and " + std::to_string(closest->second)
             : std::string();
}

}  // namespace

NonFiniteOutputError::NonFiniteOutputError(const std::string& path, double r_max,
                                           std::optional<ClosestPair> closest)
    : Error(non_finite_message(path, r_max, closest,
                               closest && closest->distance < kOverlapFraction * r_max,
                               default_pair(closest))),
      path_(path),
      r_max_(r_max),
      closest_(closest) {}

bool NonFiniteOutputError::atoms_overlap() const {
  return closest_ && closest_->distance < kOverlapFraction * r_max_;
}

std::string NonFiniteOutputError::message(const std::string& pair) const {
  return non_finite_message(path_, r_max_, closest_, atoms_overlap(), pair);
}

namespace detail {

bool all_finite(const at::Tensor& tensor) {
  const double* values = tensor.data_ptr<double>();
  return std::all_of(values, values + tensor.numel(),
                     [](double value) { return std::isfinite(value); });
}

std::optional<NonFiniteOutputError::ClosestPair> closest_pair(const at::Tensor& pos,
                                                              const at::Tensor& edge_index,
                                                              const at::Tensor& edge_cell_shift,
                                                              const at::Tensor& cell) {
  if (edge_index.size(1) == 0) return std::nullopt;
  const at::Tensor centre = edge_index[0];
  const at::Tensor neighbour = edge_index[1];
  const at::Tensor vectors = pos.index_select(0, neighbour) - pos.index_select(0, centre) +
                             at::matmul(edge_cell_shift, cell[0]);
  const at::Tensor lengths = at::linalg_vector_norm(vectors, 2, {1});
  const int64_t shortest = lengths.argmin().item<int64_t>();
  return NonFiniteOutputError::ClosestPair{centre[shortest].item<int64_t>(),
                                           neighbour[shortest].item<int64_t>(),
                                           lengths[shortest].item<double>()};
}

}  // namespace detail

namespace {

// The closest pair of an unchecked frame (Inputs of any dtypes, on any device), on the CPU.
std::optional<NonFiniteOutputError::ClosestPair> closest_pair_of(const Inputs& frame) {
  const auto f64 = at::TensorOptions(at::kDouble);
  const at::Tensor pos = frame.pos.to(at::kCPU, at::kDouble).reshape({-1, 3});
  const at::Tensor edge_index = frame.edge_index.to(at::kCPU, at::kLong).reshape({2, -1});
  const int64_t num_edges = edge_index.size(1);
  const at::Tensor shift =
      frame.edge_cell_shift.defined()
          ? frame.edge_cell_shift.to(at::kCPU, at::kDouble).reshape({num_edges, 3})
          : at::zeros({num_edges, 3}, f64);
  const at::Tensor cell = frame.cell.defined()
                              ? frame.cell.to(at::kCPU, at::kDouble).reshape({1, 3, 3})
                              : at::zeros({1, 3, 3}, f64);
  return detail::closest_pair(pos, edge_index, shift, cell);
}

// A metadata value that must be a positive decimal number (r_max, closest_training_pair).
double positive_number(const std::string& path, const std::map<std::string, std::string>& metadata,
                       const std::string& key) {
  const auto found = metadata.find(key);
  if (found == metadata.end()) {
    throw ModelFileError(path + ": required metadata key '" + key + "' is missing");
  }
  double value = 0.0;
  size_t used = 0;
  try {
    value = std::stod(found->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != found->second.size() || !std::isfinite(value) || value <= 0.0) {
    throw ModelFileError(path + ": metadata key '" + key +
                         "' is malformed: expected a positive decimal number, got '" +
                         found->second + "'");
  }
  return value;
}

}  // namespace

void check_finite_outputs(const std::string& path, double r_max, const Inputs& frame,
                          const at::Tensor& atomic_energy, const at::Tensor& forces) {
  const auto finite = [](const at::Tensor& tensor) {
    return tensor.numel() == 0 || at::isfinite(tensor).all().item<bool>();
  };
  if (finite(atomic_energy) && finite(forces)) return;
  throw NonFiniteOutputError(path, r_max,
                             detail::translate_torch_errors(path + ": finding the closest atoms",
                                                            [&] { return closest_pair_of(frame); }));
}

std::optional<std::string> close_pair_warning(const std::string& path,
                                              const std::map<std::string, std::string>& metadata,
                                              const Inputs& frame) {
  const double r_max = positive_number(path, metadata, "r_max");
  const bool recorded = metadata.count("closest_training_pair") != 0;
  const double threshold = recorded ? positive_number(path, metadata, "closest_training_pair")
                                    : NonFiniteOutputError::kOverlapFraction * r_max;
  const std::optional<NonFiniteOutputError::ClosestPair> closest = detail::translate_torch_errors(
      path + ": finding the closest atoms", [&] { return closest_pair_of(frame); });
  if (!closest || !(closest->distance < threshold)) return std::nullopt;
  const std::string bound =
      recorded ? "the closest pair the model was trained on, " + detail::short_number(threshold) + " Å"
               : detail::short_number(NonFiniteOutputError::kOverlapFraction) +
                     " * r_max = " + detail::short_number(threshold) + " Å";
  return path + ": " + default_pair(closest) + " are " + detail::short_number(closest->distance) +
         " Å apart, closer than " + bound +
         ": the model extrapolates there and its energy and forces may be far off; check the "
         "structure (this warning is given once per model)";
}

}  // namespace nequip
