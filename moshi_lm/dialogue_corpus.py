"""A synthetic two-speaker dialogue set with exact word timings, for training Moshi-style LMs.

    report = build_dialogues("dialogues/", count=40, seed=0)
    for d in read_dialogues("dialogues/"):
        d.channel("A").words             # TimedWord(word, start_s, end_s), seconds from 0

Speaker A is the model's stream (its text becomes the Inner Monologue), speaker B the user's.
Each dialogue alternates turns of 1..N sentences (the English sentence generator of the Mimi
training corpus, `mimi.training.corpus.generate_sentence`); a turn sometimes starts before
the previous one ends (overlap), and the listener sometimes says a short backchannel ("mhm",
"yeah", ...) in the middle of the other's turn. A speaker never overlaps themself.

Voices: training voices only (espeak-ng English accents with variants, flite kal/awb/rms), two
different ones per dialogue; `Voice` refuses a reserved evaluation voice (flite slt, any
festival voice) with `ReservedVoiceError`.

Timings are exact: every word is synthesised on its own, trimmed of silence and concatenated
with short pauses (longer after punctuation), so each word's start and end are known to the
sample. Prosody is word-by-word (choppy), which this data does not need to avoid.

Layout::

    OUT/build.json                  seed, generator version, voice inventory
    OUT/audio/<id>/A.wav, B.wav     24 kHz mono 16-bit PCM, same length (a whole number of 80 ms frames)
    OUT/meta/<id>.json              the dialogue's two channel records (written after its wavs)
    OUT/words.jsonl                 one line per (dialogue, speaker), in id order: see `ChannelRecord`

Give `OUT/audio` to `mimi tokens`: token names are then `<id>/A.wav` and `<id>/B.wav`, the
`audio` field of each channel record. Dialogue `i` is a pure function of `(seed, i)` and the
installed voices; files are written atomically, and a second call resumes or extends the set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch

from mimi.atomic import atomic_write_bytes
from mimi.audio import resample, write_audio
from mimi.errors import MimiError
from mimi.training.corpus import (  # the Mimi corpus' synthesis building blocks and text generator
    FLITE_VOICE_INFO,
    ENGLISH_ESPEAK_VOICES,
    TRAIN_FLITE_VOICES,
    ReservedVoiceError,
    espeak_inventory,
    flite_voices,
    SynthSpec,
    synthesize_raw,
    trim_silence,
    check_training_voice,
    generate_sentence,
)
from moshi_lm.inner_monologue import TimedWord

__all__ = ["BACKCHANNELS", "ChannelRecord", "DialogueConfig", "DialogueRecord", "DialogueReport", "DialogueSpec",
           "ReservedVoiceError", "Turn", "Voice", "build_dialogues", "dialogue_spec", "read_dialogues",
           "synthesize_dialogue", "tokenizer_texts"]

PathLike = Union[str, "os.PathLike[str]"]

SAMPLE_RATE = 24000
FRAME_SIZE = 1920  # samples per 80 ms frame
GENERATOR_VERSION = 1
SPEAKERS = ("A", "B")
ROLES = {"A": "model", "B": "user"}
WORDS_FILE = "words.jsonl"
BACKCHANNELS = ("yeah", "mhm", "okay", "right", "I see", "sure", "uh huh", "oh really?", "exactly", "no way",
                "got it", "hmm")


@dataclass(frozen=True)
class DialogueConfig:
    """How dialogues are shaped (all times in seconds)."""

    min_turns: int = 4
    max_turns: int = 6
    max_sentences_per_turn: int = 2
    overlap_prob: float = 0.2  # a turn starts before the previous one ends
    backchannel_prob: float = 0.35  # per turn: the listener says a backchannel during it
    gap_s: tuple[float, float] = (0.15, 0.9)  # silence between turns
    overlap_s: tuple[float, float] = (0.1, 0.6)
    word_pause_s: tuple[float, float] = (0.02, 0.09)
    phrase_pause_s: tuple[float, float] = (0.15, 0.35)  # after , ; : . ? !
    lead_s: tuple[float, float] = (0.2, 0.8)  # silence before the first turn
    tail_s: float = 0.5  # silence after the last word
    espeak_rate: tuple[int, int] = (170, 230)  # words per minute

    def __post_init__(self) -> None:
        if not 1 <= self.min_turns <= self.max_turns:
            raise MimiError(f"need 1 <= min_turns <= max_turns, got {self.min_turns}, {self.max_turns}")
        if self.max_sentences_per_turn < 1:
            raise MimiError("max_sentences_per_turn must be >= 1")
        for name in ("overlap_prob", "backchannel_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise MimiError(f"{name} must be in [0, 1]")
        for name in ("gap_s", "overlap_s", "word_pause_s", "phrase_pause_s", "lead_s", "espeak_rate"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise MimiError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")


@dataclass(frozen=True)
class Voice:
    """A training voice with its settings; a reserved evaluation voice is refused."""

    engine: str  # "espeak" | "flite"
    voice: str
    variant: Optional[str] = None
    rate: Optional[int] = None  # words per minute
    pitch: Optional[int] = None  # espeak 0..99; flite: F0 scale around 50
    amplitude: Optional[int] = None  # espeak only

    def __post_init__(self) -> None:
        check_training_voice(self.engine, self.voice)

    @property
    def name(self) -> str:
        return f"{self.engine}/{self.voice}" + (f"+{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Turn:
    """One utterance of a dialogue script."""

    speaker: str  # "A" | "B"
    words: tuple[str, ...]
    kind: str  # "turn" | "backchannel"
    offset: float  # turn: seconds after the previous turn's end (negative: overlap);
    # backchannel: where in the current turn it starts, as a fraction of that turn


@dataclass(frozen=True)
class DialogueSpec:
    id: str
    index: int
    seed: int
    voices: tuple[Voice, Voice]  # A, B
    turns: tuple[Turn, ...]

    def voice(self, speaker: str) -> Voice:
        return self.voices[SPEAKERS.index(speaker)]


@dataclass(frozen=True)
class ChannelRecord:
    """One speaker of one dialogue: a line of `words.jsonl`."""

    dialogue: str
    speaker: str
    role: str  # "model" (A) | "user" (B)
    audio: str  # path relative to OUT/audio
    voice: str  # "engine/voice[+variant]"
    samples: int
    words: tuple[TimedWord, ...]

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)

    def to_json(self) -> dict[str, Any]:
        return {"dialogue": self.dialogue, "speaker": self.speaker, "role": self.role, "audio": self.audio,
                "voice": self.voice, "samples": self.samples, "duration_s": round(self.samples / SAMPLE_RATE, 6),
                "text": self.text, "words": [[w.word, round(w.start_s, 6), round(w.end_s, 6)] for w in self.words]}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> "ChannelRecord":
        try:
            words = tuple(TimedWord(str(w), float(s), float(e)) for w, s, e in d["words"])
            return cls(str(d["dialogue"]), str(d["speaker"]), str(d["role"]), str(d["audio"]), str(d["voice"]),
                       int(d["samples"]), words)
        except (KeyError, TypeError, ValueError) as exc:
            raise MimiError(f"{where}: not a dialogue channel record ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class DialogueRecord:
    id: str
    channels: tuple[ChannelRecord, ...]  # A, B

    def channel(self, speaker: str) -> ChannelRecord:
        for c in self.channels:
            if c.speaker == speaker:
                return c
        raise MimiError(f"dialogue {self.id} has no speaker {speaker!r}")


@dataclass(frozen=True)
class DialogueReport:
    root: Path
    dialogues: int
    new_dialogues: int
    seconds: float  # audio per channel, summed over dialogues
    wall_seconds: float

    def summary(self) -> str:
        return (f"{self.dialogues} dialogues ({self.new_dialogues} new), {self.seconds / 60:.1f} min per channel, "
                f"{self.wall_seconds:.1f} s wall")


# -- voices and scripts -------------------------------------------------------------------------
def voice_inventory() -> dict[str, list[str]]:
    """The training voices installed: espeak-ng English accents and variants, flite kal/awb/rms."""
    languages, variants = espeak_inventory()
    flite = [v for v in flite_voices() if v in TRAIN_FLITE_VOICES]
    for v in flite:
        check_training_voice("flite", v)
    return {"espeak_languages": [v for v in languages if v in ENGLISH_ESPEAK_VOICES],
            "espeak_variants": variants, "flite_voices": flite}


def _rng(seed: int, index: int, what: str) -> random.Random:
    # random.Random seeded with a str hashes it with SHA-512: stable across runs and platforms
    return random.Random(f"moshi-dialogue/v{GENERATOR_VERSION}/{seed}/{index}/{what}")


def _pick_voice(rng: random.Random, inventory: dict[str, list[str]], config: DialogueConfig) -> Voice:
    if inventory["flite_voices"] and (not inventory["espeak_languages"] or rng.random() < 0.35):
        voice = rng.choice(inventory["flite_voices"])
        pitch = rng.randint(35, 65) if FLITE_VOICE_INFO[voice][2] is not None else None
        return Voice("flite", voice, None, rng.randint(*config.espeak_rate), pitch, None)
    if not inventory["espeak_languages"]:
        raise MimiError("no training voice installed: apt-get install espeak-ng flite")
    variants = inventory["espeak_variants"]
    variant = rng.choice(variants) if variants and rng.random() < 0.85 else None
    return Voice("espeak", rng.choice(inventory["espeak_languages"]), variant, rng.randint(*config.espeak_rate),
                 rng.randint(30, 70), rng.randint(90, 110))


def dialogue_spec(seed: int, index: int, inventory: dict[str, list[str]],
                  config: DialogueConfig = DialogueConfig()) -> DialogueSpec:
    """The script of dialogue `index`: two different voices, alternating turns, backchannels."""
    rng = _rng(seed, index, "script")
    a = _pick_voice(rng, inventory, config)
    b = _pick_voice(rng, inventory, config)
    for _ in range(20):
        if (b.engine, b.voice, b.variant) != (a.engine, a.voice, a.variant):
            break
        b = _pick_voice(rng, inventory, config)
    speaker = rng.choice(SPEAKERS)
    turns: list[Turn] = []
    for k in range(rng.randint(config.min_turns, config.max_turns)):
        words: list[str] = []
        for _ in range(rng.randint(1, config.max_sentences_per_turn)):
            words += generate_sentence(rng, "en-us").split()
        if k == 0:
            offset = 0.0
        elif rng.random() < config.overlap_prob:
            offset = -rng.uniform(*config.overlap_s)
        else:
            offset = rng.uniform(*config.gap_s)
        turns.append(Turn(speaker, tuple(words), "turn", offset))
        listener = SPEAKERS[1 - SPEAKERS.index(speaker)]
        if rng.random() < config.backchannel_prob:
            turns.append(Turn(listener, tuple(rng.choice(BACKCHANNELS).split()), "backchannel",
                              rng.uniform(0.3, 0.8)))
        speaker = listener
    return DialogueSpec(f"d{index:05d}", index, seed, (a, b), tuple(turns))


def tokenizer_texts(count: int, seed: int = 0) -> list[str]:
    """`count` sentences of the dialogues' text generator (plus every backchannel), to train a
    text tokenizer on (`moshi_lm.text_tokenizer.train_tokenizer`)."""
    rng = random.Random(f"moshi-dialogue/v{GENERATOR_VERSION}/{seed}/tokenizer-texts")
    return [generate_sentence(rng, "en-us") for _ in range(count)] + list(BACKCHANNELS)


# -- synthesis ----------------------------------------------------------------------------------
def _synth_word(voice: Voice, word: str, tmp: str, ident: str) -> np.ndarray:
    """24 kHz float32 samples of `word` alone, trimmed of silence (may be empty)."""
    check_training_voice(voice.engine, voice.voice)
    spec = SynthSpec("train", ident, 0, 0, voice.engine, voice.voice, voice.variant, "en-us", voice.rate, voice.pitch,
                  voice.amplitude, ())
    raw, rate = synthesize_raw(spec, word, tmp)
    x = resample(torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))[None], rate, SAMPLE_RATE)[0].numpy()
    if x.size == 0 or float(np.abs(x).max()) < 1e-4:
        return np.zeros(0, np.float32)
    return trim_silence(x, SAMPLE_RATE, keep_s=0.01, floor_db=-40.0).astype(np.float32)


def _utterance(voice: Voice, words: Iterable[str], rng: random.Random, config: DialogueConfig, tmp: str,
               cache: dict[tuple[str, str], np.ndarray], ident: str) -> tuple[np.ndarray, list[TimedWord]]:
    """Words one by one with pauses: (samples, words timed from the utterance's start)."""
    parts: list[np.ndarray] = []
    timed: list[TimedWord] = []
    pos = 0
    for word in words:
        key = (voice.name, word)
        if key not in cache:
            cache[key] = _synth_word(voice, word, tmp, ident)
        x = cache[key]
        if x.size == 0:
            continue
        if parts:  # the pause after the previous word
            pause_range = config.phrase_pause_s if timed[-1].word[-1] in ",;:.?!" else config.word_pause_s
            gap = int(round(rng.uniform(*pause_range) * SAMPLE_RATE))
            parts.append(np.zeros(gap, np.float32))
            pos += gap
        timed.append(TimedWord(word, pos / SAMPLE_RATE, (pos + x.size) / SAMPLE_RATE))
        parts.append(x)
        pos += x.size
    if not parts:
        return np.zeros(0, np.float32), []
    audio = np.concatenate(parts)
    audio *= rng.uniform(0.45, 0.85) / max(float(np.abs(audio).max()), 1e-6)
    return audio.astype(np.float32), timed


def synthesize_dialogue(spec: DialogueSpec, config: DialogueConfig = DialogueConfig()
                        ) -> tuple[dict[str, np.ndarray], dict[str, list[TimedWord]]]:
    """({speaker: 24 kHz float32 samples}, {speaker: words with absolute times}); both channels
    have the same length, a whole number of 80 ms frames."""
    for v in spec.voices:
        check_training_voice(v.engine, v.voice)
    rng = _rng(spec.seed, spec.index, "synth")
    placed: list[tuple[str, int, np.ndarray, list[TimedWord]]] = []
    busy_until = {s: 0 for s in SPEAKERS}  # sample where each channel's last speech ends
    current: tuple[int, int] | None = None  # (start, end) samples of the latest main turn
    guard = int(0.15 * SAMPLE_RATE)
    cache: dict[tuple[str, str], np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="moshi-dialogue-") as tmp:
        for k, turn in enumerate(spec.turns):
            audio, words = _utterance(spec.voice(turn.speaker), turn.words, rng, config, tmp, cache,
                                      f"{spec.id}.{k}")
            if audio.size == 0:
                continue
            if turn.kind == "backchannel":
                if current is None:
                    continue
                start = current[0] + int(turn.offset * (current[1] - current[0]))
            elif current is None:
                start = int(rng.uniform(*config.lead_s) * SAMPLE_RATE)
            else:
                start = current[1] + int(round(turn.offset * SAMPLE_RATE))
            start = max(0, start, busy_until[turn.speaker] + (guard if busy_until[turn.speaker] else 0))
            if turn.kind == "turn":
                current = (start, start + audio.size)
            busy_until[turn.speaker] = start + audio.size
            placed.append((turn.speaker, start, audio, words))
    total = max(busy_until.values()) + int(config.tail_s * SAMPLE_RATE)
    total = -(-total // FRAME_SIZE) * FRAME_SIZE
    channels = {s: np.zeros(total, np.float32) for s in SPEAKERS}
    timed: dict[str, list[TimedWord]] = {s: [] for s in SPEAKERS}
    for speaker, start, audio, words in placed:
        channels[speaker][start:start + audio.size] += audio
        offset = start / SAMPLE_RATE
        timed[speaker] += [TimedWord(w.word, offset + w.start_s, offset + w.end_s) for w in words]
    for s in SPEAKERS:
        timed[s].sort(key=lambda w: w.start_s)
    return channels, timed


# -- building -----------------------------------------------------------------------------------
def _make_dialogue(task: tuple[DialogueSpec, DialogueConfig, str]) -> float:
    """Worker: synthesise one dialogue; write its wavs, then its meta record (atomically)."""
    spec, config, root = task
    channels, timed = synthesize_dialogue(spec, config)
    out = Path(root)
    records = []
    for speaker in SPEAKERS:
        rel = f"{spec.id}/{speaker}.wav"
        path = out / "audio" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_audio(path, torch.from_numpy(channels[speaker])[None], SAMPLE_RATE, subtype="PCM_16")
        records.append(ChannelRecord(spec.id, speaker, ROLES[speaker], rel, spec.voice(speaker).name,
                                     int(channels[speaker].size), tuple(timed[speaker])).to_json())
    atomic_write_bytes(out / "meta" / f"{spec.id}.json", (json.dumps(records, ensure_ascii=False) + "\n").encode())
    return channels["A"].size / SAMPLE_RATE


def _check_build(root: Path, info: dict[str, Any]) -> None:
    """Write `build.json`, or check that the folder was built with the same settings."""
    path = root / "build.json"
    info = json.loads(json.dumps(info))  # tuples -> lists, as read back
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MimiError(f"{path}: unreadable ({exc}); delete the folder to rebuild it") from None
        changed = [k for k in info if old.get(k) != info[k]] if isinstance(old, dict) else ["everything"]
        if changed:
            raise MimiError(f"{root} was built with a different {', '.join(changed)}; use another folder "
                            "or the same settings")
        return
    atomic_write_bytes(path, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())


def build_dialogues(out_dir: PathLike, count: int, *, seed: int = 0, config: DialogueConfig = DialogueConfig(),
                    workers: int = 1, progress: bool = False) -> DialogueReport:
    """Synthesise dialogues 0 .. count-1 into `out_dir` (those already there are kept), then
    write `words.jsonl`. Deterministic given `seed` and the installed voices, whatever `workers`.

    Raises:
        MimiError: espeak-ng / flite missing, bad arguments, a folder built with other settings.
        ReservedVoiceError: a reserved evaluation voice was selected (never by this code).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise MimiError(f"count must be a positive integer, got {count!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise MimiError(f"workers must be a positive integer, got {workers!r}")
    started = time.perf_counter()
    root = Path(os.fspath(out_dir))
    try:
        (root / "meta").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MimiError(f"{root}: cannot create folder: {exc.strerror or exc}") from None
    inventory = voice_inventory()
    _check_build(root, {"kind": "moshi-dialogues", "seed": seed, "generator_version": GENERATOR_VERSION,
                        "sample_rate": SAMPLE_RATE, "config": dataclasses.asdict(config), "inventory": inventory})
    todo = [dialogue_spec(seed, i, inventory, config) for i in range(count)
            if not (root / "meta" / f"d{i:05d}.json").is_file()]
    from tqdm import tqdm

    tasks = [(spec, config, str(root)) for spec in todo]
    with tqdm(total=len(tasks), unit="dialogue", disable=not progress, leave=False) as bar:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                _make_dialogue(task)
                bar.update(1)
        else:
            import multiprocessing as mp

            with mp.get_context("forkserver").Pool(workers) as pool:
                for _ in pool.imap(_make_dialogue, tasks):
                    bar.update(1)
    lines = []
    for i in range(count):
        lines += json.loads((root / "meta" / f"d{i:05d}.json").read_text(encoding="utf-8"))
    atomic_write_bytes(root / WORDS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode())
    seconds = sum(r["samples"] for r in lines if r["speaker"] == "A") / SAMPLE_RATE
    return DialogueReport(root, count, len(todo), seconds, time.perf_counter() - started)


def read_dialogues(root: PathLike) -> list[DialogueRecord]:
    """The dialogues of a folder made by `build_dialogues`, in id order."""
    path = Path(os.fspath(root)) / WORDS_FILE
    if not path.is_file():
        raise MimiError(f"{Path(os.fspath(root))}: no {WORDS_FILE} (not a folder made by build_dialogues)")
    by_id: dict[str, list[ChannelRecord]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MimiError(f"cannot read {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise MimiError(f"{path}: line {n} is not JSON") from None
        if not isinstance(obj, dict):
            raise MimiError(f"{path}: line {n} is not a JSON object")
        rec = ChannelRecord.from_json(obj, f"{path}: line {n}")
        by_id.setdefault(rec.dialogue, []).append(rec)
    return [DialogueRecord(k, tuple(sorted(v, key=lambda c: c.speaker))) for k, v in sorted(by_id.items())]
