"""GPT-2 Dictionary: train, evaluate and analyze sparse dictionaries on language-model activations.

Scripts and notebooks import everything from here:

    from core import TrainingConfig, train, load_dictionary, FeatureStore
"""

import os as _os

# OpenMP threads that spin while they wait slow every parallel torch op several-fold on machines
# whose cores other processes share; they sleep instead, unless the environment says otherwise.
# (Read once, when torch loads: import core before torch for it to apply.)
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .activations import ActivationBuffer, ActivationSource, expected_norm_scale
from .annotations import Annotation, AnnotationConflict, Annotations, export_annotations
from .autointerp import (BackendConfig, ExplainConfig, Explanations, ScoreConfig, explain_features,
                         score_explanations)
from .analysis import TextActivations, analyze, encode_text
from .attribution import (AttributionGraph, FeatureIntervention, InterventionResult, attribute, import_graph, intervene,
                          list_graphs, load_graph_file, save_graph)
from .cache import CachedActivations, CacheError, cache_activations, read_manifest
from .config import (AnalysisConfig, ActivationStoreConfig, CacheConfig, ConfigError, DatasetConfig, DictionaryConfig,
                     LanguageModelConfig, LoggingConfig, OptimizerConfig, SAEConfig, TrainerConfig, TrainingConfig,
                     OFFLINE_MODEL_NAME, BUILTIN_CORPUS)
from .data import (DatasetError, HeldOut, PackedSequences, TokenBatches, builtin_corpus_file, held_out_sequences,
                   load_text_dataset)
from .evals import (EvalDetails, EvalResult, evaluate, evaluate_dictionaries, evaluate_dictionaries_in_detail,
                    explained_variance, l0_norm, mean_squared_error)
from .errors import AttributionError, BackendError, DictionaryFormatError, EvaluationError, GraphFileError
from .evaluations import (AbsorptionConfig, CoreEvalConfig, EvaluationConfig, SparseProbingConfig, SyntheticActivations,
                          SyntheticConfig, SyntheticEvaluator, SyntheticFeatures, read_eval_outputs, run_evaluations,
                          synthetic_run)
from .formats import evaluate_imported, export_circuit_tracer, export_saelens, export_sparsify, import_dictionary
from .lm import HookNameError, LanguageModel, ModelLoadError, load_language_model
from .sae import (CrossLayerTranscoder, DictionaryLoadError, ReplacementModel, SparseAutoencoder, SparseFeatureActs,
                  TranscoderSet, create_dictionary, load_dictionary, replacement_model_memory)
from .steering import SteeringResult, steer
from .store import FeatureStore, FeatureStoreWriter, FeatureUnavailable, StoreError
from .training import Trainer, TrainingInterrupted, TrainingResult, build_trainer, train

__all__ = [name for name in dir() if not name.startswith("_")]
