"""The original (CompVis / Stability) single-file layout of SD 1.x / 2.x and SDXL checkpoints, as the
inverse of diffusers' single-file conversion (diffusers/loaders/single_file_utils.py:
convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint,
convert_open_clip_checkpoint).

SDXL (Stability's generative-models `DiffusionEngine`) keeps the UNet and VAE prefixes and adds the
text_time embedding as `label_emb.0.0` / `label_emb.0.2`; its text encoders sit under `conditioner.`:
base: CLIP ViT-L as transformers saved it (`conditioner.embedders.0.transformer.text_model.*`) and
OpenCLIP ViT-bigG (`conditioner.embedders.1.model.*`, fused in_proj, `text_projection` stored as the
[width, projection] matrix OpenCLIP multiplies by, x @ P: the transpose of transformers' Linear weight);
the refiner has only bigG, as `conditioner.embedders.0.model.*`.

Used by tools/make_manifests.py and tools/make_single_file_fixtures.py, which both check the result by
running diffusers' own conversion on it. kiln's loader (models/src/single_file/) implements the same
mapping in Rust; tests/tests/single_file.rs checks it against the manifests these tools write.

Every function maps a diffusers / transformers state-dict name to (original name, part), where part is
None (same tensor), "conv1x1" (a Linear [o, i] stored as a 1x1 conv [o, i, 1, 1]), "transpose" (a Linear
weight stored transposed: OpenCLIP's text_projection) or 0 / 1 / 2 (the q / k / v third, along dim 0, of
OpenCLIP's fused in_proj).
"""
import re

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer."
OPEN_CLIP = "cond_stage_model.model."
SDXL_CLIP = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP = "conditioner.embedders.1.model."
REFINER_OPEN_CLIP = "conditioner.embedders.0.model."

# Buffers of the CompVis LatentDiffusion module (ldm/models/diffusion/ddpm.py, register_schedule) and of
# its EMA helper (LitEma), which the published SD 1.x / 2.x checkpoints carry next to the weights.
# Loaders ignore them; model toolkits list the same set as optional.
SCHEDULE_BUFFERS = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
]
EMA_BUFFERS = ["model_ema.decay", "model_ema.num_updates"]

RESNET_UNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    # SDXL's text_time embedding MLP (diffusers' "addition_embed_type" map).
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _per_block(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def unet_name(name, config):
    """diffusers UNet2DConditionModel name -> original name (part is always None)."""
    n = len(config["block_out_channels"])
    layers = _per_block(config.get("layers_per_block", 2), n)
    up_attention = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    for new, old in UNET_TOP.items():
        if name.startswith(new + "."):
            return UNET + old + name[len(new) :], None

    def resnet(rest):
        key, tail = rest.split(".", 1)
        return RESNET_UNET[key] + "." + tail

    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", name)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        first = 1 + sum(layers[i] + 1 for i in range(b))
        if kind == "resnets":
            return f"{UNET}input_blocks.{first + j}.0.{resnet(rest)}", None
        if kind == "attentions":
            return f"{UNET}input_blocks.{first + j}.1.{rest}", None
        assert rest.startswith("conv."), name
        return f"{UNET}input_blocks.{first + layers[b]}.0.op.{rest[5:]}", None
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", name)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        # Up block b works at level n-1-b with one resnet more than the down block.
        up_layers = [layers[n - 1 - i] + 1 for i in range(n)]
        first = sum(up_layers[:b])
        if kind == "resnets":
            return f"{UNET}output_blocks.{first + j}.0.{resnet(rest)}", None
        if kind == "attentions":
            return f"{UNET}output_blocks.{first + j}.1.{rest}", None
        slot = 2 if up_attention[b] else 1
        return f"{UNET}output_blocks.{first + up_layers[b] - 1}.{slot}.{rest}", None
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"{UNET}middle_block.{2 * j}.{resnet(rest)}", None
        return f"{UNET}middle_block.1.{rest}", None
    raise KeyError(f"no original-layout name for UNet tensor {name}")


VAE_TOP = {
    "conv_norm_out": "norm_out",
}
VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def vae_name(name, config):
    """diffusers AutoencoderKL name -> (original name, None or "conv1x1")."""
    n = len(config["block_out_channels"])
    if name.startswith(("quant_conv.", "post_quant_conv.")):
        return VAE + name, None
    side, rest = name.split(".", 1)
    assert side in ("encoder", "decoder"), name
    base = f"{VAE}{side}."
    for new, old in VAE_TOP.items():
        if rest.startswith(new + "."):
            return base + old + rest[len(new) :], None
    if rest.startswith(("conv_in.", "conv_out.")):
        return base + rest, None

    def resnet(tail):
        return tail.replace("conv_shortcut", "nin_shortcut")

    m = re.match(r"down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*)", rest)
    if m:
        i, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"{base}down.{i}.block.{j}.{resnet(tail)}", None
        return f"{base}down.{i}.downsample.{tail}", None
    m = re.match(r"up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)", rest)
    if m:
        # diffusers' decoder up block i is CompVis' up.(n-1-i): CompVis indexes by resolution.
        i, kind, j, tail = n - 1 - int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"{base}up.{i}.block.{j}.{resnet(tail)}", None
        return f"{base}up.{i}.upsample.{tail}", None
    m = re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest)
    if m:
        return f"{base}mid.block_{int(m[1]) + 1}.{resnet(m[2])}", None
    m = re.match(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)$", rest)
    if m:
        layer, param = m[1], m[2]
        part = "conv1x1" if layer != "group_norm" and param == "weight" else None
        return f"{base}mid.attn_1.{VAE_ATTENTION[layer]}.{param}", part
    raise KeyError(f"no original-layout name for VAE tensor {name}")


def clip_name(name, prefix=CLIP):
    """transformers CLIPTextModel name (with or without "text_model.") -> SD 1.x original name (SDXL's
    CLIP-L with prefix=SDXL_CLIP)."""
    name = name.removeprefix("text_model.")
    return f"{prefix}text_model.{name}", None


OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def open_clip_name(name, prefix=OPEN_CLIP):
    """transformers CLIPTextModel(WithProjection) name -> (OpenCLIP original name, None, "transpose" or
    q/k/v index): SD 2.x's under cond_stage_model.model., SDXL's bigG with prefix=SDXL_OPEN_CLIP or
    REFINER_OPEN_CLIP."""
    if name == "text_projection.weight":
        return prefix + "text_projection", "transpose"
    name = name.removeprefix("text_model.")
    if name in OPEN_CLIP_TOP:
        return prefix + OPEN_CLIP_TOP[name], None
    m = re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)$", name)
    if not m:
        raise KeyError(f"no original-layout name for OpenCLIP tensor {name}")
    i, layer, param = int(m[1]), m[2], m[3]
    base = f"{prefix}transformer.resblocks.{i}."
    qkv = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
    if layer in qkv:
        return f"{base}attn.in_proj_{param}", qkv[layer]
    return f"{base}{OPEN_CLIP_LAYER[layer]}.{param}", None


def to_original(state_dict, rename):
    """Applies `rename` (name -> (original name, part)) to a diffusers state dict of tensors, fusing the
    q/k/v thirds, turning Linear weights marked conv1x1 into [o, i, 1, 1] and transposing those marked
    transpose."""
    import torch

    out, thirds = {}, {}
    for name, tensor in state_dict.items():
        original, part = rename(name)
        if part is None:
            assert original not in out, original
            out[original] = tensor
        elif part == "conv1x1":
            out[original] = tensor[:, :, None, None]
        elif part == "transpose":
            out[original] = tensor.T.contiguous()
        else:
            thirds.setdefault(original, [None, None, None])[part] = tensor
    for original, parts in thirds.items():
        assert all(p is not None for p in parts), original
        out[original] = torch.cat(parts, dim=0)
    return out


def open_clip_extras(hidden, intermediate, layers, projection_dim, make):
    """The tensors of SD 2.x's FrozenOpenCLIPEmbedder that diffusers' CLIPTextModel drops: the last
    resblock (SD 2.x conditions on the penultimate layer, so diffusers' config has one layer fewer),
    text_projection and logit_scale. `make(shape)` creates each tensor."""
    base = f"{OPEN_CLIP}transformer.resblocks.{layers}."
    shapes = {
        "attn.in_proj_weight": [3 * hidden, hidden],
        "attn.in_proj_bias": [3 * hidden],
        "attn.out_proj.weight": [hidden, hidden],
        "attn.out_proj.bias": [hidden],
        "ln_1.weight": [hidden],
        "ln_1.bias": [hidden],
        "ln_2.weight": [hidden],
        "ln_2.bias": [hidden],
        "mlp.c_fc.weight": [intermediate, hidden],
        "mlp.c_fc.bias": [intermediate],
        "mlp.c_proj.weight": [hidden, intermediate],
        "mlp.c_proj.bias": [hidden],
    }
    out = {base + k: make(v) for k, v in shapes.items()}
    out[OPEN_CLIP + "text_projection"] = make([hidden, projection_dim])
    out[OPEN_CLIP + "logit_scale"] = make([])
    return out
