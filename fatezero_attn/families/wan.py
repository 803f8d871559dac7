"""Wan's video diffusion transformer (ComfyUI's ``comfy/ldm/wan/model.py``): Wan 2.1 T2V (1.3B,
14B), the Wan 2.2 A14B experts (its architecture), Wan 2.2 TI2V 5B (48 latent channels, a 16x
VAE), and the image-to-video models: Wan 2.1 I2V 14B (and FLF2V: 36 input channels, CLIP vision
features) and the Wan 2.2 I2V A14B experts (36 input channels, no CLIP vision).

Each block has one self-attention over every latent frame's tokens (``attn1``, q and k with RoPE
applied) and one cross-attention to the umT5 context (``attn2``, 512 positions); the seam is the
shared DiT one (``dit.py``). Image-to-video models take the start image as 20 extra input
channels (``c_concat``: a mask and the image latent), which the source row replays with the
rest of the inversion's conditioning; Wan 2.1's blocks also attend to the CLIP vision tokens, in
a call before the text cross-attention, that stays plain (each row sees its own image). The 5B
model takes its start image in the latent (``run/start_image.py``)."""
from __future__ import annotations

from typing import ClassVar

from ..defaults import WAN_BLEND_BLOCKS, WAN_FUSED_BLOCKS
from ..edit.alignment import UMT5_WINDOW
from .dit import DiTFamily

IMAGE_CHANNELS = 20  # an image-to-video model's extra input: 4 mask channels and the 16-channel image latent


class WanFamily(DiTFamily):
    text_window = UMT5_WINDOW
    text_encoder: ClassVar[str] = ("Load CLIP with type 'wan' and a umt5_xxl file (e.g. "
                                   "umt5_xxl_fp8_e4m3fn_scaled.safetensors)")
    default_fused_blocks: ClassVar[str] = WAN_FUSED_BLOCKS
    default_blend_blocks: ClassVar[str] = WAN_BLEND_BLOCKS
    image_to_video: ClassVar[bool] = False  # conditioned on a start image (``c_concat``)
    latent_start_image: ClassVar[bool] = False  # a start image in the latent, kept by a noise mask

    def text_widths(self, diffusion_model) -> frozenset:
        """umT5-XXL's 4096 for Wan: the input of ``text_embedding``'s first Linear."""
        first = next((m for m in getattr(diffusion_model, "text_embedding", ()) if hasattr(m, "in_features")), None)
        return frozenset() if first is None else frozenset({first.in_features})

    @staticmethod
    def text_call(diffusion_model) -> int:
        """Wan 2.1 I2V's cross-attention attends to the CLIP vision tokens first, then to the text."""
        from comfy.ldm.wan.model import WanI2VCrossAttention
        return 3 if isinstance(diffusion_model.blocks[0].cross_attn, WanI2VCrossAttention) else 2


class WanImageFamily(WanFamily):
    image_to_video: ClassVar[bool] = True


class WanTextImageFamily(WanFamily):
    """Wan 2.2 TI2V 5B: text-to-video, or image-to-video with the start image in the latent
    (``Wan22ImageToVideoLatent``; ComfyUI's ``WAN22`` gives the kept frames timestep 0)."""
    latent_start_image: ClassVar[bool] = True


WAN21 = WanFamily("WAN21", 832, 8, 4)
WAN22_5B = WanTextImageFamily("WAN22-5B", 1280, 16, 4)
WAN21_I2V = WanImageFamily("WAN21-I2V", 832, 8, 4)
WAN22_I2V = WanImageFamily("WAN22-I2V", 832, 8, 4)
FAMILIES = (WAN21, WAN22_5B, WAN21_I2V, WAN22_I2V)
# CONST subclasses of ComfyUI >= 0.38 that start sampling from the input latent, not from noise
# (WAN21_FlowRVS's IMG_TO_IMG_FLOW; ModelSamplingAuraFlow's img_to_img_velocity): nothing to invert to
IMAGE_TO_IMAGE_SAMPLINGS = ("IMG_TO_IMG_FLOW", "IMG_TO_IMG_VELOCITY")


def image_to_image_sampling(model_sampling) -> str | None:
    """The name of the image-to-image flow prediction mixed into ``model_sampling``, or None (by
    name: ComfyUI 0.3.75 has no such class)."""
    return next((c.__name__ for c in type(model_sampling).__mro__ if c.__name__ in IMAGE_TO_IMAGE_SAMPLINGS), None)


def detect(model_patcher) -> WanFamily | None:
    """ComfyUI's ``WanModel`` on the flow-matching (``CONST``) schedule, as text-to-video (2.1,
    the 2.2 A14B experts, the 2.2 5B model by its 48 latent channels) or image-to-video (2.1 I2V
    and FLF2V: model type "i2v"; the 2.2 I2V A14B experts: "t2v" blocks with 36 input channels).
    VACE, camera, Fun control, S2V, Animate and other variants are not taken (their extra inputs
    are not replayed)."""
    import comfy.model_sampling as sampling
    from comfy.ldm.wan.model import WanModel
    dm = getattr(model_patcher.model, "diffusion_model", None)
    if type(dm) is not WanModel or not isinstance(model_patcher.get_model_object("model_sampling"), sampling.CONST):
        return None
    if image_to_image_sampling(model_patcher.get_model_object("model_sampling")):
        return None
    kind, in_dim, out_dim = getattr(dm, "model_type", None), dm.patch_embedding.weight.shape[1], dm.out_dim
    if kind == "t2v" and in_dim == out_dim == 16:
        return WAN21
    if kind == "t2v" and in_dim == out_dim == 48:
        return WAN22_5B
    if out_dim == 16 and in_dim == 16 + IMAGE_CHANNELS:
        return {"i2v": WAN21_I2V, "t2v": WAN22_I2V}.get(kind)
    return None
