"""`mimi tokens`: CLI runs, resume after SIGKILL, torchrun sharding."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mimi
from mimi.defaults import resolve_model
from mimi.tokens import extract_tokens
from mimi.tokens.store import read_jsonl
from mimi_cli.main import main
from tests.mimi.tokens.test_extract import all_codes, read_manifest, write_audio_file, write_corpus

# `python -m mimi_cli.main` would run `main()` before the `tokens` command is registered at the
# bottom of cli/main.py; importing the module first works whichever way it is laid out.
CLI = [sys.executable, "-c", "from mimi_cli.main import main; main()"]
REPO = Path(__file__).resolve().parents[2]




@pytest.fixture(scope="module")
def model_file(tiny_model, tmp_path_factory) -> Path:
    return mimi.save(tiny_model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


def many_files(folder: Path, n: int) -> list[str]:
    """`n` short files at 16 and 24 kHz, 0.6 to 1.9 s long (5 lengths: few distinct batch shapes)."""
    rels = []
    for i in range(n):
        rate = 16000 if i % 3 else 24000
        rel = f"spk{i % 4}/utt{i:02d}.wav"
        write_audio_file(folder / rel, rate, 1, 0.16 * (4 + 2 * (i % 5)) - 0.01, seed=i)
        rels.append(rel)
    return sorted(rels)


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["OMP_NUM_THREADS"] = "1"  # the tiny model is fastest on one thread, above all on a busy machine
    return env


def committed(out: Path) -> list[str]:
    """The files in the manifest of a killed run (a torn last line is not committed)."""
    return [r["audio"] for r in read_jsonl(out / "manifest.jsonl").records]


def check_complete(out: Path, rels: list[str], reference: dict[str, torch.Tensor]) -> None:
    """Every file once, every tensor present and equal to `reference`, nothing left over."""
    manifest = read_manifest(out)
    assert [e["audio"] for e in manifest] == rels  # each exactly once, sorted
    codes = all_codes(out)
    assert codes.keys() == reference.keys() and all(torch.equal(codes[k], reference[k]) for k in rels)
    assert {p.name for p in out.glob("shard-*")} == {e["shard"] for e in manifest}  # no orphans
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or (".r" in p.name and p.suffix == ".jsonl")]


# -- in-process runs -------------------------------------------------------------------------------

def test_cli_run_rerun_and_options(model_file, tiny_model, tmp_path):
    rels = write_corpus(tmp_path / "in")
    (tmp_path / "in" / "broken.wav").write_bytes(os.urandom(3000))
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["tokens", str(tmp_path / "in"), str(out), "--model", str(model_file), "--batch-size", "3",
            "--shard-size", "4", "--codebooks", "4"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("encoded 6 files")
    assert "0 skipped as done" in result.output and "1 failed" in result.output
    assert str(out / "manifest.jsonl") in result.output and "errors.jsonl" in result.output
    manifest = read_manifest(out)
    assert [e["audio"] for e in manifest] == rels and {e["codebooks"] for e in manifest} == {4}
    assert manifest[0]["model_id"] == str(model_file.resolve())
    with torch.inference_mode():
        assert all(c.shape[0] == 4 for c in all_codes(out).values())
    assert [e["audio"] for e in read_manifest(out, "errors.jsonl")] == ["broken.wav"]
    again = runner.invoke(main, args + ["--quiet"])
    assert again.exit_code == 0 and again.output.startswith("nothing to do: all 7 files"), again.output
    other = runner.invoke(main, args[:-2])  # 8 codebooks into a 4-codebook folder
    assert other.exit_code == 1 and "4 codebooks" in other.output and other.output.count("\n") == 1


@pytest.mark.parametrize("extra, message", [
    ([], "--model"),
    (["--model", "MODEL", "--batch-size", "0"], "--batch-size"),
    (["--model", "MODEL", "--device", "nonsense"], "--device"),
])
def test_cli_errors_are_one_line(model_file, tmp_path, monkeypatch, extra, message):
    if not extra:  # an installation without the bundled model
        monkeypatch.setattr("mimi.defaults.DEFAULT_MODEL_FILE", tmp_path / "not-bundled.safetensors")
    write_corpus(tmp_path / "in", [("a.wav", 16000, 1, 0.2)])
    extra = [str(model_file) if a == "MODEL" else a for a in extra]
    result = CliRunner().invoke(main, ["tokens", str(tmp_path / "in"), str(tmp_path / "out"), *extra])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["tokens", str(tmp_path / "nope"), str(tmp_path / "out"),
                                        "--model", str(model_file)])
    assert missing.exit_code == 1 and missing.output.startswith("Error: ") and missing.output.count("\n") == 1
    assert "no such file" in missing.output


# -- crash and resume ------------------------------------------------------------------------------

def _run_until(cmd: list[str], out: Path, enough_shards: int, log: Path) -> int:
    """Start `cmd`, SIGKILL it once `enough_shards` shards exist; return how many shards existed."""
    with open(log, "ab") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=run_env())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            shards = len(list(out.glob("shard-r0-*.safetensors"))) if out.exists() else 0
            if shards >= enough_shards:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return shards
            time.sleep(0.002)
        pytest.fail(f"the run ended (rc={proc.poll()}) before it could be killed: {log.read_text()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_resume_after_sigkill(model_file, tmp_path):
    rels = many_files(tmp_path / "in", 30)
    clean = tmp_path / "clean"
    extract_tokens(tmp_path / "in", clean, resolve_model(str(model_file)), batch_size=2, shard_size=2)
    reference = all_codes(clean)

    out = tmp_path / "out"
    cmd = CLI + ["tokens", str(tmp_path / "in"), str(out), "--model", str(model_file),
                 "--batch-size", "2", "--shard-size", "2"]
    log = tmp_path / "log.txt"
    _run_until(cmd, out, 1, log)  # killed as soon as the first shard appears
    assert len(committed(out)) < 30
    _run_until(cmd, out, 4, log)  # resumed, then killed again further on
    done = len(committed(out))
    assert 0 < done < 30 and len(set(committed(out))) == done
    result = subprocess.run(cmd, capture_output=True, text=True, env=run_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{done} skipped as done" in result.stdout and f"encoded {30 - done} files" in result.stdout
    check_complete(out, rels, reference)
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=run_env(), timeout=120)
    assert rerun.returncode == 0 and rerun.stdout.startswith("nothing to do"), rerun.stdout + rerun.stderr


# -- torchrun --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(model_file, tmp_path):
    rels = many_files(tmp_path / "in", 8)
    (tmp_path / "in" / "zz_corrupt.wav").write_bytes(os.urandom(2000))
    clean = tmp_path / "clean"
    extract_tokens(tmp_path / "in", clean, resolve_model(str(model_file)), batch_size=2, shard_size=2)
    launcher = tmp_path / "launch.py"
    launcher.write_text("from mimi_cli.main import main\nmain()\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(launcher), "tokens", str(tmp_path / "in"), str(out),
           "--model", str(model_file), "--batch-size", "2", "--shard-size", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=run_env(), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("encoded 8 files") == 1 and "1 failed" in result.stdout, result.stdout
    check_complete(out, rels, all_codes(clean))
    shards = {e["shard"] for e in read_manifest(out)}
    assert any(s.startswith("shard-r0-") for s in shards) and any(s.startswith("shard-r1-") for s in shards)
    assert [e["audio"] for e in read_manifest(out, "errors.jsonl")] == ["zz_corrupt.wav"]
    # a rerun under torchrun (or alone) finds everything done
    rerun = subprocess.run(cmd[:5] + [f"--master_port={_free_port()}"] + cmd[6:], capture_output=True,
                           text=True, env=run_env(), timeout=180)
    assert rerun.returncode == 0 and "nothing to do" in rerun.stdout, rerun.stdout + rerun.stderr
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["audio"] == rels[0]
