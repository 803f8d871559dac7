"""The model file names the workflows load: the usual names, each a placeholder the user
points at their own file (the Notes say so)."""

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # ComfyUI's usual SD1.5 file name; pick yours
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"   # SDXL base's usual file name
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

# Where ComfyUI's Wan 2.2 A14B T2V template (comfyui-workflow-templates-json,
# video_wan2_2_14B_t2v.json) downloads each file: name -> (models folder, URL). A loader node's
# properties.models lists its file's entry, so the frontend's missing-model dialog offers it.
_WAN22_REPO = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
_WAN21_REPO = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
DOWNLOADS = {
    WAN22_T2V_HIGH: ("diffusion_models", f"{_WAN22_REPO}/diffusion_models/{WAN22_T2V_HIGH}"),
    WAN22_T2V_LOW: ("diffusion_models", f"{_WAN22_REPO}/diffusion_models/{WAN22_T2V_LOW}"),
    WAN22_T2V_LIGHTX2V_HIGH: ("loras", f"{_WAN22_REPO}/loras/{WAN22_T2V_LIGHTX2V_HIGH}"),
    WAN22_T2V_LIGHTX2V_LOW: ("loras", f"{_WAN22_REPO}/loras/{WAN22_T2V_LIGHTX2V_LOW}"),
    UMT5: ("text_encoders", f"{_WAN21_REPO}/text_encoders/{UMT5}"),
    WAN21_VAE: ("vae", f"{_WAN22_REPO}/vae/{WAN21_VAE}"),
}
