"""Kyutai's checkpoint layout (`tokenizer-e351c8d8-checkpoint125.safetensors`).

Every key and shape is listed in `shared/reference/mimi_kyutai_checkpoint_keys.tsv`. The file
carries no config: the released architecture is assumed, with the number of codebooks read
from the keys. Files we write add our config as safetensors metadata (`mimi_config`), which
other readers ignore.
"""

from __future__ import annotations

from mimi.checkpoint.keymap import KeyTable

KYUTAI_KEYS = KeyTable((
    ("{side}.layers.{i}.conv.{p}", "{side}.model.{i}.conv.conv.{p}"),
    ("{side}.layers.{i}.block.{j}.conv.{p}", "{side}.model.{i}.block.{j}.conv.conv.{p}"),
    ("decoder.layers.{i}.convtr.{p}", "decoder.model.{i}.convtr.convtr.{p}"),
    ("{tr}.layers.{i}.attn.in_proj.weight", "{tr}.transformer.layers.{i}.self_attn.in_proj_weight"),
    ("{tr}.layers.{i}.attn.out_proj.weight", "{tr}.transformer.layers.{i}.self_attn.out_proj.weight"),
    ("{tr}.layers.{i}.norm1.{p}", "{tr}.transformer.layers.{i}.norm1.{p}"),
    ("{tr}.layers.{i}.norm2.{p}", "{tr}.transformer.layers.{i}.norm2.{p}"),
    ("{tr}.layers.{i}.mlp.fc1.weight", "{tr}.transformer.layers.{i}.linear1.weight"),
    ("{tr}.layers.{i}.mlp.fc2.weight", "{tr}.transformer.layers.{i}.linear2.weight"),
    ("{tr}.layers.{i}.scale1.scale", "{tr}.transformer.layers.{i}.layer_scale_1.scale"),
    ("{tr}.layers.{i}.scale2.scale", "{tr}.transformer.layers.{i}.layer_scale_2.scale"),
    ("downsample.conv.conv.weight", "downsample.conv.conv.conv.weight"),
    ("upsample.convtr.convtr.weight", "upsample.convtr.convtr.convtr.weight"),
    ("quantizer.semantic.{proj}.weight", "quantizer.rvq_first.{proj}.weight"),
    ("quantizer.acoustic.{proj}.weight", "quantizer.rvq_rest.{proj}.weight"),
    ("quantizer.semantic.layers.{i}.embedding_sum", "quantizer.rvq_first.vq.layers.{i}._codebook.embedding_sum"),
    ("quantizer.semantic.layers.{i}.cluster_usage", "quantizer.rvq_first.vq.layers.{i}._codebook.cluster_usage"),
    ("quantizer.semantic.layers.{i}.initialized", "quantizer.rvq_first.vq.layers.{i}._codebook._initialized"),
    ("quantizer.acoustic.layers.{i}.embedding_sum", "quantizer.rvq_rest.vq.layers.{i}._codebook.embedding_sum"),
    ("quantizer.acoustic.layers.{i}.cluster_usage", "quantizer.rvq_rest.vq.layers.{i}._codebook.cluster_usage"),
    ("quantizer.acoustic.layers.{i}.initialized", "quantizer.rvq_rest.vq.layers.{i}._codebook._initialized"),
))


def is_kyutai_layout(keys: set[str]) -> bool:
    return any(k.startswith("encoder.model.") for k in keys) and any(k.startswith("quantizer.rvq_") for k in keys)


def kyutai_num_codebooks(keys: set[str]) -> int:
    """Total codebooks stored in a Kyutai-layout file (semantic + acoustic levels)."""
    return sum(1 for k in keys if k.endswith("._codebook.embedding_sum"))
