"""The sparse autoencoder ("dictionary"): architectures, transcoders, training losses, and its
on-disk format.

One face: `SparseAutoencoder(cfg, d_in, hook_name=..., model_name=..., d_out=None, hook_out=None)`
builds the dictionary of `cfg.architecture`, and `load_dictionary(folder)` opens a saved one.

| module       | what it holds |
| ------------ | ------------- |
| `base.py`    | `SparseAutoencoder`: affine encoder / decoder, transcoders (hook_out, d_out, skip path), normalization folding, decoder constraints, `save`, `SAEOutput` |
| `dense.py`   | `relu`, `jumprelu`: dense activation rules trained by plain autograd |
| `topk.py`    | `topk`, `batchtopk`, `matryoshka_batchtopk`: top-k selection, inference threshold, AuxK, the sparse training step |
| `sparse.py`  | `SparseFeatureActs` (compressed sparse rows) and the autograd functions that train on selected entries only |
| `loading.py` | `load_dictionary`, `DictionaryLoadError`: reading dictionary folders |
"""

from .base import (CONFIG_FILENAME, ENCODE_CHUNK_TOKENS, FORMAT_VERSION, WEIGHTS_FILENAME, SAEOutput, SparseAutoencoder,
                   geometric_median)
from .dense import JumpReLUSAE, ReLUSAE
from .loading import DictionaryLoadError, load_dictionary
from .sparse import SparseFeatureActs
from .topk import BATCHTOPK_THRESHOLD_DECAY, BatchTopKSAE, MatryoshkaBatchTopKSAE, TopKSAE

__all__ = ["BATCHTOPK_THRESHOLD_DECAY", "CONFIG_FILENAME", "ENCODE_CHUNK_TOKENS", "FORMAT_VERSION", "WEIGHTS_FILENAME", "BatchTopKSAE",
           "DictionaryLoadError", "JumpReLUSAE", "MatryoshkaBatchTopKSAE", "ReLUSAE", "SAEOutput",
           "SparseAutoencoder", "SparseFeatureActs", "TopKSAE", "geometric_median", "load_dictionary"]
