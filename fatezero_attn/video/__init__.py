"""Clip files, frame decoding and loading, and the windows (sub-videos) of a long clip."""
