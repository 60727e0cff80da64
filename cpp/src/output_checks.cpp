#include "output_checks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "text.h"

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
}  // namespace nequip
