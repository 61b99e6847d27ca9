"""`mimi convert` and the CLI's error handling."""

from __future__ import annotations

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import mimi
from mimi_cli.main import main


def test_convert_both_ways(tiny_model, tmp_path):
    src = mimi.save(tiny_model, tmp_path / "tiny.safetensors")
    runner = CliRunner()
    result = runner.invoke(main, ["convert", str(src), str(tmp_path / "hf"), "--layout", "transformers"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "config.json").is_file()
    result = runner.invoke(main, ["convert", str(tmp_path / "hf"), str(tmp_path / "back.safetensors"),
                                  "--layout", "kyutai"])
    assert result.exit_code == 0, result.output
    a, b = load_file(src), load_file(tmp_path / "back.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_convert_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    runner = CliRunner()
    for src in (tmp_path / "missing.safetensors", tmp_path / "junk.safetensors", tmp_path):
        out = tmp_path / "out.safetensors"
        result = runner.invoke(main, ["convert", str(src), str(out), "--layout", "kyutai"])
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
        assert "Traceback" not in result.output and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_no_bare_cli_module_is_installed():
    import importlib.metadata

    top_level = importlib.metadata.distribution("mimi-toolkit").read_text("top_level.txt").split()
    assert "mimi_cli" in top_level and "cli" not in top_level
