"""meshlearn.data: datasets (embedded digits, IDX/npz/csv file loaders), client partitioners and the text corpus.

Rule: nothing in this package downloads or imports torch; arrays are numpy throughout.
"""

from meshlearn.data.datasets import DATASETS, Dataset, load_dataset, stratified_split
from meshlearn.data.idx import read_idx
from meshlearn.data.partition import PARTITIONERS, partition, partition_summary, summary_stats
from meshlearn.data.text import CharVocab, load_corpus

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "stratified_split",
    "read_idx",
    "PARTITIONERS",
    "partition",
    "partition_summary",
    "summary_stats",
    "CharVocab",
    "load_corpus",
]
