"""The sparse autoencoder ("dictionary"): architectures, transcoders, training losses, and its
on-disk format.

One face: `create_dictionary(cfg, d_in, hook_name=..., model_name=..., d_out=None, hook_out=None)`
builds the dictionary of `cfg.architecture`, and `load_dictionary(folder)` opens a saved one.

| module       | what it holds |
| ------------ | ------------- |
| `base.py`    | `SparseAutoencoder`: affine encoder / decoder, transcoders (hook_out, d_out, skip path), normalization folding, decoder constraints, `save`, `SAEOutput` |
| `dense.py`   | `relu`, `jumprelu`: dense activation rules trained by plain autograd |
| `topk.py`    | `topk`, `batchtopk`, `matryoshka_batchtopk`: top-k selection, inference threshold, AuxK, the sparse training step |
| `normalization.py` | how raw activations enter and leave a dictionary: `Scaling` (trained), `TokenStandardization`, `ResidualCentering` (imported) |
| `sparse.py`  | `SparseFeatureActs` (compressed sparse rows) and the autograd functions that train on selected entries only |
| `loading.py` | `load_dictionary`: opens this library's folders, SAELens and sparsify folders, and `saelens:` hub names |
| `foreign.py` | what reading another library's folder shares: recognizing it, checked tensors, building the dictionary |
| `saelens.py` | SAELens folders in (6.x and pre-6) and out |
| `sparsify.py` | sparsify folders in and out |
| `hub.py`     | SAELens hub names: the table of GPT-2 releases, the download |
| `replacement.py` | replacement models: the `ReplacementModel` face, `TranscoderSet`, the per-layer loss weights, memory estimates |
| `clt.py`     | `CrossLayerTranscoder`: features reading one layer and writing to it and every later one; its sparse training step and folder |
"""

from .clt import CLT_ARCHITECTURES, CrossLayerTranscoder
from .replacement import (ReplacementModel, ReplacementModelMemory, ReplacementOutput, TranscoderSet,
                          replacement_model_memory)
from .base import (CONFIG_FILENAME, ENCODE_CHUNK_TOKENS, FORMAT_VERSION, WEIGHTS_FILENAME, SAEOutput, SparseAutoencoder,
                   create_dictionary,
                   geometric_median)
from .dense import JumpReLUSAE, ReLUSAE
from ..errors import DictionaryLoadError
from .loading import is_foreign, load_dictionary, load_foreign
from .normalization import Normalization, ResidualCentering, Scaling, TokenStandardization
from .sparse import SparseFeatureActs
from .topk import BATCHTOPK_THRESHOLD_DECAY, BatchTopKSAE, MatryoshkaBatchTopKSAE, TopKSAE

__all__ = ["CLT_ARCHITECTURES", "CrossLayerTranscoder", "ReplacementModel", "ReplacementModelMemory",
           "ReplacementOutput", "TranscoderSet", "replacement_model_memory", "BATCHTOPK_THRESHOLD_DECAY", "CONFIG_FILENAME", "ENCODE_CHUNK_TOKENS", "FORMAT_VERSION", "WEIGHTS_FILENAME", "BatchTopKSAE",
           "DictionaryLoadError", "JumpReLUSAE", "Normalization", "ResidualCentering", "Scaling",
           "TokenStandardization", "create_dictionary", "is_foreign", "load_foreign", "MatryoshkaBatchTopKSAE", "ReLUSAE", "SAEOutput",
           "SparseAutoencoder", "SparseFeatureActs", "TopKSAE", "geometric_median", "load_dictionary"]
