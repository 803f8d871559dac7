"""What follows the authors' released FateZero code, and what is an option.

The pack's defaults reproduce the authors' scripts so that the same checkpoint, video,
prompts and settings give the same edit. Each line names where it is implemented.

Follows the authors' code (default):
- Schedule: ComfyUI's ``ddim_uniform`` grid (timesteps 1, 1+1000/N, ...; the same as the
  authors' for N = 10, 20, 25, 50; 30 gives 31 steps, which the inversion node reports).
  ``schedule.inversion_sigmas``.
- Inversion call j evaluates the UNet at the step's destination timestep on the latent at
  its start; the clean latent sits at ``alphas_cumprod[0]`` (``CLEAN_SIGMA = "authors"``).
  ``schedule.sample_ddim_inversion``.
- Editing ends at ``alphas_cumprod[0]`` when sampled with the inversion's SIGMAS output
  (SamplerCustom); KSamplerAdvanced ends at sigma 0 (ComfyUI's end point).
- Edit step k uses the source attention of inversion call N-1-k (the same timestep).
  ``run/patch.py``'s ``FateZeroPatch.model_wrapper``.
- Replace windows: cross-attention at k < int(cross_replace_steps * (N + 1)), self-attention
  at k < int(self_replace_steps * N). ``schedule.replace_step_counts``.
- Layers: self- and cross-attention fused where the query length is at most 32x32
  (``FUSE_MAX_QUERY``): 11 of SD1's 16 transformer blocks at 512x512. Carried over to other
  families by its meaning, the levels at 1/2 of the native latent and below
  (``families/sd_unet.py``'s ``SDFamily.fuse_max_query``): 32x32 for SD 2.x at 512, 48x48 for SD 2.x 768
  v-prediction at 768x768 (its 48x48, 24x24 and 12x12 levels: 11 of 16 blocks, as SD1.5), 64x64
  for SDXL at 1024x1024 (every SDXL transformer: its 64x64 and 32x32 levels). The limit is a
  query length, so a smaller video fuses more levels, as with the authors' fixed 32x32.
- Spatio-temporal attention: middle frame ``(F - 1) // 2``; the authors' style and
  attribute configs take keys and values from the middle frame in blocks of >= 640
  channels (``TEMPORAL_MODE``, ``TEMPORAL_MIN_CHANNELS``). ``temporal``.
- Video-wide GroupNorm in every ResNet block and the output norm, per branch; transformer
  norms per frame (``VIDEO_GROUPNORM``). ``video_norm.video_group_norm``.
- Blend mask: the cross-attention of the same step at the blend layers, mean over heads and
  layers, words summed, 3x3 max-pool, nearest resize, per-frame max normalisation, ``> tau``
  with tau 0.3 (``BLEND_TAU``), kept in float32 so no pixel flips on storage rounding. ``masks``.
  The blend layers are defined by their role: the deepest down level that has transformers
  and the up blocks at the same resolution, not the middle block
  (``families/sd_unet.blend_factor``). For SD1.5 that is 1/4 of the latent (16x16 at 512x512): down
  level 2's two transformers (``input_blocks`` 7, 8; diffusers ``down_blocks[2]``) and up
  level 1's three (``output_blocks`` 3, 4, 5; ``up_blocks[1]``), the authors' five 16x16
  layers. For SD2 it is the same levels (24x24 maps at 768x768); for SDXL the deepest level is
  1/4 of the latent too (32x32 maps at 1024x1024: ``input_blocks`` 7, 8 and ``output_blocks``
  0, 1, 2, ten transformer blocks each); a shallower or deeper UNet gets its own deepest
  level (1/2 of the latent for a two-level UNet), where the authors' fixed "16x16" has no
  layer at all. Above 512 pixels the authors' code keeps only the three up-block maps at
  that level (their store skips maps with more than 32x32 queries, and at 1024 pixels the
  down maps exceed that first); the pack keeps all five at every size, since it stores
  only their mean, whose size does not depend on the layer count.
- Latent blending: after steps int(0.2 N) .. int(0.8 N) - 2 (2..6 of 10), mask = source OR
  target, blended towards the inverted latent of the step's UNet timestep, one step noisier
  than the edited latent (an apparent slip in their code, kept for fidelity)
  (``LATENT_BLEND_START``, ``LATENT_BLEND_END``). ``latent_blend.LatentBlend.latent_blend``.
- Only the positive (conditional) branch is fused; the negative branch is untouched.

Wan 2.1 (``families/wan.py``, ``inversion/flow.py``; the authors had no such model, so these are the
pack's choices, each settable on the nodes):
- Inversion: Euler on ComfyUI's ``simple`` flow schedule (the Wan templates'), refined by one
  fixed-point iteration per step that starts from the previous step's velocity, so it costs
  the model calls Euler costs (``WAN_INVERSION``, ``WAN_FIXED_POINT_ITERATIONS``). Measured on
  the tests' random Wan (``tests/test_wan.py::test_reconstruction_error_against_steps``): at 10
  / 25 / 50 steps its reconstruction error is 3 to 4 times smaller than Euler's.
- Few steps (a 4-step lightx2v LoRA, ``WAN_FEW_STEP_ITERATIONS``): 4 fixed-point iterations.
  ``bench/bench_few_step.py`` on the random Wan with shift 5 at CFG 1: one iteration leaves a
  16% reconstruction error at 4 steps (Euler 35%), 4 iterations 2.7%, 8 iterations 0.3%; at
  4 steps 4 iterations cost 17 model calls, fewer than a 20-step inversion's 21. The few-step
  workflow sets it; the node's default stays 1 (at 20 steps and more one iteration is within
  1.3e-2 and every extra iteration costs a whole inversion's calls again).
- Fused blocks: the first half of the depth (``WAN_FUSED_BLOCKS``, 0-14 of the 1.3B model's 30).
  The source pass runs only up to the last fused block, so its cost is that share of a
  one-row model call per fused step: with CFG (two rows per call) and 0.8 of the steps fused,
  the first half costs about 0.5 * 0.8 * 0.5 = 0.2 of plain sampling and all blocks 0.4; a blend
  mask adds the edit row's own self-attention in each fused block (about 0.34 in all at 480p)
  (``make bench-wan`` measures it). Which blocks carry a trained Wan's layout is not
  measurable here (no trained weights): 'all' is the choice for the most structure kept.
- Blend blocks: the middle third (``WAN_BLEND_BLOCKS``), where Prompt-to-Prompt on Wan 2.1
  takes its local-blend maps (its blocks 10-19 of 30; 33%-67% gives 9-20); the maps keep only the source prompt's
  columns (its words and end token of umT5's 512), averaged over heads and blocks.
- Spatio-temporal modes and video GroupNorm: do not apply (one 3D attention over all latent
  frames); the inversion logs when they are set.

Options (inputs of the nodes), off the authors' path:
- ``video_groupnorm`` off: per-frame statistics, as plain ComfyUI sampling.
- ``clean_sigma`` "0 (ComfyUI)": the clean latent at sigma 0.
- ``temporal_mode`` per-frame / current+middle (the paper's equation) / first+previous
  (Tune-A-Video), and ``temporal_min_channels``.
- Sampling with KSamplerAdvanced (ends at sigma 0) instead of the inversion's SIGMAS.
"""
FUSE_MAX_QUERY = 32 * 32
BLEND_TAU = 0.3
LATENT_BLEND_START = 0.2
LATENT_BLEND_END = 0.8
TEMPORAL_MODE = "middle"
TEMPORAL_MIN_CHANNELS = 640
VIDEO_GROUPNORM = True
CROSS_REPLACE_STEPS = 0.8
SELF_REPLACE_STEPS = 0.8
CACHE_REPLACE_STEPS = 0.8  # the cache covers fusion fractions up to the authors' largest

# Wan (families/wan.py): block ranges as percentages of the depth, so the same default means the same
# part of the 30-block 1.3B and the 40-block 14B models. See the Wan section above for the reasons.
WAN_FUSED_BLOCKS = "0%-50%"
WAN_BLEND_BLOCKS = "33%-67%"
WAN_INVERSION = "fixed-point"  # inversion/flow.py
WAN_FIXED_POINT_ITERATIONS = 1
WAN_FEW_STEP_ITERATIONS = 4  # 4-8 step samplers (the Wan 2.2 templates' lightx2v LoRAs)
