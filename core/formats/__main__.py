"""The command line of `core.formats`: `python -m core.formats import | export | locate ...`."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Optional

from ..cli import run_entry_point
from ..config import LanguageModelConfig
from ..errors import ConfigError
from ..lm import load_language_model
from ..sae import CONFIG_FILENAME, load_dictionary
from . import export_circuit_tracer, export_saelens, export_sparsify, import_dictionary, saelens_hub_location


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.formats", description=(
        "Dictionaries from elsewhere: import SAELens / sparsify / circuit-tracer folders and SAELens hub names "
        "into this library's format, export this library's dictionaries to SAELens, sparsify or circuit-tracer."))
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="write a converted copy to <results>/imported/dictionaries/<name>/")
    imp.add_argument("source", help="a SAELens, sparsify or circuit-tracer folder, or saelens:<release>/<sae_id>")
    imp.add_argument("--results-dir", default="results")
    imp.add_argument("--name", help="the copy's folder name (default: from the source)")
    imp.add_argument("--model-name", help="the model (a Hugging Face name or a local folder) instead of the source's")
    imp.add_argument("--hook-name", help="the TransformerLens hook it reads, instead of the source's")
    imp.add_argument("--hook-out", help="a transcoder's out-hook, instead of the source's")
    exp = sub.add_parser("export", help="write a dictionary of this library as a SAELens, sparsify or circuit-tracer "
                                        "folder (circuit-tracer: a transcoder set or a cross-layer transcoder)")
    exp.add_argument("dictionary", help="a dictionary folder of this library")
    exp.add_argument("dest", help="the folder to write")
    exp.add_argument("--to", choices=("saelens", "sparsify", "circuit-tracer"), default="saelens")
    exp.add_argument("--fold-norms", action="store_true",
                     help="circuit-tracer: load the model the replacement model names and fold its norms' weights "
                          "into encoders that read ln2.hook_normalized, so that they read mlp.hook_in (which "
                          "circuit-tracer's nnsight backend needs: SmolLM2 and other Llama-style models)")
    loc = sub.add_parser("locate", help="print the Hugging Face repository and folder of a SAELens release's id")
    loc.add_argument("release")
    loc.add_argument("sae_id")
    args = parser.parse_args(argv)
    if args.command == "import":
        folder = import_dictionary(args.source, args.results_dir, name=args.name, model_name=args.model_name,
                                   hook_name=args.hook_name, hook_out=args.hook_out)
        print(f"Imported {args.source} to {folder}")
        print(f"Analyze it:  python run_analyze_example.py --dictionary-path {folder} --model.name "
              f"{json.loads((folder / CONFIG_FILENAME).read_text())['model_name']}")
    elif args.command == "export":
        if args.fold_norms and args.to != "circuit-tracer":
            raise ConfigError("--fold-norms is for --to circuit-tracer only.")
        if args.fold_norms:
            replacement = load_dictionary(args.dictionary)
            language_model = load_language_model(LanguageModelConfig(name=replacement.model_name))
            print(f"Wrote {export_circuit_tracer(replacement, args.dest, language_model)} (circuit-tracer, norms folded)")
            return
        writer = {"saelens": export_saelens, "sparsify": export_sparsify, "circuit-tracer": export_circuit_tracer}[args.to]
        print(f"Wrote {writer(args.dictionary, args.dest)} ({args.to})")
    else:
        where = saelens_hub_location(args.release, args.sae_id)
        print(f"https://huggingface.co/{where.repo_id}/tree/main/{where.folder}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_entry_point(main)
