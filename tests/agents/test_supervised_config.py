"""SFT and DPO share their optimisation fields and checks (agents.text.supervised.SupervisedConfig)."""

import pytest

from agents.text.dpo import DPOConfig
from agents.text.sft import SFTConfig


@pytest.mark.parametrize("config_cls", [SFTConfig, DPOConfig])
@pytest.mark.parametrize("changes, message", [({"epochs": 0}, "epochs=0"), ({"batch_size": 1.5}, "batch_size=1.5"),
                                              ({"max_length": 0}, "max_length=0"), ({"lr": 0.0}, "lr=0.0"),
                                              ({"checkpoint_every": 0}, "checkpoint_every=0")])
def test_shared_fields_are_checked_for_both(config_cls, changes, message):
    with pytest.raises(ValueError, match=message):
        config_cls(**changes)


@pytest.mark.parametrize("config_cls, kind", [(SFTConfig, "JSONL of prompt/completion records"),
                                              (DPOConfig, "preference JSONL")])
def test_data_that_is_not_a_file_names_what_it_should_hold(config_cls, kind, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"data='{tmp_path}/none.jsonl' is not a file \(expected {kind}\)"):
        config_cls(data=str(tmp_path / "none.jsonl"))


def test_each_keeps_its_own_fields_and_defaults():
    assert SFTConfig().epochs == 2 and DPOConfig().epochs == 1
    with pytest.raises(ValueError, match="num_demos=0"):
        SFTConfig(num_demos=0)
    with pytest.raises(ValueError, match="beta=0"):
        DPOConfig(beta=0)
