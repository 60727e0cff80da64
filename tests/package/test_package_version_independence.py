"""A package runs its own code: it loads and predicts where the installed model code is broken."""

import os
import pickle
import subprocess
import sys
import textwrap

import torch

from nequip.package import ModelFromPackage
from nequip.scripts.package import main

from .helpers import assert_bitwise_equal, raises_exactly, rewrite_archive

# Installed in the subprocess through sitecustomize: importing the installed model code, its
# layers, the data layer, training or e3nn fails, as it might after an incompatible upgrade.
BROKEN_INSTALL = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BROKEN = ("nequip.model", "nequip.nn", "nequip.data", "nequip.train", "e3nn")

    class BrokenInstall(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BROKEN or name.startswith(tuple(b + "." for b in BROKEN)):
                raise ImportError(f"{name} is broken in this environment")
            return None

    sys.meta_path.insert(0, BrokenInstall())
    """
)

PREDICT = textwrap.dedent(
    """
    import sys
    import torch

    for name in ("nequip.model", "nequip.nn", "nequip.data", "e3nn"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} should not be importable here")

    from nequip.package import ModelFromPackage

    package, frames, output = sys.argv[1:]
    model = ModelFromPackage(package)
    torch.set_num_threads(1)  # as the reference predictions: bitwise reproducible
    keys = ("atomic_energy", "total_energy", "forces", "stress", "virial")
    out = [{key: model(dict(frame))[key].detach() for key in keys} for frame in torch.load(frames)]
    torch.save(out, output)
    """
)


def run_with_broken_install(tmp_path, *args):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BROKEN_INSTALL)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", PREDICT, *map(str, args)], env=env, capture_output=True, text=True)


def test_package_predicts_exactly_where_installed_model_code_is_broken(
    package_path, frames, checkpoint_predictions, tmp_path
):
    torch.save(frames, tmp_path / "frames.pt")
    result = run_with_broken_install(tmp_path, package_path, tmp_path / "frames.pt", tmp_path / "out.pt")
    assert result.returncode == 0, result.stderr
    assert_bitwise_equal(torch.load(tmp_path / "out.pt"), checkpoint_predictions)


def test_info_and_list_never_unpickle(package_path, tmp_path, capsys):
    # every pickle in the archive replaced by one that leaves a marker and raises when loaded
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close(); raise RuntimeError('trapped pickle was loaded')",)

    trap = pickle.dumps(Trap())
    trapped = rewrite_archive(
        package_path, tmp_path / "trapped.nequip.zip", lambda name: trap if name.endswith(".pkl") else None
    )
    for command, shown in ((["info"], "- Cu\n"), (["info", "--json"], '"Cu"'), (["list"], "/model/default.pkl\n")):
        assert main([*command, str(trapped)]) == 0
        assert shown in capsys.readouterr().out
        assert not marker.exists(), command

    # the trap is armed: loading the model does unpickle
    with raises_exactly(RuntimeError, "trapped pickle was loaded"):
        ModelFromPackage(trapped)
    assert marker.exists()
