"""Configs: JSON round trip, validation messages, command-line overrides of the example script."""

import json
import runpy

import pytest
import tyro

from core import ConfigError, SAEConfig, TrainingConfig
from core.config import AnalysisConfig

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_training_config_json_round_trip(tmp_path):
    cfg = TrainingConfig(exp_name="rt")
    cfg.sae.architecture = "jumprelu"
    cfg.trainer.lr_decay_steps = 7
    path = tmp_path / "config.json"
    cfg.save_json(path)
    loaded = TrainingConfig.load_json(path)
    assert loaded == cfg
    assert json.loads(path.read_text())["sae"]["architecture"] == "jumprelu"


def test_analysis_config_round_trip():
    cfg = AnalysisConfig(analysis_name="a1", top_k=7)
    assert AnalysisConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("mutate, field, allowed", [
    (lambda c: setattr(c.sae, "architecture", "gated"), "sae.architecture", "'topk'"),
    (lambda c: setattr(c.trainer, "lr_schedule", "step"), "trainer.lr_schedule", "'cosine'"),
    (lambda c: setattr(c.logging, "wandb_mode", "maybe"), "logging.wandb_mode", "'offline'"),
    (lambda c: setattr(c.model, "dtype", "int8"), "model.dtype", "'bfloat16'"),
    (lambda c: setattr(c, "device", "tpu"), "device", "'cuda:N'"),
])
def test_validation_names_field_and_allowed_values(mutate, field, allowed):
    cfg = TrainingConfig()
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert field in str(err.value) and allowed in str(err.value)


def test_validation_of_numbers():
    cfg = TrainingConfig()
    cfg.activations.train_batch_size = cfg.activations.buffer_tokens
    with pytest.raises(ConfigError, match="buffer_tokens"):
        cfg.validate()
    with pytest.raises(ConfigError, match="sae.k"):
        SAEConfig(k=0).validate()
    with pytest.raises(ConfigError, match="exp_name"):
        TrainingConfig(exp_name="../escape").validate()


def test_unknown_field_in_json_is_reported(tmp_path):
    path = tmp_path / "c.json"
    data = TrainingConfig().to_dict()
    data["sae"]["expansion"] = 4
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="no field.*expansion"):
        TrainingConfig.load_json(path)


def test_invalid_json_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainingConfig.load_json(path)


def test_example_script_command_line_overrides():
    ns = runpy.run_path(str(ROOT / "run_train_example.py"), run_name="example")
    parse = lambda args: tyro.cli(ns["Preset"], default=ns["OFFLINE_PRESET"], args=args,  # noqa: E731
                                  config=(tyro.conf.OmitSubcommandPrefixes,))
    default = parse([])
    assert default.model.name == "SmolLM2-135M-Instruct" and default.dataset.path == "builtin:python-docs"
    custom = parse(["smollm2", "--sae.architecture", "jumprelu", "--trainer.total-training-tokens", "5000"])
    assert custom.sae.architecture == "jumprelu" and custom.trainer.total_training_tokens == 5000
    gpt2 = parse(["gpt2"])
    assert gpt2.model.name == "gpt2" and gpt2.activations.hook_name == "blocks.6.hook_resid_post"
    for cfg in (default, custom, gpt2):
        cfg.validate()
