"""The model file names the workflows load: the usual names, each a placeholder the user
points at their own file (the Notes say so)."""

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # ComfyUI's usual SD1.5 file name; pick yours
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"   # SDXL base's usual file name
CONTROLNET = "control_v11f1p_sd15_depth.pth"      # an SD1.5 ControlNet's usual file name; pick yours

# Wan (issue 24): the usual file names of ComfyUI's Wan templates (Comfy-Org's repackaged files); pick yours.
WAN21_T2V_1_3B = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN22_TI2V_5B = "wan2.2_ti2v_5B_fp16.safetensors"
WAN22_T2V_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_T2V_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN21_VAE = "wan_2.1_vae.safetensors"
WAN22_VAE = "wan2.2_vae.safetensors"
