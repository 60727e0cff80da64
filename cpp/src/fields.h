// The field names of FILE_CONTRACT §1 that cross the runtime's boundary, and which of them
// each kind of file takes and returns. Internal to the runtime.
#pragma once

#include <string>
#include <vector>

namespace nequip::detail {

inline constexpr const char* kPos = "pos";
inline constexpr const char* kEdgeIndex = "edge_index";
inline constexpr const char* kAtomTypes = "atom_types";
inline constexpr const char* kCell = "cell";
inline constexpr const char* kEdgeCellShift = "edge_cell_shift";
inline constexpr const char* kLocalMask = "local_mask";
inline constexpr const char* kBatch = "batch";
inline constexpr const char* kNumAtoms = "num_atoms";
inline constexpr const char* kAtomicEnergy = "atomic_energy";
inline constexpr const char* kTotalEnergy = "total_energy";
inline constexpr const char* kForces = "forces";
inline constexpr const char* kStress = "stress";
inline constexpr const char* kVirial = "virial";
inline constexpr const char* kAtomVirial = "atom_virial";
// A committee file's deviations over its models (metadata key committee_size).
inline constexpr const char* kForceDeviation = "force_deviation";
inline constexpr const char* kEnergyDeviation = "energy_deviation";
inline constexpr const char* kVirialDeviation = "virial_deviation";
// A committee's layer-by-layer call: each member's forces, total energy and virial (its rank's
// share; Outputs::member_forces ...), never outputs of a file.
inline constexpr const char* kMemberForces = "member_forces";
inline constexpr const char* kMemberEnergies = "member_energies";
inline constexpr const char* kMemberVirials = "member_virials";

// FILE_CONTRACT §3-4: the inputs every model takes (the defaults of files whose metadata
// does not list them), and the outputs of AOTI files whose metadata lacks
// `nequip_aoti_outputs` (the `pair_nequip` order of older producers).
inline const std::vector<std::string> kRequiredInputs = {kPos, kEdgeIndex, kAtomTypes, kCell,
                                                         kEdgeCellShift};
inline const std::vector<std::string> kAotiDefaultOutputs = {kAtomicEnergy, kForces, kVirial};
// FILE_CONTRACT §3: what every TorchScript model returns.
inline const std::vector<std::string> kTorchScriptOutputs = {kAtomicEnergy, kTotalEnergy, kForces,
                                                             kStress, kVirial};
// Every field the runtime knows: the required inputs plus this project's local_mask (target
// `pair_nequip_domain`, our TorchScript files) and a batch's batch and num_atoms (target
// `batch`, our TorchScript files); §3's outputs plus our atom_virial and a committee's
// deviations.
inline const std::vector<std::string> kKnownInputs = {
    kPos, kEdgeIndex, kAtomTypes, kCell, kEdgeCellShift, kLocalMask, kBatch, kNumAtoms};
inline const std::vector<std::string> kKnownOutputs = {
    kAtomicEnergy, kTotalEnergy,    kForces,          kStress,         kVirial,
    kAtomVirial,   kForceDeviation, kEnergyDeviation, kVirialDeviation};
inline const std::vector<std::string> kRequiredOutputs = {kAtomicEnergy, kForces};

}  // namespace nequip::detail
