"""NequIP models in other simulation engines: :mod:`nequip.integrations.torchsim` (TorchSim,
many systems per call; needs the ``torchsim`` extra, ``pip install nequip[torchsim]``)."""
