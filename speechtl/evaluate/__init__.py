"""Evaluate room: batched decoding of a manifest, WER/CER, alignments."""
