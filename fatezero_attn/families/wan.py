"""Wan's video diffusion transformer (ComfyUI's ``comfy/ldm/wan/model.py``): Wan 2.1 T2V (1.3B,
14B), the Wan 2.2 A14B experts (its architecture) and Wan 2.2 TI2V 5B (48 latent channels, a
16x VAE). Each block has one self-attention over every latent frame's tokens (``attn1``, q and k
with RoPE applied) and one cross-attention to the umT5 context (``attn2``, 512 positions); the
seam is the shared DiT one (``dit.py``)."""
from __future__ import annotations

from typing import ClassVar

from ..defaults import WAN_BLEND_BLOCKS, WAN_FUSED_BLOCKS
from ..edit.alignment import UMT5_WINDOW
from .dit import DiTFamily


class WanFamily(DiTFamily):
    text_window = UMT5_WINDOW
    text_encoder: ClassVar[str] = ("Load CLIP with type 'wan' and a umt5_xxl file (e.g. "
                                   "umt5_xxl_fp8_e4m3fn_scaled.safetensors)")
    default_fused_blocks: ClassVar[str] = WAN_FUSED_BLOCKS
    default_blend_blocks: ClassVar[str] = WAN_BLEND_BLOCKS

    def text_widths(self, diffusion_model) -> frozenset:
        """umT5-XXL's 4096 for Wan: the input of ``text_embedding``'s first Linear."""
        first = next((m for m in getattr(diffusion_model, "text_embedding", ()) if hasattr(m, "in_features")), None)
        return frozenset() if first is None else frozenset({first.in_features})


WAN21 = WanFamily("WAN21", 832, 8, 4)
WAN22_5B = WanFamily("WAN22-5B", 1280, 16, 4)
FAMILIES = (WAN21, WAN22_5B)
# CONST subclasses of ComfyUI >= 0.38 that start sampling from the input latent, not from noise
# (WAN21_FlowRVS's IMG_TO_IMG_FLOW; ModelSamplingAuraFlow's img_to_img_velocity): nothing to invert to
IMAGE_TO_IMAGE_SAMPLINGS = ("IMG_TO_IMG_FLOW", "IMG_TO_IMG_VELOCITY")


def image_to_image_sampling(model_sampling) -> str | None:
    """The name of the image-to-image flow prediction mixed into ``model_sampling``, or None (by
    name: ComfyUI 0.3.75 has no such class)."""
    return next((c.__name__ for c in type(model_sampling).__mro__ if c.__name__ in IMAGE_TO_IMAGE_SAMPLINGS), None)


def detect(model_patcher) -> WanFamily | None:
    """Wan 2.1 text-to-video (and the 2.2 A14B experts, and the 2.2 5B model by its 48 latent
    channels): ComfyUI's ``WanModel`` with text cross-attention only, on the flow-matching
    (``CONST``) schedule. Image-to-video (2.1), VACE, camera and other Wan variants are not taken
    (their extra attention inputs are not replayed)."""
    import comfy.model_sampling as sampling
    from comfy.ldm.wan.model import WanModel
    dm = getattr(model_patcher.model, "diffusion_model", None)
    if type(dm) is not WanModel or getattr(dm, "model_type", None) != "t2v" or dm.out_dim not in (16, 48):
        return None
    if not isinstance(model_patcher.get_model_object("model_sampling"), sampling.CONST):
        return None
    if image_to_image_sampling(model_patcher.get_model_object("model_sampling")):
        return None
    return WAN21 if dm.out_dim == 16 else WAN22_5B
