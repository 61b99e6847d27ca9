"""Token extraction for speech-LM datasets: audio files -> Mimi codes in safetensors shards.

    from mimi.defaults import resolve_model
    from mimi.tokens import TokenDataset, extract_tokens

    report = extract_tokens("corpus/", "tokens/", resolve_model("kyutai/mimi"))
    ds = TokenDataset("tokens/")            # map-style torch Dataset of TokenItem
    ds.get("spk1/utt3.flac").codes          # int16 [codebooks, frames] at 12.5 Hz

- `mimi.tokens.inputs`: which files (a folder or a .txt/.lst/.jsonl manifest);
- `mimi.tokens.waveforms`: how a file is read (mono by channel average, 24 kHz);
- `mimi.tokens.extract`: batching, encoding, resume, torchrun scale-out;
- `mimi.tokens.store`: the output folder layout and its crash-safe commit protocol;
- `mimi.tokens.distributed`: the torchrun process group;
- `mimi.tokens.reader`: reading the tokens back.
"""

from __future__ import annotations

from mimi.tokens.extract import ExtractionReport, extract_tokens, token_key
from mimi.tokens.inputs import AUDIO_EXTENSIONS, InputFile, list_inputs
from mimi.tokens.reader import TokenDataset, TokenItem
from mimi.tokens.store import ERRORS, MANIFEST
from mimi.tokens.waveforms import load_waveform

__all__ = [
    "AUDIO_EXTENSIONS", "ERRORS", "MANIFEST", "ExtractionReport", "InputFile", "TokenDataset",
    "TokenItem", "extract_tokens", "list_inputs", "load_waveform", "token_key",
]
