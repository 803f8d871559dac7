"""The math of the edit, plain tensors in and out: fusion kernels, token alignment, blend masks, the DDIM schedule, spatio-temporal keys."""
