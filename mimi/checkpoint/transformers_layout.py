"""The transformers layout (`kyutai/mimi` on the hub: `config.json` + `model.safetensors`).

Besides renames, it differs in one quirk: attention projections are split into q/k/v, and the
q and k rows are permuted from Kyutai's interleaved RoPE pairs (0,1),(2,3),... to the
"rotate-half" pairs (i, i + Dh/2) that transformers' RoPE uses (`ROPE_QK_PERMUTATION`).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from mimi.checkpoint.keymap import KeyTable, RenamedState
from mimi.config import MimiConfig, QuantizerConfig, SeanetConfig, TransformerConfig
from mimi.errors import MimiError
from mimi.modules.seanet import decoder_convtr_indices

_SEM = "quantizer.semantic_residual_vector_quantizer"
_AC = "quantizer.acoustic_residual_vector_quantizer"

TRANSFORMERS_KEYS = KeyTable((
    ("{side}.layers.{i}.conv.{p}", "{side}.layers.{i}.conv.{p}"),
    ("{side}.layers.{i}.block.{j}.conv.{p}", "{side}.layers.{i}.block.{j}.conv.{p}"),
    # listed for the way out; on the way in, `decoder.layers.N.conv` is ambiguous and resolved
    # by `_fix_decoder_convtr` from the decoder's structure
    ("decoder.layers.{i}.convtr.{p}", "decoder.layers.{i}.conv.{p}"),
    ("{tr}.layers.{i}.attn.out_proj.weight", "{tr}.layers.{i}.self_attn.o_proj.weight"),
    ("{tr}.layers.{i}.norm1.{p}", "{tr}.layers.{i}.input_layernorm.{p}"),
    ("{tr}.layers.{i}.norm2.{p}", "{tr}.layers.{i}.post_attention_layernorm.{p}"),
    ("{tr}.layers.{i}.mlp.fc1.weight", "{tr}.layers.{i}.mlp.fc1.weight"),
    ("{tr}.layers.{i}.mlp.fc2.weight", "{tr}.layers.{i}.mlp.fc2.weight"),
    ("{tr}.layers.{i}.scale1.scale", "{tr}.layers.{i}.self_attn_layer_scale.scale"),
    ("{tr}.layers.{i}.scale2.scale", "{tr}.layers.{i}.mlp_layer_scale.scale"),
    ("downsample.conv.conv.weight", "downsample.conv.weight"),
    ("upsample.convtr.convtr.weight", "upsample.conv.weight"),
    ("quantizer.semantic.{proj}.weight", _SEM + ".{proj}.weight"),
    ("quantizer.acoustic.{proj}.weight", _AC + ".{proj}.weight"),
    ("quantizer.semantic.layers.{i}.embedding_sum", _SEM + ".layers.{i}.codebook.embed_sum"),
    ("quantizer.semantic.layers.{i}.cluster_usage", _SEM + ".layers.{i}.codebook.cluster_usage"),
    ("quantizer.semantic.layers.{i}.initialized", _SEM + ".layers.{i}.codebook.initialized"),
    ("quantizer.acoustic.layers.{i}.embedding_sum", _AC + ".layers.{i}.codebook.embed_sum"),
    ("quantizer.acoustic.layers.{i}.cluster_usage", _AC + ".layers.{i}.codebook.cluster_usage"),
    ("quantizer.acoustic.layers.{i}.initialized", _AC + ".layers.{i}.codebook.initialized"),
))

_IN_PROJ = re.compile(r"^(?P<tr>encoder_transformer|decoder_transformer)\.layers\.(?P<i>\d+)\.attn\.in_proj\.weight$")
_QKV = re.compile(r"^(?P<tr>encoder_transformer|decoder_transformer)\.layers\.(?P<i>\d+)\.self_attn\.(?P<w>[qkv])_proj\.weight$")


# -- the RoPE quirk ----------------------------------------------------------------------
def interleaved_to_rotate_half(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """ROPE_QK_PERMUTATION: rows of a q or k projection [H*Dh, D], per head (0,1,2,3..) -> (0,2,..,1,3,..)."""
    hd, d = w.shape
    return w.view(num_heads, hd // num_heads // 2, 2, d).transpose(1, 2).reshape(hd, d)


def rotate_half_to_interleaved(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    hd, d = w.shape
    return w.view(num_heads, 2, hd // num_heads // 2, d).transpose(1, 2).reshape(hd, d)


def to_transformers(state: dict[str, torch.Tensor], cfg: MimiConfig) -> dict[str, torch.Tensor]:
    heads = cfg.transformer.num_heads
    rest = {k: v for k, v in state.items() if not _IN_PROJ.match(k)}
    out = TRANSFORMERS_KEYS.state_to_theirs(rest)
    for key, w in state.items():
        m = _IN_PROJ.match(key)
        if m:
            q, k, v = w.chunk(3, dim=0)
            prefix = f"{m['tr']}.layers.{m['i']}.self_attn"
            out[f"{prefix}.q_proj.weight"] = interleaved_to_rotate_half(q, heads).contiguous()
            out[f"{prefix}.k_proj.weight"] = interleaved_to_rotate_half(k, heads).contiguous()
            out[f"{prefix}.v_proj.weight"] = v.contiguous()
    return out


def from_transformers(state: dict[str, torch.Tensor], cfg: MimiConfig) -> RenamedState:
    heads = cfg.transformer.num_heads
    renamed = TRANSFORMERS_KEYS.state_to_ours({k: v for k, v in state.items() if not _QKV.match(k)})
    out, unknown = dict(renamed.state), list(renamed.unknown)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, w in state.items():
        m = _QKV.match(key)
        if m:
            groups.setdefault(f"{m['tr']}.layers.{m['i']}.attn.in_proj.weight", {})[m["w"]] = w
    for ours, parts in groups.items():
        if set(parts) != {"q", "k", "v"}:
            raise MimiError(f"checkpoint has an incomplete q/k/v projection set for {ours}")
        out[ours] = torch.cat([rotate_half_to_interleaved(parts["q"], heads),
                               rotate_half_to_interleaved(parts["k"], heads), parts["v"]], dim=0)
    return RenamedState(_fix_decoder_convtr(out, cfg), unknown)


def _fix_decoder_convtr(state: dict[str, torch.Tensor], cfg: MimiConfig) -> dict[str, torch.Tensor]:
    """transformers calls the decoder's transposed convs `conv`, like its plain convs."""
    convtr = {f"decoder.layers.{i}.conv." for i in decoder_convtr_indices(cfg.seanet)}
    out = {}
    for key, value in state.items():
        prefix = key[: key.rfind(".") + 1]
        out[prefix.replace(".conv.", ".convtr.") + key[len(prefix):] if prefix in convtr else key] = value
    return out


def is_transformers_layout(keys: set[str]) -> bool:
    return any(k.startswith(_SEM) for k in keys)


# -- config.json ---------------------------------------------------------------------------
def config_to_json_dict(cfg: MimiConfig) -> dict[str, Any]:
    """A `config.json` that transformers' `MimiConfig` reads."""
    s, t, q = cfg.seanet, cfg.transformer, cfg.quantizer
    return {
        "architectures": ["MimiModel"],
        "model_type": "mimi",
        "sampling_rate": cfg.sample_rate,
        "frame_rate": cfg.frame_rate,
        "audio_channels": s.channels,
        "hidden_size": s.dimension,
        "num_filters": s.n_filters,
        "num_residual_layers": s.n_residual_layers,
        "upsampling_ratios": list(s.ratios),
        "kernel_size": s.kernel_size,
        "last_kernel_size": s.last_kernel_size,
        "residual_kernel_size": s.residual_kernel_size,
        "dilation_growth_rate": s.dilation_base,
        "use_causal_conv": True,
        "pad_mode": s.pad_mode,
        "compress": s.compress,
        "trim_right_ratio": 1.0,
        "codebook_size": q.bins,
        "codebook_dim": q.dimension,
        "vector_quantization_hidden_dimension": q.dimension,
        "num_quantizers": q.n_q,
        "num_semantic_quantizers": q.n_q_semantic,
        "use_conv_shortcut": False,
        "upsample_groups": s.dimension,
        "num_hidden_layers": t.num_layers,
        "intermediate_size": t.dim_feedforward,
        "num_attention_heads": t.num_heads,
        "num_key_value_heads": t.num_heads,
        "head_dim": t.head_dim,
        "hidden_act": "gelu",
        "norm_eps": t.norm_eps,
        "rope_theta": t.max_period,
        "rope_parameters": {"rope_theta": t.max_period, "rope_type": "default"},
        "sliding_window": t.context,
        "max_position_embeddings": 8000,
        "layer_scale_initial_scale": t.layer_scale,
        "attention_bias": False,
        "use_cache": False,
        "mimi_toolkit_name": cfg.name,
    }


def config_from_json_dict(d: dict[str, Any]) -> MimiConfig:
    """Our config from a transformers `config.json`; refuses variants we do not implement."""
    def get(key: str, default: Any) -> Any:
        return d.get(key, default)

    unsupported = {
        "use_causal_conv": (True, get("use_causal_conv", True)),
        "trim_right_ratio": (1.0, float(get("trim_right_ratio", 1.0))),
        "use_conv_shortcut": (False, get("use_conv_shortcut", False)),
        "hidden_act": ("gelu", get("hidden_act", "gelu")),
        "attention_bias": (False, get("attention_bias", False)),
    }
    for key, (wanted, got) in unsupported.items():
        if got != wanted:
            raise MimiError(f"unsupported Mimi config: {key}={got!r} (only {wanted!r} is implemented)")
    hidden = get("hidden_size", 512)
    heads = get("num_attention_heads", 8)
    if get("num_key_value_heads", heads) != heads:
        raise MimiError("unsupported Mimi config: grouped-query attention (num_key_value_heads != num_attention_heads)")
    if get("head_dim", hidden // heads) != hidden // heads:
        raise MimiError("unsupported Mimi config: head_dim != hidden_size / num_attention_heads")
    if get("upsample_groups", hidden) != hidden:
        raise MimiError("unsupported Mimi config: upsample_groups must equal hidden_size (depthwise upsample)")
    rope = get("rope_parameters", None) or {}
    max_period = rope.get("rope_theta", get("rope_theta", 10000.0))
    codebook_dim = get("vector_quantization_hidden_dimension", get("codebook_dim", 256))
    try:
        return MimiConfig(
            sample_rate=get("sampling_rate", 24000),
            frame_rate=float(get("frame_rate", None) or 12.5),
            seanet=SeanetConfig(
                channels=get("audio_channels", 1), dimension=hidden, n_filters=get("num_filters", 64),
                ratios=tuple(get("upsampling_ratios", (8, 6, 5, 4))),
                n_residual_layers=get("num_residual_layers", 1), kernel_size=get("kernel_size", 7),
                last_kernel_size=get("last_kernel_size", 3), residual_kernel_size=get("residual_kernel_size", 3),
                dilation_base=get("dilation_growth_rate", 2), compress=get("compress", 2),
                pad_mode=get("pad_mode", "constant"),
            ),
            transformer=TransformerConfig(
                d_model=hidden, num_heads=heads, num_layers=get("num_hidden_layers", 8),
                dim_feedforward=get("intermediate_size", 2048), context=get("sliding_window", 250),
                max_period=float(max_period), layer_scale=get("layer_scale_initial_scale", 0.01),
                norm_eps=get("norm_eps", 1e-5),
            ),
            quantizer=QuantizerConfig(
                dimension=codebook_dim, n_q=get("num_quantizers", 32),
                n_q_semantic=get("num_semantic_quantizers", 1), bins=get("codebook_size", 2048),
            ),
            name=get("mimi_toolkit_name", "mimi"),
        )
    except (TypeError, ValueError) as exc:
        raise MimiError(f"invalid Mimi config.json: {exc}") from None
