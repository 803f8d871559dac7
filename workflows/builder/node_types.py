"""The node types the workflows use, as ComfyUI 0.3.75's /object_info describes them.

Both writers read this table (``formats``): the API file names a node's inputs by it, the UI
file orders its sockets and widgets by it. ``tests/test_workflows.py`` checks the written files
against a real server's /object_info, so a wrong entry here fails there.
"""
from __future__ import annotations

from dataclasses import dataclass

# inputs: (name, type, optional) in /object_info input order; outputs: (name, type).
# Types INT/FLOAT/STRING/BOOLEAN/COMBO are widgets in the UI, the others are sockets.
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass(frozen=True)
class NodeType:
    display: str
    inputs: tuple
    outputs: tuple
    seed_control: tuple = ()   # widget names followed by a control_after_generate widget
    upload: bool = False       # a file-upload button: one more widget value ("image") at the end


R, O = False, True  # required, optional
TYPES = {
    "CheckpointLoaderSimple": NodeType("Load Checkpoint", (("ckpt_name", "COMBO", R),),
                                       (("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"))),
    "PrimitiveStringMultiline": NodeType("String (Multiline)", (("value", "STRING", R),), (("STRING", "STRING"),)),
    "CLIPTextEncode": NodeType("CLIP Text Encode (Prompt)", (("text", "STRING", R), ("clip", "CLIP", R)),
                               (("CONDITIONING", "CONDITIONING"),)),
    "VAEEncode": NodeType("VAE Encode", (("pixels", "IMAGE", R), ("vae", "VAE", R)), (("LATENT", "LATENT"),)),
    "VAEDecode": NodeType("VAE Decode", (("samples", "LATENT", R), ("vae", "VAE", R)), (("IMAGE", "IMAGE"),)),
    "KSamplerSelect": NodeType("KSamplerSelect", (("sampler_name", "COMBO", R),), (("SAMPLER", "SAMPLER"),)),
    "SamplerCustom": NodeType(
        "SamplerCustom",
        (("model", "MODEL", R), ("add_noise", "BOOLEAN", R), ("noise_seed", "INT", R), ("cfg", "FLOAT", R),
         ("positive", "CONDITIONING", R), ("negative", "CONDITIONING", R), ("sampler", "SAMPLER", R),
         ("sigmas", "SIGMAS", R), ("latent_image", "LATENT", R)),
        (("output", "LATENT"), ("denoised_output", "LATENT")), seed_control=("noise_seed",)),
    "CreateVideo": NodeType("Create Video", (("images", "IMAGE", R), ("fps", "FLOAT", R), ("audio", "AUDIO", O)),
                            (("VIDEO", "VIDEO"),)),
    "SaveVideo": NodeType("Save Video", (("video", "VIDEO", R), ("filename_prefix", "STRING", R),
                                         ("format", "COMBO", R), ("codec", "COMBO", R)), ()),
    "ControlNetLoader": NodeType("Load ControlNet Model", (("control_net_name", "COMBO", R),),
                                 (("CONTROL_NET", "CONTROL_NET"),)),
    "ControlNetApplyAdvanced": NodeType(
        "Apply ControlNet",
        (("positive", "CONDITIONING", R), ("negative", "CONDITIONING", R), ("control_net", "CONTROL_NET", R),
         ("image", "IMAGE", R), ("strength", "FLOAT", R), ("start_percent", "FLOAT", R),
         ("end_percent", "FLOAT", R), ("vae", "VAE", O)),
        (("positive", "CONDITIONING"), ("negative", "CONDITIONING"))),
    "Canny": NodeType("Canny", (("image", "IMAGE", R), ("low_threshold", "FLOAT", R), ("high_threshold", "FLOAT", R)),
                      (("IMAGE", "IMAGE"),)),
    "MaskToImage": NodeType("Convert Mask to Image", (("mask", "MASK", R),), (("IMAGE", "IMAGE"),)),
    "SaveImage": NodeType("Save Image", (("images", "IMAGE", R), ("filename_prefix", "STRING", R)), ()),
    "FateZeroLoadVideo": NodeType(
        "FateZero Load Video",
        (("video", "COMBO", R), ("frame_count", "INT", R), ("start_frame", "INT", R), ("every_nth", "INT", R),
         ("width", "INT", R), ("height", "INT", R), ("resize", "COMBO", R)),
        (("images", "IMAGE"), ("frame_rate", "FLOAT"), ("frame_count", "INT")), upload=True),
    "FateZeroDDIMInversion": NodeType(
        "FateZero DDIM Inversion",
        (("model", "MODEL", R), ("source_conditioning", "CONDITIONING", R), ("latent", "LATENT", R),
         ("steps", "INT", R), ("temporal_mode", "COMBO", R), ("temporal_min_channels", "INT", R),
         ("video_groupnorm", "BOOLEAN", R), ("clean_sigma", "COMBO", R), ("store_mode", "COMBO", O),
         ("cache_replace_steps", "FLOAT", O), ("window", "INT", O), ("flow_inversion", "COMBO", O),
         ("fixed_point_iterations", "INT", O), ("blend_blocks", "STRING", O), ("model_high_noise", "MODEL", O),
         ("expert_boundary", "FLOAT", O), ("start_image_latent", "LATENT", O)),
        (("inverted_latent", "LATENT"), ("attention_store", "FATEZERO_STORE"), ("edit_sigmas", "SIGMAS"),
         ("inverted_noise", "NOISE"), ("expert_split_step", "INT"))),
    "FateZeroBlendMask": NodeType(
        "FateZero Blend Mask",
        (("attention_store", "FATEZERO_STORE", R), ("clip", "CLIP", R), ("source_prompt", "STRING", R),
         ("blend_words", "STRING", R), ("tau", "FLOAT", R), ("latent_blend", "BOOLEAN", R),
         ("target_blend_words", "STRING", R), ("mask", "MASK", O)),
        (("blend_mask", "FATEZERO_BLEND"), ("mask_preview", "MASK"))),
    "FateZeroAttentionFusion": NodeType(
        "FateZero Attention Fusion",
        (("model", "MODEL", R), ("attention_store", "FATEZERO_STORE", R), ("clip", "CLIP", R),
         ("source_prompt", "STRING", R), ("target_prompt", "STRING", R), ("cross_replace_steps", "FLOAT", R),
         ("self_replace_steps", "FLOAT", R), ("mapping", "COMBO", R), ("reweight", "STRING", R),
         ("cross_replace_words", "STRING", R), ("blend_mask", "FATEZERO_BLEND", O), ("fused_blocks", "STRING", O),
         ("source_latents", "COMBO", O), ("noise", "NOISE", O)),
        (("model", "MODEL"),)),
}
# Wan (issue 24): core loaders and custom sampling
TYPES.update({
    "UNETLoader": NodeType("Load Diffusion Model", (("unet_name", "COMBO", R), ("weight_dtype", "COMBO", R)),
                           (("MODEL", "MODEL"),)),
    "CLIPLoader": NodeType("Load CLIP", (("clip_name", "COMBO", R), ("type", "COMBO", R), ("device", "COMBO", O)),
                           (("CLIP", "CLIP"),)),
    "VAELoader": NodeType("Load VAE", (("vae_name", "COMBO", R),), (("VAE", "VAE"),)),
    "LoraLoaderModelOnly": NodeType("LoraLoaderModelOnly", (("model", "MODEL", R), ("lora_name", "COMBO", R),
                                                            ("strength_model", "FLOAT", R)), (("MODEL", "MODEL"),)),
    "ModelSamplingSD3": NodeType("ModelSamplingSD3", (("model", "MODEL", R), ("shift", "FLOAT", R)), (("MODEL", "MODEL"),)),
    "CFGGuider": NodeType("CFGGuider", (("model", "MODEL", R), ("positive", "CONDITIONING", R),
                                        ("negative", "CONDITIONING", R), ("cfg", "FLOAT", R)), (("GUIDER", "GUIDER"),)),
    "SamplerCustomAdvanced": NodeType(
        "SamplerCustomAdvanced", (("noise", "NOISE", R), ("guider", "GUIDER", R), ("sampler", "SAMPLER", R),
                                  ("sigmas", "SIGMAS", R), ("latent_image", "LATENT", R)),
        (("output", "LATENT"), ("denoised_output", "LATENT"))),
    "SplitSigmas": NodeType("SplitSigmas", (("sigmas", "SIGMAS", R), ("step", "INT", R)),
                            (("high_sigmas", "SIGMAS"), ("low_sigmas", "SIGMAS"))),
    "DisableNoise": NodeType("DisableNoise", (), (("NOISE", "NOISE"),)),
    "PreviewImage": NodeType("Preview Image", (("images", "IMAGE", R),), ()),
    "FateZeroAttentionPreview": NodeType(
        "FateZero Attention Preview",
        (("attention_store", "FATEZERO_STORE", R), ("clip", "CLIP", R), ("source_prompt", "STRING", R),
         ("words", "STRING", R), ("step", "INT", R), ("tau", "FLOAT", R), ("blend_words", "STRING", R),
         ("images", "IMAGE", O), ("max_frames", "INT", O)),
        (("preview", "IMAGE"),)),
})

# Wan image-to-video (issue 35): the first frames and the start-image conditioning
TYPES.update({
    "LoadImage": NodeType("Load Image", (("image", "COMBO", R),), (("IMAGE", "IMAGE"), ("MASK", "MASK")), upload=True),
    "ImageFromBatch": NodeType("ImageFromBatch", (("image", "IMAGE", R), ("batch_index", "INT", R), ("length", "INT", R)),
                               (("IMAGE", "IMAGE"),)),
    "GetImageSize": NodeType("Get Image Size", (("image", "IMAGE", R),),
                             (("width", "INT"), ("height", "INT"), ("batch_size", "INT"))),
    "WanImageToVideo": NodeType(
        "WanImageToVideo",
        (("positive", "CONDITIONING", R), ("negative", "CONDITIONING", R), ("vae", "VAE", R), ("width", "INT", R),
         ("height", "INT", R), ("length", "INT", R), ("batch_size", "INT", R),
         ("clip_vision_output", "CLIP_VISION_OUTPUT", O), ("start_image", "IMAGE", O)),
        (("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"))),
    # Wan 2.2 TI2V 5B: the start image in the latent, with the noise mask that keeps it
    "Wan22ImageToVideoLatent": NodeType(
        "Wan22ImageToVideoLatent",
        (("vae", "VAE", R), ("width", "INT", R), ("height", "INT", R), ("length", "INT", R), ("batch_size", "INT", R),
         ("start_image", "IMAGE", O)),
        (("LATENT", "LATENT"),)),
})

UI_ONLY_TYPES = {"Note"}  # frontend-only nodes: in the UI file, never in the API file


def is_widget(type_: str) -> bool:
    return type_ in WIDGET_TYPES
