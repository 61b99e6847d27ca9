"""A reproducible synthetic speech corpus for training and evaluating Mimi, built offline.

Training audio comes from two formant/diphone/statistical synthesisers that ship with Debian:

* ``espeak-ng``: many languages and accents, each with a random voice variant (``+m3``,
  ``+f2``, ``+croak``, ``+whisper``, ...), speaking rate (120-260 words/min), pitch (20-80) and
  amplitude;
* ``flite``: the English voices ``kal``, ``awb`` and ``rms`` only, with random rate and pitch
  (pitch where the voice honours it: ``kal`` and ``awb``).

Evaluation audio comes ONLY from voices that never enter training (:data:`RESERVED_FLITE_VOICES`
and every festival voice): flite ``slt`` and, when ``festival`` is installed, its voices
(``ked_diphone``, ``cmu_us_slt_arctic_hts``, ...). ``festival``'s ``kal_diphone`` is reserved
(never trained on) but left out of the evaluation set too: it is the same speaker and diphone
database as flite's ``kal``, which *is* in training, so it would not measure unseen voices.
:func:`check_training_voice` raises whenever a reserved voice is selected for training.

Texts are generated deterministically from an embedded vocabulary (a few hundred English
words, names, places, numbers, dates, clock times, money, questions and exclamations, plus
small word lists read by 16 other espeak-ng languages). Evaluation sentences come from their own
templates, and every one holds a word from :data:`EVAL_ONLY_WORDS`, which no training text
can contain, so no evaluation sentence can appear in training.

Layout (``SPLIT`` is ``train`` or ``eval``)::

    OUT_DIR/SPLIT/<engine>/<voice>/<id>.wav   24 kHz mono 16-bit PCM
    OUT_DIR/SPLIT/manifest.jsonl              one JSON object per utterance, in id order
    OUT_DIR/SPLIT/build.json                  seed, generator version, voice inventory

Utterance ``i`` is a pure function of ``(seed, i)`` and the installed voice inventory: the
same seed gives the same ids, texts, voices and audio whatever ``workers``. A build stops
after the first utterance that brings the total to ``hours`` (so the result is a prefix of
the same infinite sequence); a second call with the same seed and more hours resumes it
(ids already in the manifest are skipped; every wav file is written atomically *before* its
manifest line is appended, so an interrupted build resumes cleanly).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch

from mimi.audio import resample, write_audio
from mimi.errors import MimiError

__all__ = [
    "CorpusReport",
    "ReservedVoiceError",
    "build_corpus",
    "build_eval_set",
    "check_training_voice",
    "generate_text",
    "RESERVED_FLITE_VOICES",
    "TRAIN_FLITE_VOICES",
    "EVAL_ONLY_WORDS",
    "SAMPLE_RATE",
    # the synthesis building blocks, shared with moshi_lm.dialogue_corpus
    "FLITE_VOICE_INFO",
    "SynthSpec",
    "espeak_inventory",
    "flite_voices",
    "synthesize_raw",
    "trim_silence",
]

PathLike = Union[str, "os.PathLike[str]"]

SAMPLE_RATE = 24000
"""Sample rate of every corpus file."""

GENERATOR_VERSION = 1
"""Bump when a change alters which utterances a seed produces (recorded in build.json)."""

MIN_SECONDS = 2.0
MAX_SECONDS = 12.0

# --------------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------------

TRAIN_FLITE_VOICES: tuple[str, ...] = ("kal", "awb", "rms")
"""flite voices used for training."""

RESERVED_FLITE_VOICES: frozenset[str] = frozenset({"slt"})
"""flite voices kept for evaluation only. Every festival voice is reserved as well."""

EVAL_FLITE_VOICES: tuple[str, ...] = ("slt",)
EVAL_EXCLUDED_FESTIVAL_VOICES: dict[str, str] = {
    "kal_diphone": "same speaker and diphone database as flite kal, which is in training",
}

# flite voice -> (language label, nominal words/min at duration_stretch 1, mean F0 in Hz or None
# when the voice ignores int_f0_target_mean). Measured on this corpus' sentences.
FLITE_VOICE_INFO: dict[str, tuple[str, float, Optional[float]]] = {
    "kal": ("en-us", 190.0, 95.0),
    "awb": ("en-gb-scotland", 170.0, 125.0),
    "rms": ("en-us", 145.0, None),
    "slt": ("en-us", 170.0, 165.0),
}

ENGLISH_ESPEAK_VOICES: tuple[str, ...] = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)
"""espeak-ng English accents (they read the English sentence generator)."""

# espeak-ng language -> key of its word list in _FOREIGN_WORDS
OTHER_ESPEAK_VOICES: dict[str, str] = {
    "de": "de", "fr-fr": "fr", "fr-be": "fr", "es": "es", "es-419": "es", "it": "it", "pt": "pt", "pt-br": "pt",
    "nl": "nl", "sv": "sv", "pl": "pl", "fi": "fi", "tr": "tr", "id": "id", "ru": "ru", "el": "el",
}
"""Other espeak-ng languages, each reading random sentences of its own word list."""

_ENGLISH_ESPEAK_SHARE = 0.55
_ESPEAK_SHARE = 0.65
_NO_VARIANT_SHARE = 0.12

# espeak-ng variants left out: novelty robots/effects rather than voices, a test voice, and names
# with spaces (not addressable as "+name").
_EXCLUDED_VARIANT_PREFIXES = ("robosoft", "ricishaymax", "unirobot", "anikarobot", "demonic", "announcer", "fast")


class ReservedVoiceError(MimiError):
    """A voice reserved for evaluation was selected for training data."""


def is_reserved_voice(engine: str, voice: str) -> bool:
    """True for the evaluation-only voices: every festival voice and flite :data:`RESERVED_FLITE_VOICES`."""
    return engine == "festival" or (engine == "flite" and voice in RESERVED_FLITE_VOICES)


def check_training_voice(engine: str, voice: str) -> None:
    """Raise :class:`ReservedVoiceError` if ``engine``/``voice`` may not be used for training.

    Training may only use espeak-ng voices and flite :data:`TRAIN_FLITE_VOICES`; flite ``slt``
    and all festival voices are reserved for evaluation.
    """
    if is_reserved_voice(engine, voice) or engine not in ("espeak", "flite") or (
            engine == "flite" and voice not in TRAIN_FLITE_VOICES):
        raise ReservedVoiceError(f"voice {engine}/{voice} is reserved for evaluation (or unknown) and must "
                                 f"never be used for training data")


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise MimiError(f"{binary} not found: apt-get install {package}")
    return path


def _run(cmd: Sequence[str], what: str) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise MimiError(f"{cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise MimiError(f"{what}: timed out") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise MimiError(f"{what} failed (exit {proc.returncode}): {err[-1] if err else 'no message'}")
    return proc.stdout


def espeak_inventory() -> tuple[list[str], list[str]]:
    """(available languages among ours, usable variants), both sorted."""
    _require("espeak-ng", "espeak-ng")
    langs = set()
    for line in _run(["espeak-ng", "--voices"], "espeak-ng --voices").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            langs.add(parts[1])
    variants = set()
    for line in _run(["espeak-ng", "--voices=variant"], "espeak-ng --voices=variant").splitlines()[1:]:
        m = re.search(r"!v/(\S+)\s*(?:\(|$)", line)
        if m is None:  # a file name with a space: not addressable as +name
            continue
        name = m.group(1)
        if not name.lower().startswith(_EXCLUDED_VARIANT_PREFIXES):
            variants.add(name)
    ours = [v for v in ENGLISH_ESPEAK_VOICES + tuple(OTHER_ESPEAK_VOICES) if v in langs]
    if not any(v in langs for v in ENGLISH_ESPEAK_VOICES):
        raise MimiError("espeak-ng has no English voice (en-us, en-gb, ...): reinstall espeak-ng-data")
    return sorted(ours), sorted(variants, key=lambda s: (s.lower(), s))


def flite_voices() -> list[str]:
    """The voices the installed flite lists, sorted."""
    _require("flite", "flite")
    out = _run(["flite", "-lv"], "flite -lv")
    return sorted(out.split(":", 1)[-1].split())


def _festival_voices() -> list[str]:
    """Installed festival voices (empty when festival/text2wave is not installed)."""
    if shutil.which("text2wave") is None:
        return []
    found = set()
    for root in ("/usr/share/festival/voices", "/usr/lib/festival/voices", "/usr/local/share/festival/voices"):
        base = Path(root)
        if base.is_dir():
            for lang in base.iterdir():
                if lang.is_dir():
                    found.update(v.name for v in lang.iterdir() if v.is_dir())
    return sorted(found)


# --------------------------------------------------------------------------------------------
# Text generation
# --------------------------------------------------------------------------------------------

_NAMES = (
    "Anna", "Ben", "Carlos", "Diana", "Elena", "Farid", "Grace", "Hiro", "Ivan", "Julia", "Kofi", "Laura",
    "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tara", "Umar", "Vera", "William", "Xenia",
    "Yusuf", "Zoe", "Mr. Patel", "Dr. Nguyen", "Mrs. Okafor", "Professor Lindqvist", "Aunt Margaret",
    "Uncle Tom", "Captain Reyes", "Ms. Kowalski", "Lucas", "Mei", "Ahmed", "Sofia", "Daniel", "Chloe",
)
_NOUNS = (
    "apple", "bicycle", "blanket", "book", "bottle", "bridge", "camera", "candle", "car", "chair", "clock",
    "coat", "computer", "cookie", "cup", "desk", "door", "dragon", "drawer", "engine", "envelope", "feather",
    "flower", "garden", "guitar", "hammer", "helmet", "island", "jacket", "kettle", "key", "ladder", "lamp",
    "letter", "map", "mirror", "motor", "mountain", "necklace", "notebook", "orange", "painting", "parcel",
    "pencil", "piano", "picture", "pillow", "planet", "plate", "pocket", "puzzle", "radio", "record", "ribbon",
    "river", "rocket", "sandwich", "scarf", "shoe", "signal", "song", "spoon", "stone", "suitcase", "table",
    "ticket", "tower", "towel", "tractor", "tunnel", "umbrella", "violin", "wagon", "wallet", "window",
    "basket", "button", "cabinet", "carpet", "drum", "balloon", "banana", "tomato", "robot", "rabbit",
)
_ADJECTIVES = (
    "small", "large", "bright", "dark", "heavy", "light", "quiet", "loud", "old", "new", "strange", "simple",
    "broken", "shiny", "dusty", "warm", "cold", "wet", "dry", "soft", "hard", "green", "blue", "red", "yellow",
    "purple", "golden", "silver", "wooden", "tiny", "enormous", "famous", "secret", "friendly", "careful",
    "curious", "lucky", "busy", "empty", "crowded", "expensive", "cheap", "gentle", "noisy", "ancient", "modern",
    "fragile", "sticky", "smooth", "rusty",
)
_VERBS_PAST = (
    "found", "lost", "painted", "repaired", "carried", "opened", "closed", "cleaned", "borrowed", "returned",
    "bought", "sold", "watched", "noticed", "dropped", "lifted", "pushed", "pulled", "hid", "discovered",
    "visited", "left", "reached", "packed", "measured", "counted", "described", "forgot", "remembered", "built",
)
_VERBS = (
    "find", "paint", "repair", "carry", "open", "close", "clean", "borrow", "return", "buy", "sell", "watch",
    "move", "lift", "push", "pull", "hide", "check", "visit", "pack", "measure", "count", "describe", "fix",
    "wrap", "deliver", "replace", "test", "share", "keep",
)
_ADVERBS = (
    "quickly", "slowly", "carefully", "suddenly", "quietly", "happily", "barely", "certainly", "probably",
    "almost", "really", "gently", "eagerly", "finally", "nearly", "clearly", "rarely", "honestly", "badly",
    "proudly",
)
_PLACES = (
    "the market", "the station", "the library", "the harbor", "the school", "the bakery", "the museum",
    "the park", "the hospital", "the airport", "the office", "the kitchen", "the garage", "the beach",
    "the village", "the hotel", "the farm", "the theater", "the bank", "the post office", "the stadium",
    "the corner shop", "the old church", "the city hall", "the garden center",
)
_CITIES = (
    "Paris", "Tokyo", "Nairobi", "Lima", "Oslo", "Cairo", "Toronto", "Sydney", "Mumbai", "Berlin", "Dublin",
    "Seoul", "Chicago", "Lisbon", "Vienna", "Boston", "Madrid", "Athens", "Denver", "Glasgow",
)
_TIMES = (
    "yesterday", "today", "this morning", "last night", "last week", "on Sunday", "every day", "before lunch",
    "after dinner", "at midnight", "in the afternoon", "this evening", "a moment ago", "last summer",
    "next year", "tomorrow",
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_RELATIVES = ("sister", "brother", "cousin", "neighbor", "grandmother", "grandfather", "uncle", "aunt",
              "colleague", "teacher")
_ROOMS = ("attic", "basement", "hallway", "bedroom", "kitchen", "garage", "living room", "office")
_PERIODS = ("week", "month", "year", "season", "spring", "winter")
_SMALL_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "twenty", "a few", "several", "dozens of")

_TRAIN_TEMPLATES = (
    "{name} {verb_past} the {adj} {noun} {time}.",
    "Have you seen the {adj} {noun} near {place}?",
    "We need {num} {nouns} before {clock}, or the {noun} will be late.",
    "On {date}, {name} moved to {city} with {num} {adj} {nouns}.",
    "What a {adj} {noun} that was!",
    "The {noun} costs {money}, which is {adv} more than last {period}.",
    "Please {verb} the {noun} and call {name} at {phone}.",
    "Why did {name} {verb} the {noun} {time}?",
    "In {year}, about {big} people {verb_past} {place}.",
    "{name} and {name2} {adv} {verb_past} a {adj} {noun}.",
    "It is {clock} and the {noun} is still {adj}.",
    "Sales rose by {percent} in {month}, according to {name}.",
    "Don't forget the {noun}!",
    "If the {noun} is {adj}, we will {verb} it {time}.",
    "How many {nouns} did you {verb} {time}?",
    "The train to {city} leaves from platform {digit} at {clock}.",
    "{name} said that the {noun} was too {adj} to {verb}.",
    "Wow, {num} {adj} {nouns} at {place}!",
    "Meet me at {place} on {weekday}, around {clock}.",
    "Is it true that {name} {verb_past} {num} {nouns}?",
    "My {relative} keeps a {adj} {noun} in the {room}.",
    "The temperature dropped to {temp} degrees {time}.",
    "Turn left after the {adj} {noun}, then walk {num} hundred meters.",
    "Honestly, I think the {noun} is {adv} {adj}.",
    "Room {roomnum} is on the {ordinal} floor.",
    "Could you {verb} the {noun} for {name}, please?",
    "Order number {big} was shipped on {date}.",
    "Nobody expected the {adj} {noun} to {verb} so {adv}.",
    "Listen! The {noun} at {place} is {adj} again.",
    "{name} {verb_past} {place} at {clock}, just before the {noun} arrived.",
    "The score was {digit} to {digit2} after {num} minutes.",
    "Oh no, the {noun} is {adj}!",
)

EVAL_ONLY_WORDS: tuple[str, ...] = (
    "lighthouse", "accordion", "porcupine", "harpsichord", "walrus", "chandelier", "saxophone", "hedgehog",
    "gondola", "kaleidoscope", "tapestry", "windmill", "labyrinth", "marionette", "observatory", "pelican",
    "sundial", "xylophone", "zeppelin", "armadillo", "carousel", "trombone", "flamingo", "greenhouse",
)
"""Nouns that appear in every evaluation sentence and never in training texts."""

_EVAL_TEMPLATES = (
    "According to the guide, the {rare} opens at {clock} every {weekday}.",
    "Would {name} really trade a {rare} for {num} {nouns}?",
    "What an unusual {rare}, said {name}, smiling at the {noun}!",
    "Near the old {rare}, {num} {adj} {nouns} waited in silence.",
    "The museum bought a {adj} {rare} in {year} for {money}.",
    "Every {rare} in {city} was counted twice by {name}.",
    "Is the {rare} still behind the {noun}, or did someone move it?",
    "Her notes mention a {rare} and {num} {nouns}, nothing more.",
    "By {clock}, the {rare} had travelled {big} kilometers.",
    "Keep the {rare} away from the {adj} {noun}!",
    "Since {date}, nobody has heard the {rare} at {place}.",
    "Tell me, how heavy is a {adj} {rare}?",
)

_FOREIGN_WORDS: dict[str, tuple[str, ...]] = {
    "de": ("Haus", "Wasser", "Straße", "Kinder", "Morgen", "Abend", "heute", "gestern", "schnell", "langsam",
           "schön", "groß", "klein", "Stadt", "Freund", "Arbeit", "Zeit", "Jahr", "Woche", "Buch", "Fenster",
           "Tisch", "Garten", "Himmel", "Sonne", "Regen", "Zug", "Bahnhof", "trinken", "essen", "gehen",
           "kommen", "sehen", "sprechen", "lesen", "schreiben", "wir", "ihr", "sie", "und", "aber", "nicht",
           "sehr", "immer", "vielleicht", "warum", "wo", "Musik", "Brot", "Milch"),
    "fr": ("maison", "eau", "rue", "enfants", "matin", "soir", "aujourd'hui", "hier", "vite", "lentement",
           "beau", "grand", "petit", "ville", "ami", "travail", "temps", "année", "semaine", "livre", "fenêtre",
           "table", "jardin", "ciel", "soleil", "pluie", "train", "gare", "boire", "manger", "aller", "venir",
           "voir", "parler", "lire", "écrire", "nous", "vous", "ils", "et", "mais", "pas", "très", "toujours",
           "peut-être", "pourquoi", "où", "musique", "pain", "lait"),
    "es": ("casa", "agua", "calle", "niños", "mañana", "noche", "hoy", "ayer", "rápido", "despacio", "bonito",
           "grande", "pequeño", "ciudad", "amigo", "trabajo", "tiempo", "año", "semana", "libro", "ventana",
           "mesa", "jardín", "cielo", "sol", "lluvia", "tren", "estación", "beber", "comer", "ir", "venir",
           "ver", "hablar", "leer", "escribir", "nosotros", "ellos", "y", "pero", "no", "muy", "siempre",
           "quizás", "por qué", "dónde", "música", "pan", "leche"),
    "it": ("casa", "acqua", "strada", "bambini", "mattina", "sera", "oggi", "ieri", "veloce", "piano", "bello",
           "grande", "piccolo", "città", "amico", "lavoro", "tempo", "anno", "settimana", "libro", "finestra",
           "tavolo", "giardino", "cielo", "sole", "pioggia", "treno", "stazione", "bere", "mangiare", "andare",
           "venire", "vedere", "parlare", "leggere", "scrivere", "noi", "voi", "loro", "e", "ma", "non",
           "molto", "sempre", "forse", "perché", "dove", "musica", "pane", "latte"),
    "pt": ("casa", "água", "rua", "crianças", "manhã", "noite", "hoje", "ontem", "rápido", "devagar", "bonito",
           "grande", "pequeno", "cidade", "amigo", "trabalho", "tempo", "ano", "semana", "livro", "janela",
           "mesa", "jardim", "céu", "sol", "chuva", "trem", "estação", "beber", "comer", "ir", "vir", "ver",
           "falar", "ler", "escrever", "nós", "eles", "e", "mas", "não", "muito", "sempre", "talvez", "onde",
           "música", "pão", "leite"),
    "nl": ("huis", "water", "straat", "kinderen", "ochtend", "avond", "vandaag", "gisteren", "snel", "langzaam",
           "mooi", "groot", "klein", "stad", "vriend", "werk", "tijd", "jaar", "week", "boek", "raam", "tafel",
           "tuin", "hemel", "zon", "regen", "trein", "station", "drinken", "eten", "gaan", "komen", "zien",
           "spreken", "lezen", "schrijven", "wij", "jullie", "zij", "en", "maar", "niet", "heel", "altijd",
           "misschien", "waarom", "waar", "muziek", "brood", "melk"),
    "sv": ("hus", "vatten", "gata", "barn", "morgon", "kväll", "idag", "igår", "snabbt", "långsamt", "vacker",
           "stor", "liten", "stad", "vän", "arbete", "tid", "år", "vecka", "bok", "fönster", "bord",
           "trädgård", "himmel", "sol", "regn", "tåg", "station", "dricka", "äta", "gå", "komma", "se", "tala",
           "läsa", "skriva", "vi", "ni", "de", "och", "men", "inte", "mycket", "alltid", "kanske", "varför",
           "var", "musik", "bröd", "mjölk"),
    "pl": ("dom", "woda", "ulica", "dzieci", "rano", "wieczór", "dzisiaj", "wczoraj", "szybko", "powoli",
           "piękny", "duży", "mały", "miasto", "przyjaciel", "praca", "czas", "rok", "tydzień", "książka", "okno",
           "stół", "ogród", "niebo", "słońce", "deszcz", "pociąg", "dworzec", "pić", "jeść", "iść", "widzieć",
           "mówić", "czytać", "pisać", "my", "wy", "oni", "i", "ale", "nie", "bardzo", "zawsze", "może",
           "dlaczego", "gdzie", "muzyka", "chleb", "mleko"),
    "fi": ("talo", "vesi", "katu", "lapset", "aamu", "ilta", "tänään", "eilen", "nopeasti", "hitaasti", "kaunis",
           "iso", "pieni", "kaupunki", "ystävä", "työ", "aika", "vuosi", "viikko", "kirja", "ikkuna", "pöytä",
           "puutarha", "taivas", "aurinko", "sade", "juna", "asema", "juoda", "syödä", "mennä", "tulla", "nähdä",
           "puhua", "lukea", "kirjoittaa", "me", "te", "he", "ja", "mutta", "ei", "hyvin", "aina", "ehkä",
           "miksi", "missä", "musiikki", "leipä", "maito"),
    "tr": ("ev", "su", "sokak", "çocuklar", "sabah", "akşam", "bugün", "dün", "hızlı", "yavaş", "güzel",
           "büyük", "küçük", "şehir", "arkadaş", "iş", "zaman", "yıl", "hafta", "kitap", "pencere", "masa",
           "bahçe", "gökyüzü", "güneş", "yağmur", "tren", "istasyon", "içmek", "yemek", "gitmek", "gelmek",
           "görmek", "konuşmak", "okumak", "yazmak", "biz", "siz", "onlar", "ve", "ama", "değil", "çok",
           "belki", "neden", "nerede", "müzik", "ekmek", "süt"),
    "id": ("rumah", "air", "jalan", "anak-anak", "pagi", "malam", "hari ini", "kemarin", "cepat", "pelan",
           "indah", "besar", "kecil", "kota", "teman", "kerja", "waktu", "tahun", "minggu", "buku", "jendela",
           "meja", "kebun", "langit", "matahari", "hujan", "kereta", "stasiun", "minum", "makan", "pergi",
           "datang", "melihat", "berbicara", "membaca", "menulis", "kami", "kalian", "mereka", "dan", "tetapi",
           "tidak", "sangat", "selalu", "mungkin", "mengapa", "di mana", "musik", "roti", "susu"),
    "ru": ("дом", "вода", "улица", "дети", "утро", "вечер", "сегодня", "вчера", "быстро", "медленно",
           "красивый", "большой", "маленький", "город", "друг", "работа", "время", "год", "неделя", "книга",
           "окно", "стол", "сад", "небо", "солнце", "дождь", "поезд", "вокзал", "пить", "есть", "идти", "видеть",
           "говорить", "читать", "писать", "мы", "вы", "они", "и", "но", "не", "очень", "всегда", "может быть",
           "почему", "где", "музыка", "хлеб", "молоко"),
    "el": ("σπίτι", "νερό", "δρόμος", "παιδιά", "πρωί", "βράδυ", "σήμερα", "χθες", "γρήγορα", "αργά", "όμορφος",
           "μεγάλος", "μικρός", "πόλη", "φίλος", "δουλειά", "χρόνος", "εβδομάδα", "βιβλίο", "παράθυρο",
           "τραπέζι", "κήπος", "ουρανός", "ήλιος", "βροχή", "τρένο", "σταθμός", "πίνω", "τρώω", "πηγαίνω",
           "έρχομαι", "βλέπω", "μιλάω", "διαβάζω", "γράφω", "εμείς", "εσείς", "αυτοί", "και", "αλλά", "δεν",
           "πολύ", "πάντα", "ίσως", "γιατί", "πού", "μουσική", "ψωμί", "γάλα"),
}

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _slot(rng: random.Random, name: str) -> str:
    """A random filler for template slot ``name``."""
    if name in ("name", "name2"):
        return rng.choice(_NAMES)
    if name == "noun":
        return rng.choice(_NOUNS)
    if name == "nouns":
        return rng.choice(_NOUNS) + "s"
    if name == "adj":
        return rng.choice(_ADJECTIVES)
    if name == "verb_past":
        return rng.choice(_VERBS_PAST)
    if name == "verb":
        return rng.choice(_VERBS)
    if name == "adv":
        return rng.choice(_ADVERBS)
    if name == "place":
        return rng.choice(_PLACES)
    if name == "city":
        return rng.choice(_CITIES)
    if name == "time":
        return rng.choice(_TIMES)
    if name == "weekday":
        return rng.choice(_WEEKDAYS)
    if name == "month":
        return rng.choice(_MONTHS)
    if name == "relative":
        return rng.choice(_RELATIVES)
    if name == "room":
        return rng.choice(_ROOMS)
    if name == "period":
        return rng.choice(_PERIODS)
    if name == "ordinal":
        return rng.choice(_ORDINALS)
    if name == "rare":
        return rng.choice(EVAL_ONLY_WORDS)
    if name == "num":
        return rng.choice(_SMALL_WORDS) if rng.random() < 0.5 else str(rng.randint(2, 99))
    if name in ("digit", "digit2"):
        return str(rng.randint(0, 9))
    if name == "big":
        return str(rng.choice((rng.randint(100, 999), rng.randint(1000, 99999), rng.randint(100000, 9999999))))
    if name == "year":
        return str(rng.randint(1850, 2030))
    if name == "date":
        day = rng.randint(1, 28)
        month = rng.choice(_MONTHS)
        style = rng.randint(0, 2)
        if style == 0:
            return f"{month} {day}{_ordinal_suffix(day)}, {rng.randint(1900, 2030)}"
        if style == 1:
            return f"the {day}{_ordinal_suffix(day)} of {month}"
        return f"{rng.choice(_WEEKDAYS)}, {month} {day}"
    if name == "clock":
        hour, minute = rng.randint(1, 12), rng.choice((0, 5, 10, 15, 20, 30, 40, 45, 50, 55))
        if minute == 0:
            return f"{hour} o'clock" if rng.random() < 0.5 else f"{hour} {rng.choice(('a.m.', 'p.m.'))}"
        return f"{hour}:{minute:02d}"
    if name == "money":
        if rng.random() < 0.5:
            return f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
        return f"{rng.randint(2, 500)} {rng.choice(('dollars', 'euros', 'pounds'))}"
    if name == "percent":
        return f"{rng.randint(1, 95)} percent" if rng.random() < 0.5 else f"{rng.randint(1, 60)}.{rng.randint(1, 9)}%"
    if name == "phone":
        return f"{rng.randint(200, 999)} {rng.randint(1000, 9999)}"
    if name == "temp":
        return str(rng.randint(-20, 40))
    if name == "roomnum":
        return str(rng.randint(100, 999))
    raise AssertionError(f"unknown slot {name}")


_SLOT_RE = re.compile(r"\{(\w+)\}")


def _english_sentence(rng: random.Random, templates: Sequence[str]) -> str:
    template = rng.choice(templates)
    text = _SLOT_RE.sub(lambda m: _slot(rng, m.group(1)), template)
    return text[0].upper() + text[1:]


def _foreign_sentence(rng: random.Random, words: Sequence[str]) -> str:
    n = rng.randint(4, 11)
    parts = [rng.choice(words) for _ in range(n)]
    if rng.random() < 0.3:
        parts.insert(rng.randint(1, n), str(rng.choice((rng.randint(2, 20), rng.randint(21, 999),
                                                         rng.randint(1900, 2030)))))
    if n >= 6 and rng.random() < 0.5:
        k = rng.randint(2, len(parts) - 2)
        parts[k] = parts[k] + ","
    text = " ".join(parts)
    return text[0].upper() + text[1:] + rng.choice((".", ".", ".", "?", "!"))


def generate_sentence(rng: random.Random, language: str, split: str = "train") -> str:
    """One random sentence for ``language`` (an espeak-ng language code or "en-*").

    ``split="eval"`` uses the evaluation templates (English only), whose sentences all hold a
    word of :data:`EVAL_ONLY_WORDS`.
    """
    if split == "eval":
        return _english_sentence(rng, _EVAL_TEMPLATES)
    if language in OTHER_ESPEAK_VOICES:
        return _foreign_sentence(rng, _FOREIGN_WORDS[OTHER_ESPEAK_VOICES[language]])
    return _english_sentence(rng, _TRAIN_TEMPLATES)


def generate_sentences(rng: random.Random, language: str, words: int, split: str = "train") -> list[str]:
    """Sentences for ``language`` until they hold at least ``words`` words in all."""
    sentences: list[str] = []
    count = 0
    while count < max(1, words):
        s = generate_sentence(rng, language, split)
        sentences.append(s)
        count += len(s.split())
    return sentences


def generate_text(rng: random.Random, language: str, words: int, split: str = "train") -> str:
    """:func:`generate_sentences` joined with spaces."""
    return " ".join(generate_sentences(rng, language, words, split))


# --------------------------------------------------------------------------------------------
# Utterance specs (a pure function of the seed, the index and the voice inventory)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthSpec:
    split: str
    id: str
    index: int
    seed: int
    engine: str
    voice: str
    variant: Optional[str]
    language: str
    rate: Optional[int]
    pitch: Optional[int]
    amplitude: Optional[int]
    sentences: tuple[str, ...]

    @property
    def rel_path(self) -> str:
        return f"{self.engine}/{self.voice}/{self.id}.wav"


def _rng(split: str, seed: int, index: int, attempt: int = 0) -> random.Random:
    # random.Random seeded with a str hashes it with SHA-512: stable across runs and platforms.
    return random.Random(f"mimi-corpus/v{GENERATOR_VERSION}/{split}/{seed}/{index}/{attempt}")


def _train_spec(seed: int, index: int, inventory: dict[str, Any]) -> SynthSpec:
    rng = _rng("train", seed, index)
    target_s = rng.uniform(MIN_SECONDS + 0.5, MAX_SECONDS - 1.5)
    rate = rng.randint(120, 260)
    pitch = rng.randint(20, 80)
    if rng.random() < _ESPEAK_SHARE:
        engine = "espeak"
        english = [v for v in inventory["espeak_languages"] if v in ENGLISH_ESPEAK_VOICES]
        others = [v for v in inventory["espeak_languages"] if v not in ENGLISH_ESPEAK_VOICES]
        pool = english if (not others or rng.random() < _ENGLISH_ESPEAK_SHARE) else others
        voice = rng.choice(pool)
        variants = inventory["espeak_variants"]
        variant = None if (not variants or rng.random() < _NO_VARIANT_SHARE) else rng.choice(variants)
        language = voice
        amplitude: Optional[int] = rng.randint(40, 120)
    else:
        engine = "flite"
        voice = rng.choice(inventory["flite_voices"])
        variant, amplitude = None, None
        language = FLITE_VOICE_INFO[voice][0]
        if FLITE_VOICE_INFO[voice][2] is None:
            pitch = None  # type: ignore[assignment]  # this voice ignores the F0 target
    check_training_voice(engine, voice)
    # Words for the target length at this rate; non-English word lists have ~1.3 words/"word".
    words = max(3, int(target_s * rate / 60.0))
    sentences = tuple(generate_sentences(rng, language, words))
    return SynthSpec("train", f"{index:07d}", index, seed, engine, voice, variant, language, rate, pitch,
                 amplitude, sentences)


def _eval_spec(seed: int, index: int, inventory: dict[str, Any]) -> SynthSpec:
    rng = _rng("eval", seed, index)
    voices = inventory["eval_voices"]
    engine, voice = voices[index % len(voices)].split("/", 1)  # round robin: balanced voices
    if not is_reserved_voice(engine, voice):
        raise MimiError(f"internal error: evaluation voice {engine}/{voice} is not a reserved voice")
    target_s = rng.uniform(MIN_SECONDS + 1.0, MAX_SECONDS - 2.0)
    words = max(4, int(target_s * 165 / 60.0))
    sentences = tuple(generate_sentences(rng, "en-us", words, split="eval"))
    return SynthSpec("eval", f"e{index:06d}", index, seed, engine, voice, None, "en-us", None, None, None, sentences)


# --------------------------------------------------------------------------------------------
# Synthesis (runs in worker processes)
# --------------------------------------------------------------------------------------------


def synthesize_raw(spec: SynthSpec, text: str, tmp: str) -> tuple[np.ndarray, int]:
    """Run the engine; returns mono float32 samples and their rate."""
    text_file = os.path.join(tmp, "text.txt")
    wav_file = os.path.join(tmp, "out.wav")
    with open(text_file, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    if spec.engine == "espeak":
        voice = spec.voice + (f"+{spec.variant}" if spec.variant else "")
        cmd = ["espeak-ng", "-v", voice, "-s", str(spec.rate), "-p", str(spec.pitch), "-a", str(spec.amplitude),
               "-w", wav_file, "-f", text_file]
    elif spec.engine == "flite":
        _, nominal_wpm, f0 = FLITE_VOICE_INFO[spec.voice]
        cmd = ["flite", "-voice", spec.voice]
        if spec.rate is not None:
            stretch = min(1.6, max(0.6, nominal_wpm / spec.rate))
            cmd += ["--setf", f"duration_stretch={stretch:.4f}"]
        if spec.pitch is not None and f0 is not None:
            cmd += ["--setf", f"int_f0_target_mean={f0 * 2.0 ** ((spec.pitch - 50) / 70.0):.2f}"]
        cmd += ["-f", text_file, "-o", wav_file]
    elif spec.engine == "festival":
        cmd = ["text2wave", "-eval", f"(voice_{spec.voice})", "-o", wav_file, text_file]
    else:
        raise MimiError(f"unknown engine {spec.engine!r}")
    _run(cmd, f"{spec.engine} ({spec.voice}) on utterance {spec.id}")
    try:
        data, rate = sf.read(wav_file, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise MimiError(f"{spec.engine} ({spec.voice}) wrote no readable audio for utterance {spec.id}: "
                        f"{exc}") from None
    return data.mean(axis=1), int(rate)


def trim_silence(x: np.ndarray, rate: int, keep_s: float = 0.2, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing silence (below ``floor_db`` relative to the peak) down to ``keep_s``."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak <= 0:
        return x
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (floor_db / 20))
    keep = int(keep_s * rate)
    return x[max(0, loud[0] - keep): min(x.size, loud[-1] + 1 + keep)]


def _render(spec: SynthSpec) -> tuple[np.ndarray, str]:
    """24 kHz samples and the text spoken, with the length brought into [MIN_SECONDS, MAX_SECONDS].

    Too long: drop sentences from the end (words, for a single sentence) and synthesise again;
    too short: add a sentence. Every step is deterministic.
    """
    sentences = list(spec.sentences)
    with tempfile.TemporaryDirectory(prefix="mimi-corpus-") as tmp:
        for attempt in range(1, 6):
            text = " ".join(sentences)
            raw, rate = synthesize_raw(spec, text, tmp)
            x = resample(torch.from_numpy(np.ascontiguousarray(raw))[None], rate, SAMPLE_RATE)[0].numpy()
            x = trim_silence(x, SAMPLE_RATE)
            seconds = x.size / SAMPLE_RATE
            if MIN_SECONDS <= seconds <= MAX_SECONDS:
                break
            if seconds > MAX_SECONDS:
                words = [len(s.split()) for s in sentences]
                budget = sum(words) * (MAX_SECONDS - 1.0) / seconds
                while len(sentences) > 1 and sum(words) > budget:
                    sentences.pop()
                    words.pop()
                if len(sentences) == 1 and words[0] > budget:
                    cut = sentences[0].split()[: max(3, int(budget))]
                    sentences[0] = " ".join(cut).rstrip(",;:")
                    if sentences[0][-1] not in ".?!":
                        sentences[0] += "."
            else:
                sentences.append(generate_sentence(_rng(spec.split, spec.seed, spec.index, attempt),
                                                   spec.language, spec.split))
    # Last resort (rare): clip with a fade-out, or pad with silence.
    n_max, n_min = int(MAX_SECONDS * SAMPLE_RATE), int(MIN_SECONDS * SAMPLE_RATE)
    if x.size > n_max:
        x = x[:n_max].copy()
        fade = int(0.05 * SAMPLE_RATE)
        x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    elif x.size < n_min:
        x = np.concatenate([x, np.zeros(n_min - x.size, np.float32)])
    peak = float(np.abs(x).max())
    if peak > 0.99:  # espeak at high amplitude and soxr's overshoot can exceed full scale
        x = x * (0.99 / peak)
    return x.astype(np.float32), text


def _synthesize(task: tuple[SynthSpec, str]) -> dict[str, Any]:
    """Worker: synthesise one utterance, write it atomically, return its manifest record."""
    spec, split_dir = task
    if spec.split == "train":
        check_training_voice(spec.engine, spec.voice)
    x, text = _render(spec)
    path = Path(split_dir) / spec.rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, torch.from_numpy(x)[None], SAMPLE_RATE, subtype="PCM_16")
    return {
        "id": spec.id, "path": spec.rel_path, "engine": spec.engine, "voice": spec.voice,
        "variant": spec.variant, "language": spec.language, "rate": spec.rate, "pitch": spec.pitch,
        "amplitude": spec.amplitude, "text": text, "duration_s": round(x.size / SAMPLE_RATE, 6),
    }


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@dataclass
class CorpusReport:
    """What a :func:`build_corpus` / :func:`build_eval_set` call left on disk.

    Attributes:
        split: ``"train"`` or ``"eval"``.
        root: the split's folder (``OUT_DIR/train`` or ``OUT_DIR/eval``).
        manifest: its ``manifest.jsonl``.
        utterances / seconds: totals in the manifest after the call.
        new_utterances / new_seconds: what this call synthesised.
        wall_seconds: how long this call took.
        voices: utterances per ``"engine/voice"``.
        languages: utterances per language.
        skipped_engines: engines that were not available (eval set: festival).
    """

    split: str
    root: Path
    manifest: Path
    utterances: int = 0
    seconds: float = 0.0
    new_utterances: int = 0
    new_seconds: float = 0.0
    wall_seconds: float = 0.0
    voices: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    skipped_engines: list[str] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    def summary(self) -> str:
        speed = (self.new_seconds / 3600.0) / (self.wall_seconds / 60.0) if self.wall_seconds > 0 else 0.0
        return (f"{self.split}: {self.utterances} utterances, {self.seconds / 3600:.3f} h "
                f"({self.new_utterances} new, {self.new_seconds:.0f} s in {self.wall_seconds:.1f} s wall, "
                f"{speed:.2f} h audio/min), {len(self.voices)} voices, {len(self.languages)} languages")


def _read_manifest(manifest: Path) -> list[dict[str, Any]]:
    """Records of an existing manifest; a torn last line (interrupted append) is cut off."""
    if not manifest.exists():
        return []
    raw = manifest.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        line = raw[pos: len(raw) if nl < 0 else nl]
        end = len(raw) if nl < 0 else nl + 1
        try:
            obj = json.loads(line.decode("utf-8")) if line.strip() else None
            if obj is not None and (not isinstance(obj, dict) or "id" not in obj or "duration_s" not in obj):
                raise ValueError("not a corpus record")
        except (ValueError, UnicodeDecodeError):
            if nl < 0 or end == len(raw):  # the last line: an interrupted append
                break
            lineno = raw[:pos].count(b"\n") + 1
            raise MimiError(f"{manifest}: line {lineno} is not a corpus record; "
                            f"delete the folder to rebuild it") from None
        if nl < 0:  # complete JSON but no newline: keep it, add the newline below
            if obj is not None:
                records.append(obj)
            good_end = -1
            break
        if obj is not None:
            records.append(obj)
        good_end = end
        pos = end
    if good_end == -1:
        with open(manifest, "ab") as f:
            f.write(b"\n")
    elif good_end < len(raw):
        with open(manifest, "r+b") as f:
            f.truncate(good_end)
    return records


def _check_build_info(split_dir: Path, info: dict[str, Any]) -> None:
    path = split_dir / "build.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MimiError(f"{path}: unreadable ({exc}); delete the folder to rebuild it") from None
        for key in ("seed", "generator_version", "inventory"):
            if old.get(key) != info.get(key):
                raise MimiError(f"{split_dir} was built with a different {key.replace('_', ' ')} "
                                f"({old.get(key)!r} vs {info.get(key)!r}); use another folder or the same settings")
        return
    tmp = path.with_name(".build.json.tmp")
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _specs(make, seed: int, inventory: dict[str, Any], done: set[str], start: int = 0) -> Iterator[SynthSpec]:
    i = start
    while True:
        spec = make(seed, i, inventory)
        if spec.id not in done:
            yield spec
        i += 1


def _build(split: str, out_dir: PathLike, *, target_seconds: float, seed: int, workers: int, progress: bool,
           make, inventory: dict[str, Any]) -> CorpusReport:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise MimiError(f"workers must be a positive integer, got {workers!r}")
    started = time.perf_counter()
    split_dir = Path(os.fspath(out_dir)) / split
    try:
        split_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MimiError(f"{split_dir}: cannot create folder: {exc.strerror or exc}") from None
    manifest = split_dir / "manifest.jsonl"
    lock = open(split_dir / ".lock", "w")
    try:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MimiError(f"{split_dir}: another build is writing this corpus") from None
        _check_build_info(split_dir, {"split": split, "seed": seed, "generator_version": GENERATOR_VERSION,
                                      "inventory": inventory, "sample_rate": SAMPLE_RATE})
        records = _read_manifest(manifest)
        done = {r["id"] for r in records}
        total = sum(float(r["duration_s"]) for r in records)
        report = CorpusReport(split=split, root=split_dir, manifest=manifest)
        if total < target_seconds:
            new_n, new_s = _run_jobs(split_dir, manifest, _specs(make, seed, inventory, done), total,
                                     target_seconds, workers, progress, split)
            report.new_utterances, report.new_seconds = new_n, new_s
        records = _read_manifest(manifest)
    finally:
        lock.close()
    report.utterances = len(records)
    report.seconds = sum(float(r["duration_s"]) for r in records)
    report.voices = dict(sorted(Counter(f"{r['engine']}/{r['voice']}" for r in records).items()))
    report.languages = dict(sorted(Counter(r["language"] for r in records).items()))
    report.wall_seconds = time.perf_counter() - started
    return report


def _run_jobs(split_dir: Path, manifest: Path, specs: Iterator[SynthSpec], total: float, target: float,
              workers: int, progress: bool, split: str) -> tuple[int, float]:
    """Synthesise specs in order until ``total`` reaches ``target``; append records in id order."""
    from tqdm import tqdm

    new_n, new_s = 0, 0.0
    bar = tqdm(total=round(target), initial=round(total), unit="s", desc=f"corpus {split}", disable=not progress,
               leave=False)
    out = open(manifest, "a", encoding="utf-8")

    def accept(record: dict[str, Any]) -> None:
        nonlocal total, new_n, new_s
        if split == "train":  # the last line of defence before a record enters the manifest
            check_training_voice(record["engine"], record["voice"])
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
        total += record["duration_s"]
        new_n += 1
        new_s += record["duration_s"]
        bar.update(round(total) - bar.n)

    try:
        if workers == 1:
            for spec in specs:
                accept(_synthesize((spec, str(split_dir))))
                if total >= target:
                    break
        else:
            import multiprocessing as mp

            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["mimi.training.corpus"])
            with ctx.Pool(workers) as pool:
                pending: deque = deque()  # (spec, AsyncResult), in id order
                window = 2 * workers + 2
                finished = False
                try:
                    while True:
                        # Keep the workers busy, but do not start utterances that the ones in flight
                        # will probably make unnecessary (their files would only be deleted).
                        guess = new_s / new_n if new_n else 0.5 * (MIN_SECONDS + MAX_SECONDS)
                        while len(pending) < window and (not pending or total + len(pending) * guess < target):
                            spec = next(specs)
                            pending.append((spec, pool.apply_async(_synthesize, ((spec, str(split_dir)),))))
                        accept(pending.popleft()[1].get())
                        if total >= target:
                            finished = True
                            break
                finally:
                    # Utterances past the target (or abandoned by an error or Ctrl-C): let them
                    # finish when all went well, else stop the workers; then remove their files.
                    if finished:
                        for _, job in pending:
                            try:
                                job.get()
                            except Exception:  # not needed anyway
                                pass
                    else:
                        pool.terminate()
                    for spec, _ in pending:
                        target_file = split_dir / spec.rel_path
                        for leftover in [target_file, *target_file.parent.glob(f".{target_file.name}.*.tmp")]:
                            try:
                                leftover.unlink()
                            except OSError:
                                pass
        os.fsync(out.fileno())
    finally:
        out.close()
        bar.close()
    return new_n, new_s


def _check_amount(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise MimiError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def build_corpus(out_dir: PathLike, *, hours: float, seed: int = 0, workers: Optional[int] = None,
                 progress: bool = False) -> CorpusReport:
    """Synthesise (or extend) the training corpus ``OUT_DIR/train`` up to ``hours`` of audio.

    Uses espeak-ng voices and flite ``kal``, ``awb``, ``rms``; never a reserved evaluation voice.
    Deterministic given ``seed`` and the installed voices, whatever ``workers`` (default: all
    CPUs); resumable (see the module docstring).

    Raises:
        MimiError: espeak-ng or flite (or one of its voices) is missing, bad arguments, the folder
            was built with another seed or voice inventory, or a synthesiser failed.
        ReservedVoiceError: a reserved voice was selected (a bug or an edited voice list).
    """
    hours = _check_amount("hours", hours)
    workers = (os.cpu_count() or 1) if workers is None else workers
    languages, variants = espeak_inventory()
    flite = flite_voices()
    missing = [v for v in TRAIN_FLITE_VOICES if v not in flite]
    if missing:
        raise MimiError(f"flite has no voice {', '.join(missing)}: apt-get install flite")
    for voice in TRAIN_FLITE_VOICES:
        check_training_voice("flite", voice)
    inventory = {"espeak_languages": languages, "espeak_variants": variants, "flite_voices": list(TRAIN_FLITE_VOICES)}
    return _build("train", out_dir, target_seconds=hours * 3600.0, seed=seed, workers=workers, progress=progress,
                  make=_train_spec, inventory=inventory)


def eval_voices() -> tuple[list[str], list[str]]:
    """(``"engine/voice"`` list used for the evaluation set, engines skipped because not installed)."""
    flite = flite_voices()
    voices = [f"flite/{v}" for v in EVAL_FLITE_VOICES if v in flite]
    if not voices:
        raise MimiError("flite has no voice slt: apt-get install flite")
    festival = _festival_voices()
    voices += [f"festival/{v}" for v in festival if v not in EVAL_EXCLUDED_FESTIVAL_VOICES]
    return voices, ([] if festival else ["festival"])


def build_eval_set(out_dir: PathLike, *, minutes: float = 10, seed: int = 1, workers: Optional[int] = None,
                   progress: bool = False) -> CorpusReport:
    """Synthesise (or extend) the held-out evaluation set ``OUT_DIR/eval`` up to ``minutes``.

    Only reserved voices: flite ``slt`` and the installed festival voices (except
    ``kal_diphone``, the same speaker as flite ``kal``), in turn, at their default rate and
    pitch, reading evaluation-only sentences (none can occur in training texts).
    """
    minutes = _check_amount("minutes", minutes)
    workers = (os.cpu_count() or 1) if workers is None else workers
    voices, skipped = eval_voices()
    report = _build("eval", out_dir, target_seconds=minutes * 60.0, seed=seed, workers=workers, progress=progress,
                    make=_eval_spec, inventory={"eval_voices": voices})
    report.skipped_engines = skipped
    return report
