"""Data room: manifests, their validation, Kaldi data dirs, splits, text normalisation, corpora."""

from speechtl.data.manifest import ManifestError, Utterance, read_manifest, write_manifest

__all__ = ["ManifestError", "Utterance", "read_manifest", "write_manifest"]
