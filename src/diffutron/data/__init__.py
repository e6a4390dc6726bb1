"""Data pipeline: streaming document readers, the embedded default corpus, and block packing.

``iter_documents`` + ``DataReport`` read local files, hub datasets or the embedded corpus;
``build_blocks`` / ``pack_token_stream`` turn documents into fixed-size token blocks;
``train_val_split`` gives the deterministic block split; ``build_sft_data`` turns instruction data
into fixed-length rows whose prompt is never masked. See each module's docstring.
"""

from diffutron.data.corpus import EMBEDDED_CORPUS_INSTALL, EMBEDDED_CORPUS_LICENSE, embedded_documents
from diffutron.data.packing import Packer, build_blocks, pack_token_stream, train_val_split
from diffutron.data.sft import SftData, build_sft_data
from diffutron.data.sources import (
    PROBLEM_KINDS,
    SUPPORTED_SUFFIXES,
    DataProblem,
    DataReport,
    iter_documents,
)

__all__ = [
    "EMBEDDED_CORPUS_INSTALL",
    "EMBEDDED_CORPUS_LICENSE",
    "PROBLEM_KINDS",
    "SUPPORTED_SUFFIXES",
    "DataProblem",
    "DataReport",
    "Packer",
    "SftData",
    "build_blocks",
    "build_sft_data",
    "embedded_documents",
    "iter_documents",
    "pack_token_stream",
    "train_val_split",
]
