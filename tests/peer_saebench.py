"""Validate result files with SAEBench's own output classes (sae-bench 0.6.0).

Runs inside the peers' virtual environment (not this project's), where sae-bench is installed
without its dependencies (tests/data/make_foreign_fixtures.py); its `eval_output` modules need only
pydantic. Used by tests/test_evaluations.py:

    <venv>/bin/python tests/peer_saebench.py FILE.json [...]

Prints one JSON object: {file: {"error": message or null, "dropped": [...], "changed": [...]}} where
`dropped` lists the keys (dotted paths) SAEBench's classes do not know and drop, and `changed` the
values that did not come back as written. "synthetic_recovery" has no SAEBench class; its file is
checked against `BaseEvalOutput` with free-form config, metrics and details.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from pydantic import TypeAdapter
from pydantic.dataclasses import dataclass
from sae_bench.evals.absorption.eval_output import AbsorptionEvalOutput
from sae_bench.evals.base_eval_output import BaseEvalOutput
from sae_bench.evals.core.eval_output import CoreEvalOutput
from sae_bench.evals.sparse_probing.eval_output import SparseProbingEvalOutput


@dataclass
class GenericEvalOutput(BaseEvalOutput[dict, dict, dict]):
    eval_config: dict[str, Any]
    eval_id: str
    datetime_epoch_millis: int
    eval_result_metrics: dict[str, dict[str, float | int]]
    eval_result_details: list[dict[str, Any]]
    eval_type_id: str


CLASSES = {"core": CoreEvalOutput, "absorption_first_letter": AbsorptionEvalOutput,
           "sparse_probing": SparseProbingEvalOutput, "synthetic_recovery": GenericEvalOutput}


def differences(written: Any, read: Any, path: str, dropped: list, changed: list) -> None:
    if isinstance(written, dict) and isinstance(read, dict):
        for key, value in written.items():
            where = f"{path}.{key}" if path else key
            if key not in read:
                dropped.append(where)
            else:
                differences(value, read[key], where, dropped, changed)
    elif isinstance(written, list) and isinstance(read, list) and len(written) == len(read):
        for i, (a, b) in enumerate(zip(written, read)):
            differences(a, b, f"{path}[{i}]", dropped, changed)
    elif written != read:
        changed.append(f"{path}: {written!r} -> {read!r}")


def check(path: str) -> dict:
    with open(path) as f:
        written = json.load(f)
    try:
        output = TypeAdapter(CLASSES[written["eval_type_id"]]).validate_python(written)
    except Exception as e:  # a validation error, or an unknown eval type
        return {"error": f"{type(e).__name__}: {e}", "dropped": [], "changed": []}
    read = json.loads(json.dumps(asdict(output), default=str))
    dropped: list[str] = []
    changed: list[str] = []
    differences(written, read, "", dropped, changed)
    return {"error": None, "dropped": dropped, "changed": changed}


if __name__ == "__main__":
    print(json.dumps({path: check(path) for path in sys.argv[1:]}))
