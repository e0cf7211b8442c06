"""Dictionaries from elsewhere: SAELens, sparsify and circuit-tracer folders in and out, and SAELens's
hub names.

**Import.** `load_dictionary(folder)` opens, besides this library's own folders (`config.json`):

- SAELens 6.x folders: `cfg.json` (architecture, d_in, d_sae, ..., `metadata` with model_name,
  hook_name, ...) + `sae_weights.safetensors` (+ `sparsity.safetensors`, which is not needed);
- SAELens folders of before 6.0: the same files, the config in its older keys (`hook_point`,
  `activation_fn_str`, `activation_fn_kwargs.k`, a boolean `normalize_activations`, ...);
- sparsify folders: `cfg.json` + `sae.safetensors`, one hookpoint of a sparsify run, whose
  `config.json` one folder up names the model;
- `saelens:<release>/<sae_id>` (`SAELENS_RELEASES`, GPT-2's releases): the folder the SAELens
  registry names, downloaded through `huggingface_hub` into its usual cache;
- circuit-tracer folders (`config.yaml` + `layer_<i>.safetensors`, or `W_enc_<i>` / `W_dec_<i>`
  files): a `TranscoderSet` or a `CrossLayerTranscoder` (`core.sae.circuit_tracer` says how).

Each becomes a `SparseAutoencoder` whose `encode` / `decode` / `forward` compute what the other
library's do, up to float rounding. What the conversion does (x a row vector, pre the
pre-activations):

- SAELens `apply_b_dec_to_input: false`: pre = x W_enc + b_enc = (x - b_dec) W_enc + (b_enc +
  b_dec W_enc); b_enc absorbs b_dec W_enc (in float64, rounded once).
- SAELens topk with `rescale_acts_by_decoder_norm` (n the decoder rows' norms): topk(pre * n) and
  decode (f / n) W_dec are topk of W_enc * n, b_enc * n and decode f (W_dec / n).
- SAELens jumprelu thresholds t: relu(pre) * (pre > t) = pre * (pre > max(t, 0)); kept as absolute
  values (`JumpReLUSAE.set_threshold`), never through a logarithm. SAELens saves its batchtopk and
  matryoshka SAEs as jumprelu with one threshold for every latent, which load as such.
- SAELens skip transcoders store W_skip as [d_out, d_in], this library as [d_in, d_out].
- SAELens `reshape_activations: hook_z` flattens [n_heads, d_head] heads first, as this library's
  activations of `attn.hook_z` are.
- sparsify: `encoder.weight` is W_enc transposed; it takes the top k of relu(pre), which are the
  same values as the relu of the top k of pre. Hookpoints are Hugging Face module names, mapped to
  TransformerLens hooks (`h.6` / `layers.6` -> `blocks.6.hook_resid_post`, `h.6.mlp` ->
  `blocks.6.hook_mlp_out`, a transcoder's input `blocks.6.mlp.hook_in`, ...).
- SAELens `normalize_activations: layer_norm` (an SAE): each token standardized before encoding and
  restored after decoding, as SAELens does (`core.sae.normalization.TokenStandardization`).
- An SAE of a model with centered writing weights (`model_from_pretrained_kwargs.center_writing_weights`,
  at a hook that writes to the residual stream): SAELens saw P x, P = I - 11^T/d; P is folded into the
  encoder and the reconstruction adds the mean back (`core.sae.normalization.ResidualCentering`), so on raw
  activations the features, the reconstruction error and the spliced-in CE loss are SAELens's.
- Model names become what TransformerLens loads (`gpt2-small` -> `gpt2`, by TransformerLens's own
  alias table); Hugging Face repository ids and local folders stay as they are.

What cannot be represented exactly is refused with one sentence naming the field and its value:
other architectures (gated, abstopk, ...; SAELens's batchtopk / matryoshka training checkpoints),
`normalize_activations` other than "none" and an SAE's "layer_norm" (constant_norm_rescale,
covariance_whitening; an unfolded expected_average_only_in constant is not in the folder),
activations of a TransformerLens model with other processed weights (`model_from_pretrained_kwargs`
such as fold_value_biases, or center_writing_weights under a transcoder whose hooks it centers),
one attention head
(`hook_head_index`), sparsify's groupmax, a skip path on an SAE, and weights that are missing,
of the wrong shape, or not finite.

**Export.** `export_saelens(dictionary, folder)` writes any dictionary of this library as a
SAELens 6 folder (`SAE.load_from_disk` reads it); `export_sparsify` writes a top-k one as a
sparsify folder (`SparseCoder.load_from_disk`); `export_circuit_tracer` writes a transcoder set or
a CLT as a circuit-tracer folder (`ReplacementModel.from_pretrained(model, "/abs/folder")`). Normalization is folded, as in every saved
dictionary.

**Analysis.** An analysis is written inside the dictionary's folder, which for a foreign
dictionary may be another tool's output or a Hugging Face cache folder; `import_dictionary`
therefore writes a converted copy to `<results>/imported/dictionaries/<name>/` (this library's
format, with a `source` entry saying where it came from), which is analyzed and browsed like a
trained one (`imported:<name>` in the viewer). `python -m core.formats --help` is the command line.

Where it lives: the readers and writers depend only on the dictionary model and its config
(`core.sae.saelens`, `core.sae.sparsify`, `core.sae.foreign`; hub names in `core.sae.hub`), and
`load_dictionary` opens them all. This package adds what sits above them: `export_saelens` /
`export_sparsify` of a dictionary folder, `import_dictionary` into the results folder,
`evaluate_imported`, and the command line (`__main__.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Optional

from ..config import DatasetConfig, LanguageModelConfig
from ..data import held_out_and_batches
from ..evals import EvalResult, evaluate
from ..lm import LanguageModel
from ..errors import ConfigError, DictionaryFormatError, DictionaryLoadError
from ..files import atomic_write
from ..layout import IMPORTED_RUN, imported_dictionary_folder
from ..sae import (CONFIG_FILENAME, CrossLayerTranscoder, SparseAutoencoder, TranscoderSet, is_foreign, load_dictionary,
                   load_foreign)
from ..sae.circuit_tracer import CIRCUIT_TRACER_CONFIG, is_circuit_tracer_folder, read_circuit_tracer, write_circuit_tracer
from ..sae.foreign import (SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, foreign_format, model_name_for,
                           read_json)
from ..sae.hub import SAELENS_RELEASES, HubLocation, SAELensRelease, download_saelens, is_hub_name, saelens_hub_location
from ..sae.saelens import SAELENS_FORMAT_VERSION, write_saelens
from ..sae.sparsify import sparsify_hooks, write_sparsify

log = logging.getLogger(__name__)


Dictionary = SparseAutoencoder | CrossLayerTranscoder | TranscoderSet


def _as_dictionary(dictionary: Dictionary | str | Path) -> Dictionary:
    return dictionary if isinstance(dictionary, Dictionary) else load_dictionary(dictionary)


def _one_dictionary(dictionary: SparseAutoencoder | str | Path, to: str) -> SparseAutoencoder:
    sae = _as_dictionary(dictionary)
    if not isinstance(sae, SparseAutoencoder):
        raise DictionaryFormatError(f"{to} holds one SAE or transcoder per folder, and this is a {sae.kind}; export it "
                                    f"to circuit-tracer (export_circuit_tracer), or export its members one by one.")
    return sae


def export_saelens(dictionary: SparseAutoencoder | str | Path, folder: str | Path) -> Path:
    """Write `dictionary` (a SparseAutoencoder or a dictionary folder) as a SAELens 6 folder:
    cfg.json + sae_weights.safetensors, readable by SAELens's `SAE.load_from_disk`, with the same
    encode / decode (a skip transcoder's forward included) up to float rounding."""
    return write_saelens(_one_dictionary(dictionary, "SAELens"), folder)


def export_sparsify(dictionary: SparseAutoencoder | str | Path, folder: str | Path) -> Path:
    """Write a top-k `dictionary` (a SparseAutoencoder or a dictionary folder) as a sparsify folder
    (cfg.json + sae.safetensors) that sparsify's `SparseCoder.load_from_disk` reads with the same
    encode / decode. sparsify's per-hookpoint folder has no place for the model and hook names; name
    the folder after the hookpoint (e.g. `h.6`)."""
    return write_sparsify(_one_dictionary(dictionary, "sparsify"), folder)


def export_circuit_tracer(dictionary: CrossLayerTranscoder | TranscoderSet | str | Path, folder: str | Path,
                          language_model: Optional[LanguageModel] = None) -> Path:
    """Write a transcoder set or a cross-layer transcoder (or the folder of one) as a circuit-tracer 0.5
    folder: config.yaml + layer_<i>.safetensors, or W_enc_<i> / W_dec_<i>.safetensors. circuit-tracer
    loads it from its absolute path (`ReplacementModel.from_pretrained(model, "/abs/folder")`) and
    computes the same features and reconstructions up to float rounding. One that reads
    `ln2.hook_normalized` (the replacement presets' default) is written for circuit-tracer's hook of
    that name, which only its TransformerLens backend has; given the `language_model` it was trained
    on, the norms' weights and biases are folded into its encoders instead and it reads `mlp.hook_in`,
    as every backend can (its nnsight backend, for SmolLM2 and other Llama-style models, needs this)."""
    model = _as_dictionary(dictionary)
    if isinstance(model, SparseAutoencoder):
        raise DictionaryFormatError("circuit-tracer reads replacement models (a transcoder set or a cross-layer "
                                    "transcoder), and this is one dictionary; export it to SAELens instead.")
    affine = None
    if language_model is not None:
        if language_model.name != model.model_name:
            raise DictionaryFormatError(f"this replacement model was trained on {model.model_name}, not on "
                                        f"{language_model.name}; pass the model it reads.")
        affine = language_model.mlp_input_affine()
    return write_circuit_tracer(model, folder, mlp_input_affine=affine)


# ----------------------------------------------------------------------------------------------
# Import: a converted copy under the results folder


def _plain_name(text: str) -> str:
    name = re.sub(r"[/\\:\s\x00]+", "_", text).lstrip(".")[:200]
    return name or "dictionary"


def _source_files(source: dict) -> list[Path]:
    """The files that hold a foreign dictionary's weights (and a circuit-tracer folder's config)."""
    folder = Path(source["path"])
    if source["format"] == "circuit-tracer":
        return [folder / CIRCUIT_TRACER_CONFIG] + sorted(folder.glob("*.safetensors"))
    return [folder / (SAELENS_WEIGHTS if source["format"] == "saelens" else SPARSIFY_WEIGHTS)]


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def import_dictionary(source: str | Path, results_dir: str | Path = "results", *, name: Optional[str] = None,
                      model_name: Optional[str] = None, hook_name: Optional[str] = None,
                      hook_out: Optional[str] = None) -> Path:
    """Convert a SAELens / sparsify / circuit-tracer folder or a `saelens:<release>/<sae_id>` name into
    this library's format at `<results_dir>/imported/dictionaries/<name>/` and return that folder.

    Analyses of it are written inside it and the viewer lists it as `imported:<name>`; the source
    is never written to. `name` defaults to `<release>--<sae_id>` for a hub name, the folder's name
    for a SAELens or circuit-tracer folder and `<run>--<hookpoint>` for a sparsify one. Importing the same weights
    again returns the existing copy (and its analyses); another dictionary under the same name is
    refused. `model_name`, `hook_name`, `hook_out`: as for `load_foreign`.
    """
    if not is_foreign(source):
        load_dictionary(source)  # a clear error for what is no dictionary at all
        raise DictionaryLoadError(f"{source} is already a dictionary of this library; analyze or serve it where it "
                                  f"is instead of importing it.")
    if not is_hub_name(source) and is_circuit_tracer_folder(source):
        sae = load_dictionary(source, model_name=model_name, hook_name=hook_name, hook_out=hook_out)
    else:
        sae = load_foreign(source, model_name=model_name, hook_name=hook_name, hook_out=hook_out)
    info = {**sae.saved_config["source"]}
    info["sha256"] = _sha256(_source_files(info))
    if name is None:
        if "release" in info:
            name = f"{info['release']}--{info['sae_id']}"
        elif info["format"] == "sparsify":
            folder = Path(info["path"])
            run = folder.parent.parent if re.fullmatch(r"seed\d+", folder.name) else folder.parent
            name = f"{run.name}--{info['hookpoint']}" + (f"-{folder.name}" if folder.name != info["hookpoint"] else "")
        else:
            name = Path(info["path"]).name
    name = _plain_name(name)
    dest = imported_dictionary_folder(results_dir, name)
    if (dest / CONFIG_FILENAME).is_file():
        existing = read_json(dest / CONFIG_FILENAME).get("source") or {}
        same = (existing.get("sha256") == info["sha256"] and existing.get("format") == info["format"]
                and (existing.get("renamed") or None) == (info.get("renamed") or None))
        if same:
            log.info("%s is already imported at %s.", source, dest)
            return dest
        raise FileExistsError(f"{dest} already holds another imported dictionary (from {existing.get('path')}); "
                              f"give this one another name (name=... / --name) or delete that folder.")
    sae.save(dest, extra={"name": name, "exp_name": IMPORTED_RUN, "model": LanguageModelConfig(name=sae.model_name).to_dict(),
                          "source": info})
    log.info("Imported %s (%s) to %s.", source, info["format"], dest)
    return dest


def evaluate_imported(folder: str | Path, model: LanguageModel, dataset: DatasetConfig, *, n_tokens: int = 8192,
                      batch_size: int = 16) -> EvalResult:
    """Evaluate an imported copy (`import_dictionary`) on about `n_tokens` tokens of `dataset` — L0,
    explained variance, CE loss recovered, KL, ... as a trained dictionary's final evaluation — and
    record them in its config.json ("metrics", with "evaluation" saying on what), written atomically,
    so the viewer shows them. The text is not held out from the dictionary's own training data, which
    this library does not know; a trained dictionary's metrics are its trainer's, never replaced here."""
    folder = Path(folder).expanduser()
    config = read_json(folder / CONFIG_FILENAME)
    if not isinstance(config.get("source"), dict):
        raise DictionaryLoadError(f"{folder} is not an imported dictionary (its config.json has no \"source\"); a "
                                  f"trained dictionary's metrics come from its trainer's held-out evaluation.")
    if n_tokens < 1 or batch_size < 1:
        raise ConfigError(f"n_tokens and batch_size must be positive, not {n_tokens} and {batch_size}.")
    sae = load_dictionary(folder, device=model.device)
    _, batches = held_out_and_batches(dataset, model, batch_size=batch_size)
    n_batches = max(1, -(-n_tokens // (batch_size * dataset.context_size)))
    result = evaluate(model, sae, (b for _, b in zip(range(n_batches), batches)))
    config["metrics"] = result.to_dict()
    config["evaluation"] = {"n_tokens": result.n_tokens, "dataset": dataset.path, "context_size": dataset.context_size,
                            "held_out": False}
    atomic_write(folder / CONFIG_FILENAME, json.dumps(config, indent=2) + "\n")
    log.info("Evaluated %s on %d tokens: L0 %.1f, explained variance %.4f, CE loss recovered %.4f.", folder,
             result.n_tokens, result.l0, result.explained_variance, result.ce_loss_recovered)
    return result



__all__ = ["DictionaryFormatError", "HubLocation", "IMPORTED_RUN", "SAELENS_FORMAT_VERSION", "SAELENS_RELEASES",
           "SAELensRelease", "download_saelens", "evaluate_imported", "export_circuit_tracer", "export_saelens", "export_sparsify",
           "foreign_format", "import_dictionary", "is_foreign", "is_hub_name", "load_foreign", "model_name_for",
           "saelens_hub_location", "sparsify_hooks"]
