"""Every command's --device: a bad name (or CUDA on a machine without it) is one `Error:` line,
exit status 1, and nothing written."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from mimi_cli.main import main
from tests.helpers import speechlike


@pytest.mark.parametrize("command", ["encode", "roundtrip", "tokens"])
@pytest.mark.parametrize("device", ["nonsense", "cuda"])
def test_bad_device_is_one_line_and_writes_nothing(tmp_path, command, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    src = tmp_path / "in" / "a.wav"
    src.parent.mkdir()
    sf.write(src, speechlike(0.2), 24000)
    out = tmp_path / ("out" if command == "tokens" else "out.wav")
    args = [command, str(src.parent if command == "tokens" else src), str(out), "--device", device]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "--device" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_bench_speed_bad_device(tmp_path):
    result = CliRunner().invoke(main, ["bench", "speed", "--device", "nonsense"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "--device" in result.output
