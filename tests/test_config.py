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
    swept = parse(["smollm2", "--sweep", "sae.k=16,32", "hook_name=blocks.{2..4}.hook_resid_post"])
    assert len(swept.dictionary_configs()) == 6
    sweep_preset = parse(["sweep"])
    assert sorted(d.name for d in sweep_preset.dictionary_configs()) == sorted(
        f"blocks.{i}.hook_resid_post-k{k}" for i in (3, 5) for k in (16, 32, 64))
    transcoder = parse(["transcoder"])
    assert [(d.hook_name, d.hook_out, d.sae.skip_connection) for d in transcoder.dictionary_configs()] == [
        ("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out", True), ("blocks.3.hook_resid_post", None, False)]
    for cfg in (default, custom, gpt2, swept, sweep_preset, transcoder):
        cfg.validate()


def test_sweep_expands_a_grid_into_named_dictionaries():
    from core.config import DictionaryConfig, OptimizerConfig

    cfg = TrainingConfig(sweep=("sae.k=16,32", "hook_name=blocks.{2..4}.hook_resid_post", "optimizer.lr=1e-4,3e-4"))
    dictionaries = cfg.validate().dictionary_configs()
    assert len(dictionaries) == 12
    assert {(d.hook_name, d.sae.k, d.optimizer.lr) for d in dictionaries} == {
        (f"blocks.{i}.hook_resid_post", k, lr) for i in (2, 3, 4) for k in (16, 32) for lr in (1e-4, 3e-4)}
    assert "blocks.3.hook_resid_post-k32-lr0.0003" in {d.name for d in dictionaries}
    assert all(d.sae.architecture == cfg.sae.architecture for d in dictionaries)
    # Named dictionaries keep their names, with the swept values appended (hooks included).
    named = TrainingConfig(dictionaries=(DictionaryConfig(name="mlp", hook_name="blocks.1.ln2.hook_normalized",
                                                          hook_out="blocks.1.hook_mlp_out"),
                                         DictionaryConfig(name="resid", optimizer=OptimizerConfig(lr=1e-3))),
                           sweep=("sae.expansion_factor=4,16",))
    got = {d.name: d for d in named.dictionary_configs()}
    assert sorted(got) == ["mlp-expansion_factor16", "mlp-expansion_factor4", "resid-expansion_factor16",
                           "resid-expansion_factor4"]
    assert got["mlp-expansion_factor4"].hooks == ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")
    assert got["resid-expansion_factor16"].optimizer.lr == 1e-3 and got["mlp-expansion_factor4"].optimizer.lr == 4e-4
    # A run of one dictionary is named after its hook; configs with lists round-trip through JSON.
    assert [d.name for d in TrainingConfig().dictionary_configs()] == ["blocks.3.hook_resid_post"]
    assert TrainingConfig.from_dict(json.loads(named.to_json())) == named


@pytest.mark.parametrize("sweep, words", [
    (("trainer.lr=1e-3",), ["not a dictionary field", "optimizer.<field>"]),
    (("sae.k=16,big",), ["'big' is not a int"]),
    (("sae.k=16,16",), ["repeats a value"]),
    (("sae.k",), ["field=value1,value2"]),
    (("sae.k=8", "sae.k=16"), ["names sae.k twice"]),
    (("sae.matryoshka=1",), ["not a dictionary field"]),
])
def test_bad_sweeps_are_one_clear_error(sweep, words):
    with pytest.raises(ConfigError) as err:
        TrainingConfig(sweep=sweep).validate()
    for word in words:
        assert word in str(err.value)


def test_duplicate_and_unsafe_dictionary_names_are_refused():
    from core.config import DictionaryConfig

    with pytest.raises(ConfigError, match="named 'a'"):
        TrainingConfig(dictionaries=(DictionaryConfig(name="a"), DictionaryConfig(name="a"))).validate()
    with pytest.raises(ConfigError, match="plain folder name"):
        TrainingConfig(dictionaries=(DictionaryConfig(name="../x"),)).validate()
    with pytest.raises(ConfigError, match="hook_out equals hook_name"):
        TrainingConfig(dictionaries=(DictionaryConfig(hook_out="blocks.3.hook_resid_post"),)).validate()
    with pytest.raises(ConfigError, match="dictionary 'x': optimizer.lr"):
        from core.config import OptimizerConfig

        TrainingConfig(dictionaries=(DictionaryConfig(name="x", optimizer=OptimizerConfig(lr=-1)),)).validate()
