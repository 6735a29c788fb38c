"""Input pipelines: real-audio sources (folder, TFDS, ArrayRecord) -> grain -> numpy batches with text.

`tfds_build` (imports tensorflow_datasets) is left out here; import it where needed.
"""
from cat_jax.data.corpus import build_corpus
from cat_jax.data.pipeline import AudioIterator, DataStats, make_iterator
from cat_jax.data.prepare import prepare
from cat_jax.data.sources import open_source

__all__ = ["make_iterator", "AudioIterator", "DataStats", "open_source", "prepare", "build_corpus"]
