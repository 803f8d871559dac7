"""The model file names the workflows load and where each is downloaded: the names ComfyUI's own
templates use, each a placeholder the user may point at their own file (the Notes say so)."""

CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"  # SD1.5 as ComfyUI's templates name it; pick yours
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"       # SDXL base's usual file name
CONTROLNET = "control_v11p_sd15_canny_fp16.safetensors"  # SD1.5's canny ControlNet (the graph makes its edges)

# Wan (issue 24): the usual file names of ComfyUI's Wan templates (Comfy-Org's repackaged files); pick yours.
WAN21_T2V_1_3B = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN22_TI2V_5B = "wan2.2_ti2v_5B_fp16.safetensors"
WAN22_T2V_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_T2V_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN21_VAE = "wan_2.1_vae.safetensors"
WAN22_VAE = "wan2.2_vae.safetensors"
# The lightx2v 4-step LoRAs of ComfyUI's Wan 2.2 A14B T2V template, one per expert (issue 34).
WAN22_T2V_LIGHTX2V_HIGH = "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"
WAN22_T2V_LIGHTX2V_LOW = "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"
# ComfyUI's Wan 2.2 A14B I2V template (video_wan2_2_14B_i2v.json): its two experts and their 4-step LoRAs (issue 35).
WAN22_I2V_HIGH = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_I2V_LOW = "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
WAN22_I2V_LIGHTX2V_HIGH = "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"
WAN22_I2V_LIGHTX2V_LOW = "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"

# Where each file is downloaded: name -> (models folder, URL), the URLs ComfyUI's own templates
# (comfyui-workflow-templates) give for these names. SD1.5: Comfy-Org's archive of the original
# release (runwayml's repository is gone); ControlNet: comfyanonymous's fp16 safetensors of
# lllyasviel's ControlNet 1.1, the repository the templates take the other SD1.5 ControlNets from.
# A loader node's properties.models lists its file's entry, so the frontend's missing-model
# dialog offers the download (docs/models.md has the sizes).
_HF = "https://huggingface.co"
_WAN22_REPO = f"{_HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
_WAN21_REPO = f"{_HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
DOWNLOADS = {
    CHECKPOINT: ("checkpoints", f"{_HF}/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/{CHECKPOINT}"),
    SDXL_CHECKPOINT: ("checkpoints", f"{_HF}/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/{SDXL_CHECKPOINT}"),
    CONTROLNET: ("controlnet", f"{_HF}/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/{CONTROLNET}"),
    WAN21_T2V_1_3B: ("diffusion_models", f"{_WAN21_REPO}/diffusion_models/{WAN21_T2V_1_3B}"),
    WAN22_TI2V_5B: ("diffusion_models", f"{_WAN22_REPO}/diffusion_models/{WAN22_TI2V_5B}"),
    WAN22_T2V_HIGH: ("diffusion_models", f"{_WAN22_REPO}/diffusion_models/{WAN22_T2V_HIGH}"),
    WAN22_T2V_LOW: ("diffusion_models", f"{_WAN22_REPO}/diffusion_models/{WAN22_T2V_LOW}"),
    WAN22_T2V_LIGHTX2V_HIGH: ("loras", f"{_WAN22_REPO}/loras/{WAN22_T2V_LIGHTX2V_HIGH}"),
    WAN22_T2V_LIGHTX2V_LOW: ("loras", f"{_WAN22_REPO}/loras/{WAN22_T2V_LIGHTX2V_LOW}"),
    UMT5: ("text_encoders", f"{_WAN21_REPO}/text_encoders/{UMT5}"),
    WAN21_VAE: ("vae", f"{_WAN22_REPO}/vae/{WAN21_VAE}"),
    WAN22_VAE: ("vae", f"{_WAN22_REPO}/vae/{WAN22_VAE}"),
}
# ... and the A14B I2V template's (video_wan2_2_14B_i2v.json), from the same repository
DOWNLOADS.update({name: (folder, f"{_WAN22_REPO}/{folder}/{name}") for folder, name in (
    ("diffusion_models", WAN22_I2V_HIGH), ("diffusion_models", WAN22_I2V_LOW),
    ("loras", WAN22_I2V_LIGHTX2V_HIGH), ("loras", WAN22_I2V_LIGHTX2V_LOW))})

# The loader nodes of the workflows and the widget that names their file.
LOADER_FILE_INPUTS = {"CheckpointLoaderSimple": "ckpt_name", "ControlNetLoader": "control_net_name",
                      "UNETLoader": "unet_name", "CLIPLoader": "clip_name", "VAELoader": "vae_name",
                      "LoraLoaderModelOnly": "lora_name"}


def offer_downloads(nodes) -> None:
    """On each loader node, its file's download (``DOWNLOADS``) in properties.models, as ComfyUI's
    own templates have it: the frontend's missing-model dialog offers the files a user lacks."""
    for node in nodes:
        widget = LOADER_FILE_INPUTS.get(node.type)
        if widget is None:
            continue
        name = node.values[widget]
        if name not in DOWNLOADS:
            raise ValueError(f"node {node.id} ({node.type}) loads {name}, which has no entry in DOWNLOADS")
        directory, url = DOWNLOADS[name]
        node.models = ({"name": name, "url": url, "directory": directory},)
