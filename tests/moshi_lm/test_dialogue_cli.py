"""`moshi-lm dialogue` / `client` / `serve`: outputs, and one-line errors on bad input."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import mimi
import moshi_lm
from mimi_cli.lm_main import main
from moshi_lm import LMGen
from moshi_lm.server import DialogueServer, ServerConfig, SessionFactory
from tests.helpers import speechlike
from tests.moshi_lm.test_dialogue import dialogue_models

FS = 1920


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny LM folder and a tiny Mimi file on disk, and the models themselves."""
    codec, lm = dialogue_models(seed=2)
    folder = tmp_path_factory.mktemp("ckpt")
    moshi_lm.save(lm, folder / "lm")
    mimi.save(codec, folder / "mimi.safetensors")
    return str(folder / "lm"), str(folder / "mimi.safetensors"), codec, lm


def _wav(path, seconds: float, rate: int = 24000, channels: int = 1, seed: int = 0):
    x = speechlike(seconds, sr=rate, seed=seed)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, rate)
    return path


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_dialogue_writes_stereo_reply_text_and_timing(checkpoints, tmp_path):
    lm_dir, mimi_file, _, _ = checkpoints
    src = _wav(tmp_path / "user.wav", 1.05)  # 25200 samples: 13.1 frames
    out, words = tmp_path / "reply.wav", tmp_path / "words.txt"
    result = CliRunner().invoke(main, ["dialogue", "--lm", lm_dir, "--mimi", mimi_file, "--input", str(src),
                                       "--output", str(out), "--text-out", str(words), "--seed", "3"])
    assert result.exit_code == 0, result.output
    data, rate = sf.read(out)
    user, _ = sf.read(src)
    assert rate == 24000 and data.shape == (25200, 2)
    assert np.abs(data[:, 0] - user).max() < 1e-4  # the user, unchanged, on the left
    assert np.all(data[:FS, 1] == 0) and np.any(data[FS:, 1] != 0)  # warm-up silence, then the model
    lines = words.read_text().splitlines()
    assert lines[0].startswith("# time_s") and all(len(line.split("\t")) == 3 for line in lines[1:])
    assert "14 frames" in result.output and "algorithmic latency 160 ms" in result.output
    assert "p50" in result.output and "p99" in result.output and "worst" in result.output
    assert "budget 80 ms" in result.output


def test_dialogue_resamples_other_rates(checkpoints, tmp_path):
    lm_dir, mimi_file, _, _ = checkpoints
    src = _wav(tmp_path / "user8k.flac", 0.5, rate=8000, channels=2)
    out = tmp_path / "reply.wav"
    result = CliRunner().invoke(main, ["dialogue", "--lm", lm_dir, "--mimi", mimi_file, "--input", str(src),
                                       "--output", str(out), "--greedy"])
    assert result.exit_code == 0, result.output
    assert sf.info(out).frames == 12000 and sf.info(out).channels == 2


@pytest.mark.parametrize("case", ["missing_input", "not_audio", "bad_lm", "bad_mimi", "no_output_dir",
                                  "wrong_codec", "default_mimi"])
def test_dialogue_errors_are_one_line(checkpoints, tmp_path, monkeypatch, case):
    lm_dir, mimi_file, _, _ = checkpoints
    src = _wav(tmp_path / "user.wav", 0.3)
    args = {"--lm": lm_dir, "--mimi": mimi_file, "--input": str(src), "--output": str(tmp_path / "out.wav")}
    expected = {
        "missing_input": "nope.wav", "not_audio": "not a readable audio file", "bad_lm": "no such LM checkpoint",
        "bad_mimi": "missing", "no_output_dir": "does not exist", "wrong_codec": "do not belong together",
        "default_mimi": "no default Mimi model",
    }[case]
    if case == "missing_input":
        args["--input"] = str(tmp_path / "nope.wav")
    elif case == "not_audio":
        (tmp_path / "text.wav").write_text("hello")
        args["--input"] = str(tmp_path / "text.wav")
    elif case == "bad_lm":
        args["--lm"] = str(tmp_path / "missing-lm")
    elif case == "bad_mimi":
        args["--mimi"] = str(tmp_path / "missing.safetensors")
        expected = "missing.safetensors"
    elif case == "no_output_dir":
        args["--output"] = str(tmp_path / "no" / "such" / "out.wav")
    elif case == "wrong_codec":
        other = tmp_path / "lm32"
        moshi_lm.save(moshi_lm.build_lm(moshi_lm.LMConfig.tiny()), other)  # card 32, the codec has 64
        args["--lm"] = str(other)
    elif case == "default_mimi":
        # an installation without the bundled model
        monkeypatch.setattr("mimi.defaults.DEFAULT_MODEL_FILE", tmp_path / "not-bundled.safetensors")
        del args["--mimi"]
    argv = ["dialogue"] + [x for kv in args.items() for x in kv]
    line = _one_line_error(CliRunner().invoke(main, argv))
    assert expected in line
    assert not (tmp_path / "out.wav").exists()


def test_client_command_against_a_live_server(checkpoints, tmp_path):
    _, _, codec, lm = checkpoints
    server = DialogueServer(SessionFactory(codec, LMGen(lm, use_sampling=False)), ServerConfig(port=0))
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        src = _wav(tmp_path / "user.wav", 0.7)
        out, words = tmp_path / "reply.wav", tmp_path / "words.txt"
        result = CliRunner().invoke(main, ["client", "--url", server.url, "--input", str(src), "--output", str(out),
                                           "--text-out", str(words), "--fast", "--stereo", "--format", "s16le"])
        assert result.exit_code == 0, result.output
        assert "9 of 9 frames back" in result.output and "dropped 0 input and 0 output" in result.output
        data, rate = sf.read(out)
        assert rate == 24000 and data.shape == (16800, 2)
        missing = _one_line_error(CliRunner().invoke(main, ["client", "--url", server.url, "--input",
                                                            str(tmp_path / "nope.wav"), "--output", str(out)]))
        assert "nope.wav" in missing
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_serve_reports_a_busy_port_in_one_line(checkpoints):
    lm_dir, mimi_file, _, _ = checkpoints
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _one_line_error(CliRunner().invoke(main, ["serve", "--lm", lm_dir, "--mimi", mimi_file,
                                                         "--port", str(port)]))
    assert f"cannot listen on 127.0.0.1:{port}" in line
