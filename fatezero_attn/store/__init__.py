"""The attention store (what the inversion keeps for the edit), its files and source cache, the MODEL's fingerprint, and the preview sheet drawn from it."""
