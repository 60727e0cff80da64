"""model.zbl in a training configuration: true (the defaults) or a mapping of options reaches the
trained model, and the resolved configuration keeps it as given."""

import pytest
import torch
import yaml

from nequip.train import ConfigError, load_checkpoint, train, validate_config

from fixtures.training import TINY_MODEL, training_config


@pytest.mark.parametrize("zbl, written", [(True, {}), ({"inner_radius": 0.8, "outer_radius": 1.2}, {"inner_radius": 0.8, "outer_radius": 1.2})])
def test_a_model_trained_with_zbl_has_it(tiny_data, tmp_path, zbl, written):
    raw = training_config(tiny_data, tmp_path / "out", model=dict(TINY_MODEL, zbl=zbl), max_epochs=1)
    train(validate_config(raw))
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["model"]["zbl"] == written
    model_config = load_checkpoint(tmp_path / "out" / "last.ckpt")["hyper_parameters"]["model_config"]
    assert model_config["zbl"]["atomic_numbers"] == [29, 79]
    if written:
        assert model_config["zbl"]["inner_radius"] == [0.8] * 4
        assert model_config["zbl"]["outer_radius"] == [1.2] * 4


def test_zbl_options_must_be_known(tiny_data, tmp_path):
    raw = training_config(tiny_data, tmp_path / "out", model=dict(TINY_MODEL, zbl={"inner": 0.5}))
    with pytest.raises(ConfigError, match="model.zbl.inner"):
        validate_config(raw)
