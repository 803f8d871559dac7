"""The inversions: DDIM on a discrete schedule (SD), Euler flow inversion (Wan)."""
