/* -*- c++ -*- ----------------------------------------------------------
   pair_style nequip: a compiled NequIP model (*.nequip.pt2 | *.nequip.pth)
   evaluated through the nequip C++ runtime.

     pair_style nequip [device cpu|cuda|cuda:K] [deviation FILE [every N]]
     pair_coeff * * model.nequip.pt2 NAME_1 ... NAME_ntypes

   The model runs on the device it was compiled for; a CUDA model on the GPU of index
   (node-local MPI rank mod GPUs of the node), so that the ranks of a node share its GPUs.
   `device` overrides this: `cuda` (one GPU per rank of a node), `cuda:K`, or `cpu`.

   NAME_k is the model type name (see the model's type_names) of LAMMPS atom
   type k, or NULL for types left to other styles of pair_style hybrid.
   When NAME_k is an element symbol, the mass of type k is compared with the
   element's (a warning when they differ by more than 5%).

   On one MPI rank any compiled model works. On several, the model runs layer
   by layer, the ranks exchanging the ghost atoms' node features after every
   layer, so that each rank evaluates the edges of its own atoms only: files
   of target pair_nequip_domain (.pt2) and .nequip.pth files of this version.
   compute stress/atom needs a model that returns atom_virial (the same files).

   A committee file (several models compiled into one) drives the dynamics with its mean
   (or first model), on one rank or several (its members layer by layer, one after the
   other). `deviation FILE` (a committee file): every N steps (default 1) a line of
   DeePMD-kit's model_devi.out columns, step, max/min/avg virial deviation (eV per atom),
   max/min/avg force deviation (eV/Angstrom), reduced over the world communicator. Every
   step it evaluates, a committee also gives `compute pair nequip` three values (max force
   deviation eV/Angstrom, energy deviation eV, max virial deviation eV per atom: for
   `fix halt`) and `fix pair` the per-atom force deviation (name force_deviation, flag 0).
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_NEQUIP_H
#define LMP_PAIR_NEQUIP_H

#include "pair.h"

#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace nequip {
class Model;
struct Outputs;
struct ClosePair;
}    // namespace nequip

namespace LAMMPS_NS {

class PairNequIP : public Pair {
 public:
  PairNequIP(class LAMMPS *);
  ~PairNequIP() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void finish() override;
  void *extract_peratom(const char *, int &) override;

  // the node features of the per-layer exchange (rows of atom indices, exchange_width wide)
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

  // Between two layers: ghost rows := their owners' (forward), or owners' rows += their
  // ghosts' and ghost rows := 0 (reverse). rows: (nlocal + nghost) x width doubles.
  void exchange_rows(double *rows, int width, bool forward);
  class RankExchange;    // nequip::FeatureExchange through exchange_rows()

 protected:
  std::unique_ptr<nequip::Model> model;
  std::string requested_device;    // pair_style's `device`, "" = the model's own
  int num_model_types;
  std::vector<int> model_type;        // LAMMPS atom type (1..ntypes) -> model type, -1 = NULL
  std::vector<double> model_cutsq;    // squared cutoff per (center, neighbor) model type pair

  // Several MPI ranks (set in init_style), the model layer by layer
  // (Model::compute_exchanging): the nodes are all owned and ghost atoms (node = atom index),
  // the edges those of the owned atoms, and the ghosts' features come from their owners after
  // every layer. On one rank the ghosts are folded onto their owned images instead.
  bool exchange_mode;
  double *exchanged_rows = nullptr;    // the features being exchanged, during exchange_rows()
  int exchanged_width = 0;

  // The model's graph for one step, rebuilt in compute(); the buffers keep their capacity.
  std::vector<int> node_of_atom;          // atom -> node, or -1 (one rank)
  std::vector<int> atom_of_node;          // node -> atom index
  int num_local_nodes;                    // nodes 0..num_local_nodes-1 are owned atoms
  std::vector<int> ghost_owner;           // ghost (index - nlocal) -> owned atom (one rank)
  std::vector<double> ghost_shift;        // ghost -> integer image shift (3 per ghost)
  std::vector<double> node_pos;           // (N, 3)
  std::vector<int64_t> node_type;         // (N,)
  std::vector<uint8_t> node_is_local;     // (N,) local_mask: owned atoms of non-NULL types
  std::vector<int64_t> edge_index;        // (2, E): center nodes, then neighbor nodes
  std::vector<int64_t> edge_neighbor;     // neighbor nodes, while edge_index is built
  std::vector<double> edge_cell_shift;    // (E, 3)

  // Graph sizes summed over the steps of a run (several ranks), reported by finish(): each
  // rank's work per owned atom.
  double tally_steps = 0.0, tally_local_nodes = 0.0, tally_nodes = 0.0, tally_edges = 0.0;

  // pair_style's `deviation FILE every N` (a committee file): DeePMD-kit's model_devi.out,
  // written by rank 0; the last step written, so that a step evaluated twice (the setup of
  // a second run) is written once.
  std::string deviation_path;
  bigint deviation_every = 1;
  FILE *deviation_file = nullptr;
  bigint deviation_last_step = -1;
  // A committee's deviations at the last step evaluated (committee_deviations): per atom
  // (index; owned atoms) the force deviation, what `fix pair` reads (extract_peratom); the
  // six values of a model_devi.out line; pvector (compute pair) points at committee_values:
  // max force deviation, energy deviation, max virial deviation per atom (nextra 3).
  std::vector<double> atom_force_deviation;
  std::array<double, 6> deviation_summary{};
  std::array<double, 3> committee_values{};
  void committee_deviations(const nequip::Outputs &out, int64_t num_nodes);
  void write_deviation();

  // Whether this pair_coeff's element names were checked against the types' masses.
  bool masses_checked = false;

  void allocate();
  int node_local_rank();
  void log_devices();
  void warn_of_mismatched_masses();
  void check_atoms_per_volume();
  void warn_of_close_pair(const nequip::ClosePair &close);
  int add_node(int atom_index, int mtype);
  void map_ghosts_to_owners();
  void build_graph();
  void build_exchange_graph();
  bool is_edge(int i, int itype, int j) const;
};

}    // namespace LAMMPS_NS

#endif
