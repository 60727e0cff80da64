"""A package's code calls the installed CPU kernels (``nequip._kernels``) by versioned name and
checks their arguments first: where the installed kernels are of another version, its backward
runs as torch operations with the reference's numbers, instead of calling operators whose
signature changed. The package records the version its code calls."""

import subprocess
import sys
import textwrap

import pytest
import torch

from nequip.load import read_package_metadata
from nequip.nn.message_passing import KERNEL_VERSION

# In a fresh interpreter: where argv[4:] name operator schemas, they are registered in place of the
# installed nequip._kernels (a stand-in module, so the real library never loads); otherwise the real
# kernels load and the model is set to the reference backend. Then the package is loaded and a
# training step's numbers (energy, forces keeping their graph, the loss's gradients by every
# weight) are saved with the backends its modules chose and the warnings raised.
TRAINING_STEP = textwrap.dedent(
    """
    import sys, types, warnings
    import torch

    package, frames, output, *schemas = sys.argv[1:]
    if schemas:
        library = torch.library.Library("nequip", "FRAGMENT")
        for schema in schemas:
            library.define(schema)
        sys.modules["nequip._kernels"] = types.ModuleType("nequip._kernels")

    from nequip.package import ModelFromPackage

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ModelFromPackage(package)
    if not schemas:
        from nequip.nn import set_message_backend

        set_message_backend(model, "torch")
    torch.set_num_threads(1)
    model.train()
    weights = [weight.requires_grad_(True) for weight in model.parameters()]
    numbers = []
    for frame in torch.load(frames):
        out = model(dict(frame))
        loss = out["total_energy"].sum() + out["forces"].square().sum()
        numbers.append([out["total_energy"].detach(), out["forces"].detach(), *torch.autograd.grad(loss, weights)])
    backends = sorted({m.message_backend for m in model.modules() if hasattr(m, "message_backend")})
    torch.save({"backends": backends, "warnings": [str(w.message) for w in caught], "numbers": numbers}, output)
    """
)

V1 = {
    "message_backward": "(Tensor a, Tensor x, Tensor g, Tensor w, Tensor center, Tensor neighbor, Tensor row_path)"
    " -> (Tensor, Tensor, Tensor)",
    "message_double_backward": "(Tensor a, Tensor x, Tensor g, Tensor w, Tensor center, Tensor neighbor, "
    "Tensor row_path, Tensor hw, Tensor ha, Tensor hx) -> (Tensor, Tensor, Tensor, Tensor)",
}
CHANGED_ARGUMENTS = V1["message_backward"].replace("Tensor row_path)", "Tensor row_path, int mul)")
# kernels of a later library, as the package's code would find them
LATER_LIBRARIES = {
    "same name, other arguments": (
        [f"message_backward_v1{CHANGED_ARGUMENTS}", f"message_double_backward_v1{V1['message_double_backward']}"],
        f"the installed nequip._kernels registers nequip::message_backward_v1{CHANGED_ARGUMENTS}, "
        f"where this code calls nequip::message_backward_v1{V1['message_backward']}",
    ),
    "only a later version": (
        [f"{name}_v2{arguments}" for name, arguments in V1.items()],
        "the installed nequip._kernels has no nequip::message_backward_v1, which this code calls",
    ),
}


def training_step(package_path, frames_path, output, schemas=()):
    result = subprocess.run(
        [sys.executable, "-c", TRAINING_STEP, str(package_path), str(frames_path), str(output), *schemas],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return torch.load(output)


@pytest.fixture(scope="module")
def reference_step(package_path, frames, tmp_path_factory):
    """The training step's numbers by the reference backend, with the real kernels installed."""
    directory = tmp_path_factory.mktemp("kernels")
    torch.save(frames, directory / "frames.pt")
    step = training_step(package_path, directory / "frames.pt", directory / "reference.pt")
    assert step["backends"] == ["torch"]
    return directory / "frames.pt", step


def test_package_records_the_kernel_version_its_code_calls(package_path):
    assert read_package_metadata(package_path)["versions"]["nequip_kernels"] == str(KERNEL_VERSION) == "1"


@pytest.mark.parametrize("later", LATER_LIBRARIES)
def test_package_trains_with_the_reference_numbers_where_the_kernels_changed(
    package_path, reference_step, later, tmp_path
):
    frames_path, reference = reference_step
    schemas, why = LATER_LIBRARIES[later]
    step = training_step(package_path, frames_path, tmp_path / "step.pt", [f"nequip::{s}" for s in schemas])
    assert step["backends"] == ["torch"]
    # one per message passing module (warnings.simplefilter("always"))
    ours = [message for message in step["warnings"] if message.startswith("the message passing")]
    assert set(ours) == {f"the message passing runs as torch operations (slower): {why}"}
    assert len(step["numbers"]) == len(reference["numbers"]) > 0
    for got, expected in zip(step["numbers"], reference["numbers"]):
        assert len(got) == len(expected)
        for got_value, expected_value in zip(got, expected):
            torch.testing.assert_close(got_value, expected_value, rtol=0, atol=0)

