"""FateZero's algorithm, by role (no ComfyUI node classes here; docs/architecture.md draws it):

- ``families/``: what differs per model family (detection, the attention seam, the inverter,
  the text window, VAE scale and frame compression, defaults); SD UNets and Wan's DiT;
- ``run/``: one sampling run on a patched MODEL: the patch that installs the pack and starts
  each run (``patch.py``), the frozen ``FusionPlan``, the ``RunState``, each model call's
  ``CallInfo``, and the parts: dispatcher, composition, source row, capture, latent blend,
  window sampling, video GroupNorm;
- ``edit/``: the math, plain tensors in and out: fusion kernels, token alignment, blend masks,
  the DDIM schedule, spatio-temporal keys;
- ``inversion/``: the samplers that invert a clip (DDIM, Euler flow);
- ``store/``: the attention store, its files, source cache, the MODEL's fingerprint, the preview sheet;
- ``video/``: clip files, frame decoding and loading, the windows of a long clip.
"""
