#include "output_checks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "text.h"
#include "torch_errors.h"

namespace nequip {
namespace {

// The likely cause, of the causes this process can check: its own atoms overlapping, then
// features that came in non-finite from other ranks, else the model itself.
std::string non_finite_message(const std::string& path, double r_max,
                               const std::optional<NonFiniteOutputError::ClosestPair>& closest,
                               bool overlap, bool received_non_finite, const std::string& pair) {
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
  if (received_non_finite) {
    return what +
           ": node features (or their gradients) came in non-finite from the other ranks "
           "through the per-layer exchange, while this rank's own were finite and none of its "
           "atoms overlap (" +
           closest_text + ", not closer than " + threshold +
           "): the cause is on another rank, which reports it";
  }
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
                                           std::optional<ClosestPair> closest,
                                           bool received_non_finite)
    : Error(non_finite_message(path, r_max, closest,
                               closest && closest->distance < kOverlapFraction * r_max,
                               received_non_finite, default_pair(closest))),
      path_(path),
      r_max_(r_max),
      closest_(closest),
      received_non_finite_(received_non_finite) {}

bool NonFiniteOutputError::atoms_overlap() const {
  return closest_ && closest_->distance < kOverlapFraction * r_max_;
}

std::string NonFiniteOutputError::message(const std::string& pair) const {
  return non_finite_message(path_, r_max_, closest_, atoms_overlap(), received_non_finite_, pair);
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
  const int64_t num_edges = edge_index.size(1);
  if (num_edges == 0) return std::nullopt;
  // one pass over the edges, in plain loops on the CPU (every call makes it)
  const at::Tensor p = pos.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor e = edge_index.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor s = edge_cell_shift.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor h = cell.to(at::kCPU, at::kDouble).contiguous();
  const double* x = p.data_ptr<double>();
  const int64_t* center = e.data_ptr<int64_t>();
  const int64_t* neighbor = center + num_edges;
  const double* shift = s.data_ptr<double>();
  const double* lattice = h.data_ptr<double>();  // rows a, b, c
  int64_t shortest = 0;
  double shortest_squared = std::numeric_limits<double>::infinity();
  for (int64_t edge = 0; edge < num_edges; ++edge) {
    const double* xi = x + 3 * center[edge];
    const double* xj = x + 3 * neighbor[edge];
    const double* n = shift + 3 * edge;
    double squared = 0.0;
    for (int k = 0; k < 3; ++k) {
      const double d =
          xj[k] - xi[k] + n[0] * lattice[k] + n[1] * lattice[3 + k] + n[2] * lattice[6 + k];
      squared += d * d;
    }
    if (squared < shortest_squared) {
      shortest_squared = squared;
      shortest = edge;
    }
  }
  return NonFiniteOutputError::ClosestPair{center[shortest], neighbor[shortest],
                                           std::sqrt(shortest_squared)};
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

}  // namespace

void check_finite_outputs(const std::string& path, double r_max, const Inputs& frame,
                          const at::Tensor& atomic_energy, const at::Tensor& forces) {
  const auto finite = [](const at::Tensor& tensor) {
    return tensor.numel() == 0 || at::isfinite(tensor).all().item<bool>();
  };
  if (finite(atomic_energy) && finite(forces)) return;
  throw NonFiniteOutputError(
      path, r_max, detail::translate_torch_errors(path + ": finding the closest atoms", [&] {
        return closest_pair_of(frame);
      }));
}

std::string ClosePair::message(const std::string& path, const std::string& pair,
                               const std::string& how_often) const {
  const std::string bound =
      from_training_data
          ? "the closest pair the model was trained on, " + detail::short_number(threshold) + " Å"
          : detail::short_number(NonFiniteOutputError::kOverlapFraction) +
                " * r_max = " + detail::short_number(threshold) + " Å";
  return path + ": " + (pair.empty() ? default_pair(atoms) : pair) + " are " +
         detail::short_number(atoms.distance) + " Å apart, closer than " + bound +
         ": the model extrapolates there and its energy and forces may be far off; check the "
         "structure (this warning is given " +
         how_often + ")";
}

std::optional<std::string> close_pair_warning(const std::string& path,
                                              const std::map<std::string, std::string>& metadata,
                                              const Inputs& frame) {
  const double threshold = close_pair_threshold(path, metadata);
  const std::optional<NonFiniteOutputError::ClosestPair> closest = detail::translate_torch_errors(
      path + ": finding the closest atoms", [&] { return closest_pair_of(frame); });
  if (!closest || !(closest->distance < threshold)) return std::nullopt;
  return ClosePair{*closest, threshold, metadata.count("closest_training_pair") != 0}.message(path);
}

}  // namespace nequip
