"""FateZero's algorithm in plain torch: inversion schedule, attention capture and store,
token alignment, fusion math, blend masks and spatio-temporal attention.

No ComfyUI node classes here; ``hooks.py`` is the only module that touches ComfyUI's
model patcher."""
