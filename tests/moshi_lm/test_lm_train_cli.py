"""`moshi-lm train` / `python -m moshi_lm.train`: runs, resume, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mimi.tokens import extract_tokens
from mimi_cli.lm_main import main
from moshi_lm.text_tokenizer import train_tokenizer
from tests.moshi_lm.test_lm_train import write_dialogue_folder

REPO = Path(__file__).resolve().parents[2]




@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("lmcli")
    write_dialogue_folder(root / "dialogues", n=2)
    extract_tokens(root / "dialogues" / "audio", root / "tokens", tiny_model, batch_size=4)
    train_tokenizer(["the red hat", "mhm"] * 20, root / "tok.model", vocab_size=20)
    return root


def args(root: Path, *extra: str) -> list[str]:
    return ["train", "--dialogues", str(root / "dialogues"), "--tokens", str(root / "tokens"),
            "--tokenizer", str(root / "tok.model"), "--preset", "micro", "--num-codebooks", "2",
            "--batch-size", "2", "--window", "8", "--log-every", "1", "--checkpoint-every", "2", *extra]


def run(argv: list[str]):
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.output


def test_train_then_resume(data, tmp_path):
    result = run(args(data, "--steps", "2", "--out", str(tmp_path / "run"), "-q"))
    assert result.exit_code == 0, result.output
    assert "trained to step 2 (from 0)" in result.output and "vs unigram" in result.output
    again = run(args(data, "--steps", "2", "--out", str(tmp_path / "run")))
    assert_one_line_error(again, "already holds a run; continue it with --resume")
    result = run(["train", "--resume", str(tmp_path / "run"), "--steps", "4", "-q"])
    assert result.exit_code == 0, result.output
    assert "trained to step 4 (from 2)" in result.output
    changed = run(["train", "--resume", str(tmp_path / "run"), "--window", "4"])
    assert_one_line_error(changed, "cannot change --window when resuming")


def test_toml_config_with_cli_overrides(data, tmp_path):
    cfg = tmp_path / "lm.toml"
    cfg.write_text(f'dialogues = "{data / "dialogues"}"\ntokens = "{data / "tokens"}"\n'
                   f'tokenizer = "{data / "tok.model"}"\nnum_codebooks = 2\nsteps = 50\nwindow = 8\n'
                   'batch_size = 2\n[model]\npreset = "micro"\nnum_layers = 2\n')
    result = run(["train", str(cfg), "--steps", "1", "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    import json

    resolved = json.loads((tmp_path / "run/config.resolved.json").read_text())
    assert resolved["steps"] == 1 and resolved["resolved_lm_config"]["num_layers"] == 2


@pytest.mark.parametrize("case, fragment", [
    ("no-out", "give --out RUN"),
    ("no-dialogues", "dialogues is required"),
    ("missing-dialogues", "no words.jsonl"),
    ("missing-tokens", "no such folder"),
    ("missing-tokenizer", "no such tokenizer model"),
    ("corrupt-tokenizer", "is not a SentencePiece model"),
    ("resume-nothing", "is not a run folder"),
    ("bad-toml", "invalid LM training config"),
    ("unknown-key", "unknown key(s) colour"),
    ("too-many-codebooks", "fewer than the 9 asked for"),
])
def test_one_line_errors(data, tmp_path, case, fragment):
    out = ["--out", str(tmp_path / "run")]
    if case == "no-out":
        argv = args(data)
    elif case == "no-dialogues":
        argv = ["train", "--tokens", "t", "--tokenizer", "x", *out]
    elif case == "missing-dialogues":
        argv = args(data, *out)
        argv[argv.index("--dialogues") + 1] = str(tmp_path / "nowhere")
    elif case == "missing-tokens":
        argv = args(data, *out)
        argv[argv.index("--tokens") + 1] = str(tmp_path / "nowhere")
    elif case == "missing-tokenizer":
        argv = args(data, *out)
        argv[argv.index("--tokenizer") + 1] = str(tmp_path / "none.model")
    elif case == "corrupt-tokenizer":
        (tmp_path / "bad.model").write_bytes(b"\x08\x01garbage")
        argv = args(data, *out)
        argv[argv.index("--tokenizer") + 1] = str(tmp_path / "bad.model")
    elif case == "resume-nothing":
        (tmp_path / "empty").mkdir()
        argv = ["train", "--resume", str(tmp_path / "empty")]
    elif case in ("bad-toml", "unknown-key"):
        cfg = tmp_path / "c.toml"
        cfg.write_text("steps = [1,\n" if case == "bad-toml" else "colour = 'red'\n")
        argv = ["train", str(cfg), *out]
    else:
        argv = args(data, *out, "--num-codebooks", "9")
    assert_one_line_error(run(argv), fragment)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_python_dash_m_entry_point(data, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "moshi_lm.train", "--help"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "python -m moshi_lm.train [OPTIONS] [CONFIG]" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "moshi_lm.train", "--out", str(tmp_path / "r"), "--tokens", "t"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip() == "Error: LM training config: dialogues is required " \
                                                            "(--dialogues PATH)"
