"""The rest of the NequIP ecosystem: models of the other NequIP release (nequip 0.10 to 0.19.x) in,
ours out, through packages.

- :mod:`~nequip.ecosystem.packages`: reading that release's packages (for :mod:`nequip.load`),
  re-packaging them in their own format;
- :mod:`~nequip.ecosystem.model`: its model behind our eager-model interface (``EcosystemModel``),
  with the layer-by-layer parts of LAMMPS on several ranks;
- :mod:`~nequip.ecosystem.adapter`: our model behind its interface, in every package we write;
- :mod:`~nequip.ecosystem.nequip_net`: nequip.net model IDs, downloaded once into a cache.

This package is interned into every package we write (the adapter): keep this file free of imports.
"""
