"""Features room: decode and resample audio, group utterances into length-sorted batches."""

from speechtl.features.audio import AudioError, load_audio

__all__ = ["AudioError", "load_audio"]
