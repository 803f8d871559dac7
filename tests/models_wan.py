"""Tiny random-weight Wan parts, built from ComfyUI's own classes and loadable by its real loaders.

- ``wan21_diffusion_model(folder)``: a two-block ``comfy.ldm.wan.model.WanModel`` (dim 128, one
  head) saved as a diffusion-model file (plain ``WanModel`` keys, as the released Wan files have
  them); ``UNETLoader`` detects it as ``WAN21_T2V``, and with ``channels=48`` as ``WAN22_T2V``
  (the 5B model's 48-channel latent), see ``wan22_5b_diffusion_model``.
- ``train_spiece(sentences)``: a small SentencePiece unigram model with umT5's special ids
  (pad 0, end 1, unk 2, no start token) in which every word of the test prompts is one piece.
- ``wan_text_encoder(spiece)``: a ``comfy.sd.CLIP`` made of ComfyUI's Wan text-encoder classes
  (``comfy.text_encoders.wan.te()`` -> ``UMT5XXlModel`` -> ``comfy.text_encoders.t5.T5`` and
  ``WanT5Tokenizer``) with a small umT5 config passed through ComfyUI's own config hook
  (``model_options["umt5xxl_model_config"]``): d_model stays 4096 (Wan's ``text_dim``: the
  encoder has no output projection, its width is the context width), everything else is small.
  There is no file for it: ``CLIPLoader`` (type "wan") cannot load a tiny umT5, because
  ``comfy.sd.detect_te_model`` only calls a file umT5-XXL when it has a 24th block
  (``encoder.block.23...``; fewer blocks are taken for T5-base, i.e. the ACE text encoder) and
  ``comfy.text_encoders.wan.te`` then builds the fixed umT5-XXL config (5.7 B parameters), which
  the node gives no way to override.
- ``wan21_vae(folder)``: a ``comfy.ldm.wan.vae.WanVAE`` of width ``dim`` (ComfyUI reads the width
  from ``decoder.head.0.gamma``; channel multipliers, block counts, 16 latent channels, 8x spatial
  and 4x temporal compression are Wan 2.1's) that ``VAELoader`` loads as the Wan 2.1 VAE.

Weights are seeded (a fixed parameter order, their own generator), so every build is
bit-identical. None of this is a real model: outputs only show that a graph works.
"""
from __future__ import annotations

import io
import math
import os
import string
from pathlib import Path

import torch

FORMAT = 1  # bump when a builder changes

# Wan's fixed widths: the umT5-XXL context width its text embedding takes, and its text length.
WAN_TEXT_DIM = 4096
WAN_TEXT_LEN = 512

# Prompts of the pack's tests and examples, and a few more: each of their words becomes a
# whole piece of the tokenizer that ``train_spiece`` trains by default.
DEFAULT_PROMPTS = (
    "a silver jeep driving down a curvy road in the countryside",
    "watercolor painting of a silver jeep driving down a curvy road in the countryside",
    "a red jeep driving down a curvy road in the countryside",
    "a golden jeep driving down a curvy road in the countryside",
    "a blue jeep driving down a curvy road",
    "a Porsche car driving down a curvy road in the countryside",
    "a silver tiger driving down a curvy road in the countryside",
    "a red jeep in the snow",
    "a red car",
    "a cat walking on the grass",
    "a dog running on the grass",
    "a cat on the floor",
    "a hippopotamus on the floor",
    "a red tiger walking on the rock against a wall",
    "a brown bear walking on the rock against a wall",
    "a black swan with a red beak swimming in a river near a wall and bushes",
    "a white duck with a yellow beak swimming in a river near a wall and bushes",
    "van gogh style painting of a yellow sunflower, swaying",
    "Van Gogh style oil painting of a mountain lake at sunset",
    "a mountain lake at sunset",
    "a man riding a bike on the street",
    "a woman riding a motorbike in the city",
    "a rabbit is eating a watermelon on the table",
    "a squirrel is eating a carrot",
    "pokemon cartoon of a puppy",
    "a photo of a green car on the beach, sunny day",
    "a lego toy jeep, plastic render",
    "cinematic, high quality, blurry, low quality, worst quality",
    # the shipped workflows' sample clips (workflows/build.py: RABBIT, BICYCLE) and their edits
    "a fat grey rabbit stretching in front of a burrow on a grassy hill",
    "a fat pink rabbit stretching in front of a burrow on a grassy hill",
    "people walking past a black bicycle parked against a wall on a cobblestone street",
    "static, still picture",
)

# Every character a plain ASCII prompt may hold: always in the alphabet, so nothing maps to unk.
_REQUIRED_CHARS = string.ascii_letters + string.digits + string.punctuation


# --------------------------------------------------------------------------- helpers


def _save(path: Path, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float16,
          extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Save ``sd`` (floats as ``dtype``) as safetensors through a temporary file and an atomic
    rename, so that a loader (or the test server) never sees half a file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    out.update(extra or {})
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    # one metadata entry: safetensors writes several in no fixed order, and a build must not vary
    # ("wan_models" is this module's name before the rename, kept so the files' bytes are unchanged)
    save_file(out, str(tmp), metadata={"fatezero_test_model": f"random weights, not a real model (wan_models {FORMAT})"})
    os.replace(tmp, path)
    return path


def _fan_in(p: torch.Tensor) -> int:
    return p[0].numel() if p.ndim > 1 else p.numel()


def parameter_count(path: str | os.PathLike) -> int:
    """Number of weights in a safetensors file (what ComfyUI's loaders count)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


# --------------------------------------------------------------------------- diffusion model


# Gain of the RMS norms on q and k of every text cross-attention (see init_wan_).
CROSS_ATTN_QK_GAIN = 2.0
# The head's output weights against a unit-gain init: a smaller velocity, a smoother flow.
OUT_SCALE = 0.3


@torch.no_grad()
def init_wan_(model: torch.nn.Module, seed: int, std: float | None = None, cross_attn_qk_gain: float = CROSS_ATTN_QK_GAIN,
              out_scale: float = OUT_SCALE) -> torch.nn.Module:
    """Seeded init of a ``WanModel``, in sorted parameter order (independent of global RNG).

    Linear and convolution weights N(0, 1/fan_in) (``std`` instead if given), biases 0, norm
    weights 1, the block and head ``modulation`` tables N(0, 1/dim) (Wan's own init; they are
    ``torch.empty`` otherwise). So the residual stream stays at unit scale through the blocks.
    A fixed std of 0.02 would make each 128-wide linear a gain of 0.23: the three linears of the
    text path then reach the blocks at about 1% of the residual stream, and changing one word
    of the prompt moved the predicted velocity by 0.1%.

    Two choices make the prompt matter as in a trained model:
    - the q and k RMS norms of the text cross-attentions get weight ``cross_attn_qk_gain``
      (logit spread gain**2): Wan attends over all 512 context rows, the ~500 zeroed padding
      rows give logit 0, and with unit norms they would take almost all the attention. At
      gain 2 a one-word change of the prompt moves the velocity by about 20%;
    - the head's weights times ``out_scale``: a velocity of standard deviation ~0.35, smooth
      enough in the latent for inversion tests (as ``models_sd1`` shrinks the UNet's output)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("modulation"):
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        elif name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1:  # norm_q, norm_k (RMSNorm), norm3 (LayerNorm)
            p.fill_(cross_attn_qk_gain if ".cross_attn.norm_" in name else 1.0)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * (std if std is not None else 1 / math.sqrt(_fan_in(p))))
    model.head.head.weight.mul_(out_scale)
    return model


def wan_model(seed: int = 0, dim: int = 128, num_layers: int = 2, ffn_dim: int = 256,
              channels: int = 16, dtype: torch.dtype = torch.float32, model_type: str = "t2v",
              image_channels: int = 0, **init) -> torch.nn.Module:
    """The random ``WanModel`` (one head per 128 of ``dim`` as ComfyUI's detection assumes,
    ``channels`` latent channels out, ``channels + image_channels`` in, Wan's 4096-wide text
    input) on the CPU, built in ``dtype`` (bfloat16 halves the peak for the 5B-shaped bench
    model). ``model_type`` "i2v" adds Wan 2.1 I2V's CLIP-vision projection and image
    cross-attention; ``image_channels`` 20 is an image-to-video model's mask and start-image
    input. ``init`` goes to ``init_wan_``."""
    import comfy.ldm.wan.model
    import comfy.ops

    if dim % 128:
        raise ValueError(f"dim must be a multiple of 128 (ComfyUI detects num_heads = dim // 128), not {dim}")
    model = comfy.ldm.wan.model.WanModel(
        model_type=model_type, dim=dim, ffn_dim=ffn_dim, num_heads=dim // 128, num_layers=num_layers,
        in_dim=channels + image_channels, out_dim=channels, text_dim=WAN_TEXT_DIM,
        operations=comfy.ops.disable_weight_init, dtype=dtype)
    return init_wan_(model, seed, **init)


def wan21_diffusion_model(folder: str | os.PathLike, name: str = "wan21_tiny_t2v.safetensors", seed: int = 0,
                          dim: int = 128, num_layers: int = 2, ffn_dim: int = 256, channels: int = 16,
                          **init) -> Path:
    """Write ``folder/name``: a random ``WanModel`` as a diffusion-model file with plain
    ``WanModel`` keys (``head.modulation``, ``blocks.0.ffn.0.weight``, ...: no prefix, as the
    released Wan files; ``load_diffusion_model`` would also strip a ``model.diffusion_model.``
    prefix), weights in fp16. ``UNETLoader`` detects 16 channels as ``WAN21_T2V`` and 48 as
    ``WAN22_T2V``. 1.1 M parameters at the defaults, half of them the 4096 -> 128 text
    embedding; ``init`` goes to ``init_wan_``."""
    model = wan_model(seed, dim, num_layers, ffn_dim, channels, **init)
    return _save(Path(folder) / name, model.state_dict())


def wan_i2v_diffusion_model(folder: str | os.PathLike, version: str = "2.1", seed: int = 0, **widths) -> Path:
    """Write a random image-to-video ``WanModel`` (36 input channels: latent, mask, start image)
    as ``folder/wan<version>_tiny_i2v.safetensors``: version "2.1" with the CLIP-vision
    projection (``img_emb``, 1280-wide input) and image cross-attention, which ``UNETLoader``
    detects as ``WAN21_I2V``; "2.2" without them, as the Wan 2.2 I2V A14B experts are, detected
    as ``WAN21_T2V`` with 36 input channels."""
    model_type = {"2.1": "i2v", "2.2": "t2v"}[version]
    model = wan_model(seed, model_type=model_type, image_channels=20, **widths)
    return _save(Path(folder) / f"wan{version.replace('.', '')}_tiny_i2v.safetensors", model.state_dict())


def wan22_5b_diffusion_model(folder: str | os.PathLike, name: str = "wan22_tiny_ti2v_5b.safetensors",
                             seed: int = 0, **widths) -> Path:
    """``wan21_diffusion_model`` with Wan 2.2 5B's 48 latent channels: detected as ``WAN22_T2V``."""
    return wan21_diffusion_model(folder, name, seed, channels=48, **widths)


def wan21_lora(folder: str | os.PathLike, name: str = "wan21_tiny_lora.safetensors", seed: int = 7, dim: int = 128,
               num_layers: int = 2, rank: int = 4) -> Path:
    """Write ``folder/name``: a random rank-``rank`` LoRA for ``wan21_diffusion_model``'s model
    on every block's attention projections, in ComfyUI's generic key format
    (``diffusion_model.blocks.0.self_attn.q.lora_down.weight``), float32. What a lightx2v LoRA
    is to the tests: ``LoraLoaderModelOnly`` must patch every key, and the pack must see a
    patched MODEL in the inversion and the fusion alike."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(num_layers):
        for layer in ("self_attn.q", "self_attn.k", "self_attn.v", "cross_attn.q", "cross_attn.o"):
            base = f"diffusion_model.blocks.{i}.{layer}"
            sd[f"{base}.lora_down.weight"] = torch.randn(rank, dim, generator=g) * 0.1
            sd[f"{base}.lora_up.weight"] = torch.randn(dim, rank, generator=g) * 0.1
    return _save(Path(folder) / name, sd, dtype=torch.float32)


# --------------------------------------------------------------------------- tokenizer


def prompt_words(sentences=DEFAULT_PROMPTS) -> list[str]:
    """The distinct words of ``sentences`` (split at spaces, with outer punctuation removed)."""
    words = {w.strip(string.punctuation) for s in sentences for w in s.split()}
    return sorted(w for w in words if w)


def train_spiece(sentences: list[str] | tuple[str, ...] = DEFAULT_PROMPTS, vocab_size: int = 1000) -> bytes:
    """A serialized SentencePiece unigram model trained in memory on ``sentences``, with umT5's
    special ids: pad 0, end (``</s>``) 1, unk 2 and no start token (``WanT5Tokenizer`` reads the
    end token from it and pads with 0).

    Each word of ``sentences`` becomes one whole piece ``▁word``: the unigram trainer seeds its
    vocabulary with repeated substrings that occur in more than one context, so each word is
    also given alone and doubled (``"jeep"``, ``"jeep jeep"``) beside the sentences. Every
    ASCII letter, digit and punctuation mark is in the alphabet, so other ASCII words split into
    known pieces rather than unk. ``vocab_size`` is an upper bound (``hard_vocab_limit`` off):
    the model has as many pieces as the corpus supports. One thread, no sampling or shuffling:
    the same sentences give the same bytes."""
    import sentencepiece as spm

    words = prompt_words(sentences)
    corpus = list(sentences) + words + [f"{w} {w}" for w in words]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, character_coverage=1.0,
        required_chars=_REQUIRED_CHARS, split_by_whitespace=True, num_threads=1, input_sentence_size=0,
        shuffle_input_sentence=False, minloglevel=2)
    return buf.getvalue()


def spiece_size(spiece: bytes) -> int:
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()


# --------------------------------------------------------------------------- text encoder


def umt5_config(vocab_size: int, d_model: int = WAN_TEXT_DIM, layers: int = 2, heads: int = 2, d_kv: int = 32,
                d_ff: int = 64) -> dict:
    """A small umT5 config with the keys of ``comfy/text_encoders/umt5_config_base.json``: gated
    GELU feed-forward, a relative-position bias in every layer (``model_type`` "umt5")."""
    return {
        "d_ff": d_ff, "d_kv": d_kv, "d_model": d_model, "decoder_start_token_id": 0, "dropout_rate": 0.1,
        "eos_token_id": 1, "dense_act_fn": "gelu_pytorch_tanh", "initializer_factor": 1.0,
        "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": 1e-06, "model_type": "umt5",
        "num_decoder_layers": layers, "num_heads": heads, "num_layers": layers, "output_past": True,
        "pad_token_id": 0, "relative_attention_num_buckets": 32, "tie_word_embeddings": False,
        "vocab_size": vocab_size,
    }


def umt5_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights for ``comfy.text_encoders.t5.T5(config)`` under its own keys (the keys of a
    umT5 text-encoder file), scaled as T5's (Mesh TensorFlow) init: embeddings N(0, 1), q
    N(0, 1/(d_model d_kv)) (T5 does not scale its logits), k, v and the input projections
    N(0, 1/d_model), the output projections N(0, 1/fan_in), norms 1. So activations stay
    near unit scale and the final RMS norm gives unit-scale context rows."""
    import comfy.ops
    import comfy.text_encoders.t5

    meta = comfy.text_encoders.t5.T5(config, torch.float32, "meta", comfy.ops.disable_weight_init)
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, p in sorted(meta.state_dict().items()):
        if key.endswith("layer_norm.weight"):
            value = torch.ones(p.shape)
        elif key == "shared.weight" or key.endswith("relative_attention_bias.weight"):
            value = torch.randn(p.shape, generator=gen) * (1.0 if key == "shared.weight" else 0.5)
        elif key.endswith("SelfAttention.q.weight"):
            value = torch.randn(p.shape, generator=gen) / math.sqrt(config["d_model"] * config["d_kv"])
        else:
            value = torch.randn(p.shape, generator=gen) / math.sqrt(_fan_in(p))
        sd[key] = value
    return sd


def wan_text_encoder(spiece: bytes, seed: int = 0, d_model: int = WAN_TEXT_DIM, layers: int = 2, heads: int = 2,
                     d_kv: int = 32, d_ff: int = 64):
    """A ``comfy.sd.CLIP`` built as ``CLIPLoader`` builds Wan's (``comfy.text_encoders.wan.te()``
    and ``WanT5Tokenizer`` with ``tokenizer_data={"spiece_model": spiece}``) but with the small
    umT5 config ``umt5_config(...)`` given through ComfyUI's hook for it
    (``model_options["umt5xxl_model_config"]``, read by ``SDClipModel``), and seeded weights.

    ``clip.encode_from_tokens(clip.tokenize(text))`` is ``[1, 512, d_model]``: the prompt's
    tokens and its end token, then zeros (umT5's attention mask and ``zero_out_masked``).
    ``d_model`` must stay 4096 for Wan (its ``text_embedding`` takes 4096-wide rows and umT5
    has no output projection). At the defaults (187-piece vocabulary): 4.5 M parameters, 1.85 M
    per layer in the 4096-wide q, k, v, o and feed-forward matrices, 0.76 M in the embedding."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.wan

    config = umt5_config(spiece_size(spiece), d_model, layers, heads, d_kv, d_ff)
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.wan.WanT5Tokenizer,
                                                    comfy.text_encoders.wan.te())
    sd = umt5_state_dict(config, seed)
    clip = comfy.sd.CLIP(target, tokenizer_data={"spiece_model": spiece},
                         parameters=sum(v.numel() for v in sd.values()),
                         model_options={"umt5xxl_model_config": config})
    missing, unexpected = clip.load_sd(sd)
    if missing or unexpected:
        raise RuntimeError(f"the tiny umT5 weights do not fit: missing {missing}, unexpected {unexpected}")
    return clip


# --------------------------------------------------------------------------- VAE


@torch.no_grad()
def init_wan_vae_(vae: torch.nn.Module, seed: int, out_scale: float = 0.3) -> torch.nn.Module:
    """Seeded init of a ``WanVAE``: convolutions N(0, 1/fan_in) (unit-scale features after each
    RMS norm), biases 0, RMS-norm ``gamma`` 1; the decoder's last convolution times
    ``out_scale``, so decoded pixels sit mostly inside [-1, 1] rather than at the clamp."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(vae.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("bias"):
            p.zero_()
        elif name.endswith("gamma"):
            p.fill_(1.0)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(_fan_in(p)))
    vae.decoder.head[-1].weight.mul_(out_scale)
    return vae


def wan21_vae(folder: str | os.PathLike, name: str = "wan21_tiny_vae.safetensors", seed: int = 0, dim: int = 8) -> Path:
    """Write ``folder/name``: a random Wan 2.1 VAE (``comfy.ldm.wan.vae.WanVAE``: 16 latent channels,
    8x spatial and 4x temporal compression, channel multipliers 1, 2, 4, 4) of base width
    ``dim`` (Wan's is 96), with the plain ``WanVAE`` keys of the released file. ``VAELoader``
    reads the width from ``decoder.head.0.gamma``: 4n+1 frames of HxW encode to
    ``[1, 16, n+1, H/8, W/8]``. 0.92 M parameters at dim 8 (Wan's: 127 M)."""
    import comfy.ldm.wan.vae

    vae = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    init_wan_vae_(vae.to(torch.float32), seed)
    return _save(Path(folder) / name, vae.state_dict())


def wan22_vae(seed: int = 0, dim: int = 16):
    """A ``comfy.sd.VAE`` holding a random Wan 2.2 VAE (``comfy.ldm.wan.vae2_2.WanVAE``: 48 latent
    channels, 16x spatial and 4x temporal compression) of base width ``dim`` (Wan's: 160 / 256,
    705 M parameters; 3.9 M at 16). There is no file for it: ``VAELoader`` detects the Wan 2.2
    VAE by its keys and then builds the full widths. So the object is made as ``comfy.sd.VAE``
    makes a Wan VAE (through its constructor, from the tiny Wan 2.1 VAE's weights) and given the
    2.2 model with the ratios ``comfy.sd.VAE`` sets for it."""
    import comfy.ldm.wan.vae
    import comfy.ldm.wan.vae2_2
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd

    model = comfy.ldm.wan.vae2_2.WanVAE(dim=dim, dec_dim=dim, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                        attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    init_wan_vae_(model.to(torch.float32), seed).requires_grad_(False)
    v21 = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    vae = comfy.sd.VAE(sd=init_wan_vae_(v21, seed).state_dict())
    vae.first_stage_model = model.eval().to(vae.vae_dtype)
    vae.latent_channels = 48
    vae.upscale_ratio, vae.upscale_index_formula = (lambda a: max(0, a * 4 - 3), 16, 16), (4, 16, 16)
    vae.downscale_ratio, vae.downscale_index_formula = (lambda a: max(0, math.floor((a + 3) / 4)), 16, 16), (4, 16, 16)
    vae.patcher = comfy.model_patcher.ModelPatcher(vae.first_stage_model, load_device=vae.device,
                                                   offload_device=comfy.model_management.vae_offload_device())
    vae.size = None
    vae.model_size()
    return vae
