"""SAELens's hub names: `saelens:<release>/<sae_id>` -> the Hugging Face repository and folder.

A small table of GPT-2 small's SAELens-format releases (`SAELENS_RELEASES`; SAELens's registry has
them all) and the download through `huggingface_hub` into its usual cache. What the registry adds
to a release's configs (its config_overrides) travels with the location, for the SAELens reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import DictionaryLoadError
from .foreign import FOREIGN_CONFIG, SAELENS_WEIGHTS

HUB_PREFIX = "saelens:"
"""`saelens:<release>/<sae_id>` names a SAELens release's dictionary on the Hugging Face hub."""


def is_hub_name(source: str | Path) -> bool:
    """True for `saelens:<release>/<sae_id>`."""
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


@dataclass(frozen=True)
class SAELensRelease:
    """Where a SAELens release lives on the Hugging Face hub."""

    repo_id: str
    folders: dict[str, str]
    """sae_id -> the folder of the repository holding its cfg.json and sae_weights.safetensors."""
    model: str = "gpt2-small"
    overrides: dict = field(default_factory=dict)
    """What SAELens's registry adds to each config of the release (its config_overrides)."""


def _per_layer(sae_id: str, folder: str, layers=range(12)) -> dict[str, str]:
    return {sae_id.format(layer): folder.format(layer) for layer in layers}


_CENTERED = {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
_OPENWEBTEXT = {"dataset_path": "Skylion007/openwebtext"}
SAELENS_RELEASES: dict[str, SAELensRelease] = {
    "gpt2-small-res-jb": SAELensRelease(
        "jbloom/GPT2-Small-SAEs-Reformatted",
        {**_per_layer("blocks.{}.hook_resid_pre", "blocks.{}.hook_resid_pre"),
         "blocks.11.hook_resid_post": "blocks.11.hook_resid_post"}, overrides=_CENTERED),
    "gpt2-small-res-jb-feature-splitting": SAELensRelease(
        "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8",
        {f"blocks.8.hook_resid_pre_{w}": f"blocks.8.hook_resid_pre_{w}"
         for w in (768, 1536, 3072, 6144, 12288, 24576, 49152, 98304)}, overrides=_CENTERED),
    **{f"gpt2-small-{kind}-v5-{size}": SAELensRelease(
        f"jbloom/GPT2-Small-OAI-v5-{size}-{kind}-SAEs",
        # (the registry's folders of resid-post 32k end in ".pt")
        _per_layer(f"blocks.{{}}.hook_{kind.replace('-', '_')}",
                   f"v5_{size}_layer_{{}}" + (".pt" if (kind, size) == ("resid-post", "32k") else "")),
        overrides=_OPENWEBTEXT)
       for kind in ("resid-post", "resid-mid", "mlp-out", "attn-out") for size in ("32k", "128k")},
    **{f"gpt2-small-res_{variant}-ajt": SAELensRelease(
        f"neuronpedia/gpt2-small__res_{variant}-ajt",
        _per_layer("blocks.{}.hook_resid_pre", f"{{}}-res_{variant}-ajt", layers=(2, 6, 10)))
       for variant in ("sce", "scefr", "scl", "sle", "slefr", "sll")},
}


@dataclass(frozen=True)
class HubLocation:
    release: str
    sae_id: str
    repo_id: str
    folder: str
    model: str
    overrides: dict


def saelens_hub_location(release: str, sae_id: str) -> HubLocation:
    """The Hugging Face repository and folder of SAELens release `release`'s dictionary `sae_id`."""
    entry = SAELENS_RELEASES.get(release)
    if entry is None:
        raise DictionaryLoadError(f"Unknown SAELens release {release!r}; this library knows GPT-2's: "
                                  f"{', '.join(sorted(SAELENS_RELEASES))}. For others, download the folder (SAELens's "
                                  f"pretrained_saes.yaml names its repository and path) and pass its local path.")
    if sae_id not in entry.folders:
        ids = list(entry.folders)
        raise DictionaryLoadError(f"SAELens release {release!r} has no id {sae_id!r}; its ids are {', '.join(ids[:6])}"
                                  f"{', ...' if len(ids) > 6 else ''} (write saelens:{release}/<id>).")
    return HubLocation(release, sae_id, entry.repo_id, entry.folders[sae_id], entry.model, dict(entry.overrides))


def hub_location_of_cached(folder: Path) -> Optional[HubLocation]:
    """The release and id of a folder in the Hugging Face cache (`.../models--<org>--<name>/snapshots/
    <revision>/<folder>`) that `SAELENS_RELEASES` knows: what SAELens's registry says about a
    release (e.g. that its model was loaded with centered writing weights) is not in the folder's
    own cfg.json, so a copy found in the cache is read as its hub name would be."""
    parts = folder.resolve().parts
    if len(parts) < 4 or parts[-3] != "snapshots" or not parts[-4].startswith("models--"):
        return None
    repo_id = parts[-4][len("models--"):].replace("--", "/")
    for release, entry in SAELENS_RELEASES.items():
        for sae_id, inner in entry.folders.items():
            if entry.repo_id == repo_id and inner == parts[-1]:
                return saelens_hub_location(release, sae_id)
    return None


def download_saelens(release: str, sae_id: str) -> Path:
    """Download (or find in the Hugging Face cache) the folder of `release` / `sae_id`; its path."""
    loc = saelens_hub_location(release, sae_id)
    import huggingface_hub
    from huggingface_hub import hf_hub_download

    paths = []
    for filename in (FOREIGN_CONFIG, SAELENS_WEIGHTS):
        try:
            paths.append(Path(hf_hub_download(loc.repo_id, f"{loc.folder}/{filename}")))
        except Exception as e:  # network, offline mode, missing file, gated repository: all say the same to the user
            offline = huggingface_hub.constants.HF_HUB_OFFLINE
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise DictionaryLoadError(
                f"Could not get {loc.folder}/{filename} of the Hugging Face repository {loc.repo_id} (SAELens release "
                f"{release!r}, id {sae_id!r}) {'with HF_HUB_OFFLINE=1 and nothing in the cache ' if offline else ''}"
                f"({type(e).__name__}: {reason}); connect to the hub{' and unset HF_HUB_OFFLINE' if offline else ''}, "
                f"or download the folder where the hub is reachable (huggingface-cli download {loc.repo_id} --include "
                f"'{loc.folder}/*' --local-dir DIR) and pass DIR/{loc.folder} instead.") from e
    return paths[0].parent

