"""FateZero's algorithm: inversion schedule, attention capture and store, token alignment,
fusion math, blend masks and spatio-temporal attention.

No ComfyUI node classes here. The math modules (alignment, fusion, masks, schedule, temporal,
windows, store) take and return plain tensors. ``hooks.py`` and its role modules (dispatch,
composition, source_call, capture, latent_blend, video_norm, window_sampling) hook into
ComfyUI's sampling; ``sd_unet``, ``layout``, ``model_family`` and ``model_state`` read ComfyUI's
model objects. docs/architecture.md draws the path of one fused step."""
