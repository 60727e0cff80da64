"""The C++ runtime (through nequip._runtime) reproduces the eager model, for every compiled
format, on random frames: periodic, non-periodic, slabs, cells smaller than the cutoff, an
isolated atom and atoms without neighbors."""

import numpy as np
import pytest

from fixtures.compiled import COMPILED_KEYS, PER_EDGE_TYPE_CUTOFF, R_MAX, TYPE_NAMES
from nequip._runtime import Model
from runtime_cases import assert_matches, compute, eager_outputs, random_frames

NUM_FRAMES = 20


def key_id(key) -> str:
    return "-".join(part for part in key if part)


@pytest.fixture(params=COMPILED_KEYS, ids=key_id, scope="module")
def compiled(request, compiled_models):
    """(key, runtime model, eager model) for one compiled file."""
    key = request.param
    return key, Model(str(compiled_models[key])), compiled_models.eager[key[0]]


def expected_output_names(key):
    dtype, mode, target = key
    if mode == "torchscript":
        return ["atomic_energy", "total_energy", "forces", "stress", "virial", "atom_virial"]
    return {
        "ase": ["atomic_energy", "total_energy", "forces", "stress"],
        "pair_nequip": ["atomic_energy", "forces", "virial"],
        "pair_nequip_domain": ["atomic_energy", "forces", "virial", "atom_virial"],
        "batch": ["atomic_energy", "total_energy", "forces", "stress", "virial"],
    }[target]


def test_metadata_is_read_from_the_file(compiled):
    key, model, eager = compiled
    dtype, mode, _ = key
    assert model.format == mode
    assert model.device == "cpu"
    assert model.type_names == list(TYPE_NAMES)
    assert model.num_types == len(TYPE_NAMES)
    assert model.r_max == R_MAX
    assert model.model_dtype == dtype
    assert model.output_names == expected_output_names(key)
    assert {k: model.metadata[k] for k in eager.metadata()} == eager.metadata()
    if dtype == "float32":
        np.testing.assert_array_equal(model.per_edge_type_cutoff, np.array(PER_EDGE_TYPE_CUTOFF))
    else:
        assert model.per_edge_type_cutoff is None


def test_runtime_equals_eager_model_on_random_frames(compiled):
    key, model, eager = compiled
    dtype = key[0]
    frames = random_frames(NUM_FRAMES, per_edge_type_cutoff=model.per_edge_type_cutoff, seed=COMPILED_KEYS.index(key))
    assert any(len(f["pos"]) == 1 for f in frames) and any(f["edge_index"].shape[1] == 0 for f in frames)
    for index, frame in enumerate(frames):
        got = compute(model, frame)
        expected = eager_outputs(eager, frame)
        has_volume = abs(np.linalg.det(frame["cell"])) > 0
        for name in ("total_energy", "atomic_energy", "forces"):
            assert_matches(got[name], expected[name], dtype, f"frame {index} {name}")
        # virial: from the model, or -stress * V when the model gives stress only
        gives_virial = "virial" in model.output_names or has_volume
        assert ("virial" in got) == gives_virial, f"frame {index}: virial present: {'virial' in got}"
        if gives_virial:
            assert_matches(got["virial"], expected["virial"], dtype, f"frame {index} virial")
        # stress: only when the cell has a volume, from the model or -virial / V
        assert ("stress" in got) == has_volume, f"frame {index}: stress present: {'stress' in got}"
        if has_volume:
            assert_matches(got["stress"], expected["stress"], dtype, f"frame {index} stress")
        # per-atom virials: from the models that return them
        assert ("atom_virial" in got) == ("atom_virial" in model.output_names)
        if "atom_virial" in got:
            assert_matches(got["atom_virial"], expected["atom_virial"], dtype, f"frame {index} atom_virial")
