"""moshi_lm: Kyutai's Moshi speech-text LM (Helium temporal transformer + depformer,
Inner Monologue), as a thin layer over the `mimi` codec package.

    import moshi_lm
    model = moshi_lm.load("path/to/moshiko")            # config.json + model.safetensors
    out = model(codes)                                  # training: [B, 17, T] -> LMOutput
    loss = moshi_lm.lm_loss(out, codes)
    gen = moshi_lm.LMGen(model)
    with gen.streaming(1):
        frame = gen.step(user_codes)                    # [1, 8, 1] -> None | [1, 9, 1]
"""

from moshi_lm.checkpoint import key_table, load, save
from moshi_lm.config import LMConfig
from moshi_lm.delays import apply_delays, undo_delays
from moshi_lm.dialogue import DialogueFrame, DialogueRun, DialogueSession, run_dialogue
from moshi_lm.generate import LMGen
from moshi_lm.inner_monologue import AlignedText, TimedWord, align_words
from moshi_lm.loss import LMLoss, lm_loss, lm_loss_parts
from moshi_lm.model import LMModel, LMOutput, build_lm
from moshi_lm.text_tokenizer import TextTokenizer, load_tokenizer, train_tokenizer

__all__ = [
    "AlignedText", "DialogueFrame", "DialogueRun", "DialogueSession", "LMConfig", "LMGen", "LMLoss", "LMModel",
    "LMOutput", "TextTokenizer", "TimedWord", "align_words", "apply_delays", "build_lm", "key_table", "lm_loss",
    "lm_loss_parts", "load", "load_tokenizer", "run_dialogue", "save", "train_tokenizer", "undo_delays",
]
