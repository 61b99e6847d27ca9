"""The training loop: learning, exact resume, checkpoints, config and CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import mimi
from mimi.errors import MimiError
from mimi.training.config import TrainConfig, config_from_dict, load_config
from mimi_cli.main import main
from tests.helpers import speechlike


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(4):
        sf.write(folder / f"utt{i}.wav", speechlike(2.0, seed=10 + i), 24000)
    sf.write(folder / "utt16k.wav", speechlike(2.0, sr=16000, seed=20), 16000)
    return folder




def tiny_config(corpus: Path, **overrides) -> TrainConfig:
    data = {
        "model": "tiny", "steps": 6, "batch_size": 2, "seed": 0, "device": "cpu", "log_every": 1,
        "eval_every": 1000, "checkpoint_every": 3,
        "data": {"train": str(corpus), "segment_seconds": 0.16},
        "loss": {"mode": "encodec"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return config_from_dict(data)


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_training_lowers_the_loss(tmp_path):
    """A few dozen CPU steps on one fixed clip (the crop is the whole file, gain fixed) drive the
    reconstruction loss down, with the quantizer in the loop (dropout, 50 % unquantized)."""
    from mimi.training.trainer import train

    one = tmp_path / "one"
    one.mkdir()
    sf.write(one / "clip.wav", speechlike(0.16, seed=5), 24000)
    cfg = tiny_config(one, steps=40, checkpoint_every=40, optim={"lr": 3e-3}, data={"gain_db": [0.0, 0.0]},
                      loss={"disc_start_step": 1000})  # reconstruction only
    report = train(cfg, tmp_path / "run")
    mel = [float(r["mel"]) for r in read_log(tmp_path / "run" / "train.csv")]
    assert report.steps_done == 40 and len(mel) == 40
    assert np.mean(mel[-5:]) < 0.3 * np.mean(mel[:5]), mel
    assert mimi.load(report.final_model).config == cfg.model  # the EMA weights load as a model


def test_cpu_bf16_trains_under_cpu_autocast(tmp_path, monkeypatch):
    """`cpu_bf16 = true` runs the forward passes under CPU bf16 autocast (off by default) and
    still learns."""
    from mimi.training.trainer import train

    seen = []
    real = torch.autocast

    def recording(device_type, *args, **kwargs):
        seen.append((device_type, kwargs.get("dtype"), kwargs.get("enabled", True)))
        return real(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", recording)
    one = tmp_path / "one"
    one.mkdir()
    sf.write(one / "clip.wav", speechlike(0.16, seed=5), 24000)
    base = dict(steps=40, checkpoint_every=40, optim={"lr": 3e-3}, data={"gain_db": [0.0, 0.0]},
                loss={"disc_start_step": 1000})
    train(tiny_config(one, steps=1, checkpoint_every=1, loss={"disc_start_step": 1000}), tmp_path / "off")
    step_autocast = [c for c in seen if c[1] == torch.bfloat16]  # (the quantizer turns it off inside)
    assert step_autocast == [("cpu", torch.bfloat16, False)]  # the default: fp32 on CPU
    train(tiny_config(one, cpu_bf16=True, **base), tmp_path / "run")
    assert [c for c in seen if c[1] == torch.bfloat16][-1] == ("cpu", torch.bfloat16, True)
    mel = [float(r["mel"]) for r in read_log(tmp_path / "run" / "train.csv")]
    assert np.mean(mel[-5:]) < 0.3 * np.mean(mel[:5]), mel
    assert json.loads((tmp_path / "run" / "config.resolved.json").read_text())["cpu_bf16"] is True


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(corpus, tmp_path):
    from mimi.training.trainer import train

    cfg = tiny_config(corpus)  # adversarial + reconstruction, balancer, quantizer dropout
    train(cfg, tmp_path / "straight")
    first_half = tiny_config(corpus, steps=3)
    train(first_half, tmp_path / "resumed")
    report = train(cfg, tmp_path / "resumed", resume=True)
    assert report.resumed_from == 3 and report.steps_done == 6
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    da = load_file(tmp_path / "straight" / "final" / "discriminator.safetensors")
    db = load_file(tmp_path / "resumed" / "final" / "discriminator.safetensors")
    assert all(torch.equal(da[k], db[k]) for k in da)
    rows = read_log(tmp_path / "resumed" / "train.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))  # no duplicated rows after resume


def test_checkpoint_layout_and_resolved_config(corpus, tmp_path):
    from mimi.training.trainer import train

    train(tiny_config(corpus, steps=3), tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000003"
    ckpt = run / "checkpoints" / "step_0000003"
    for name in ("model", "ema", "discriminator", "extra", "optimizer_g", "optimizer_d"):
        assert (ckpt / f"{name}.safetensors").is_file()
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["steps"] == 3 and resolved["model"]["name"] == "mimi-tiny"
    assert load_config(run / "config.resolved.json") == tiny_config(corpus, steps=3)
    assert mimi.load(ckpt / "model.safetensors").config.name == "mimi-tiny"


def test_weight_decay_only_on_transformer_weights():
    from mimi.training.trainer import _param_groups

    model = mimi.build_mimi(mimi.MimiConfig.tiny())
    decay, no_decay = _param_groups(model, torch.nn.Module(), 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all("transformer" in names[id(p)] and p.dim() == 2 for p in decay["params"])
    assert not any("transformer" in names[id(p)] and p.dim() == 2 for p in no_decay["params"])


def test_config_errors(tmp_path):
    with pytest.raises(MimiError, match="train is required"):
        config_from_dict({"model": "tiny"})
    with pytest.raises(MimiError, match="unknown key"):
        config_from_dict({"data": {"train": "x"}, "stepz": 3})
    with pytest.raises(MimiError, match=r"unknown key\(s\) in \[loss\]"):
        config_from_dict({"data": {"train": "x"}, "loss": {"moed": "x"}})
    # a value of the wrong type is refused by name before anything runs (not a TypeError mid-step)
    with pytest.raises(MimiError, match=r"cpu_bf16 must be of type bool, got 'yes'"):
        config_from_dict({"data": {"train": "x"}, "cpu_bf16": "yes"})
    with pytest.raises(MimiError, match=r"steps must be of type int, got 1.5"):
        config_from_dict({"data": {"train": "x"}, "steps": 1.5})
    with pytest.raises(MimiError, match=r"\[optim\] lr must be of type float, got 'fast'"):
        config_from_dict({"data": {"train": "x"}, "optim": {"lr": "fast"}})
    assert config_from_dict({"data": {"train": "x", "eval": None}, "optim": {"lr": 1}}).optim.lr == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [")
    with pytest.raises(MimiError, match="invalid training config"):
        load_config(bad)
    with pytest.raises(MimiError, match="no such training config"):
        load_config(tmp_path / "missing.toml")


def test_cli_train_new_run_refuses_to_overwrite_and_resumes(corpus, tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        'model = "tiny"\nsteps = 2\nbatch_size = 2\ndevice = "cpu"\ncheckpoint_every = 1\n'
        f'[data]\ntrain = "{corpus}"\nsegment_seconds = 0.16\n'
    )
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "trained to step 2" in result.output
    again = runner.invoke(main, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert again.exit_code == 1 and "--resume" in again.output
    cfg.write_text(cfg.read_text().replace("steps = 2", "steps = 3"))
    resumed = runner.invoke(main, ["train", str(cfg), "--resume", str(tmp_path / "run")])
    assert resumed.exit_code == 0, resumed.output
    assert "trained to step 3 (from 2)" in resumed.output


def test_init_from_released_layout_weights(corpus, tmp_path, tiny_model):
    from mimi.training.trainer import train

    src = mimi.save(tiny_model, tmp_path / "init.safetensors")
    report = train(tiny_config(corpus, steps=1, checkpoint_every=1), tmp_path / "ft", init=str(src))
    assert report.steps_done == 1


def test_init_weights_define_the_architecture_and_resume_keeps_it(corpus, tmp_path, tiny_model):
    """CONFIG says `small`, the --init weights are `tiny`: the run trains the tiny model, its
    resolved config says so, and --resume with the same CONFIG continues that model."""
    from mimi.training.trainer import train

    src = mimi.save(tiny_model, tmp_path / "init.safetensors")
    cfg = tiny_config(corpus, model="small", steps=2, checkpoint_every=1)
    train(cfg, tmp_path / "ft", init=str(src))
    resolved = json.loads((tmp_path / "ft" / "config.resolved.json").read_text())
    assert mimi.MimiConfig.from_dict(resolved["model"]) == tiny_model.config
    report = train(tiny_config(corpus, model="small", steps=3, checkpoint_every=1), tmp_path / "ft", resume=True)
    assert report.resumed_from == 2 and report.steps_done == 3
    assert mimi.load(report.final_model).config == tiny_model.config


def test_time_limit_stops_at_a_step_boundary_and_resume_is_exact(corpus, tmp_path):
    """`time_limit_s` stops after the first step past the limit with a checkpoint and final/
    written; resuming to the configured steps gives the uninterrupted run's weights."""
    from mimi.training.trainer import train

    cfg = tiny_config(corpus, steps=4)
    train(cfg, tmp_path / "straight")
    stopped = train(cfg, tmp_path / "timed", time_limit_s=1e-9)
    assert stopped.steps_done == 1 and stopped.final_model.is_file()
    assert (tmp_path / "timed" / "checkpoints" / "latest").read_text().strip() == "step_0000001"
    report = train(cfg, tmp_path / "timed", resume=True)
    assert report.resumed_from == 1 and report.steps_done == 4
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "timed" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(MimiError, match="time limit must be positive"):
        train(cfg, tmp_path / "never", time_limit_s=0)


def test_init_discriminator_starts_from_given_weights(corpus, tmp_path):
    from mimi.training.discriminator import MultiScaleSTFTDiscriminator
    from mimi.training.trainer import _load_discriminator, train

    first = train(tiny_config(corpus, steps=2), tmp_path / "a")
    disc_file = first.final_model.parent / "discriminator.safetensors"
    fresh = MultiScaleSTFTDiscriminator()
    _load_discriminator(fresh, disc_file)
    saved = load_file(disc_file)
    assert all(torch.equal(v, saved[k]) for k, v in fresh.state_dict().items())
    report = train(tiny_config(corpus, steps=1, loss={"disc_start_step": 10}), tmp_path / "b",
                   init=str(first.final_model), init_discriminator=str(disc_file))
    kept = load_file(report.final_model.parent / "discriminator.safetensors")  # not trained: disc starts at 10
    assert all(torch.equal(kept[k], saved[k]) for k in saved)
    with pytest.raises(MimiError, match="not weights of this discriminator"):
        _load_discriminator(MultiScaleSTFTDiscriminator(), first.final_model)


def test_zero_lr_trains_only_the_discriminator(corpus, tmp_path, tiny_model):
    """optim.lr = 0: a discriminator warm-up against a frozen generator (its weights do not move;
    the EMA codebooks still follow the data)."""
    from mimi.training.trainer import train

    src = mimi.save(tiny_model, tmp_path / "init.safetensors")
    report = train(tiny_config(corpus, steps=3, optim={"lr": 0.0}), tmp_path / "warm", init=str(src))
    before = load_file(src)
    after = load_file(tmp_path / "warm" / "checkpoints" / "step_0000003" / "model.safetensors")
    weights = [k for k in before if "_codebook" not in k]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
    ema = load_file(report.final_model)  # the weight EMA of unchanged weights: equal up to rounding
    assert all(torch.allclose(before[k], ema[k], atol=1e-6) for k in weights)
    rows = read_log(tmp_path / "warm" / "train.csv")
    assert all(r["loss_d"] and not r["grad_norm_g"] for r in rows)  # the discriminator stepped, the generator not
    fresh = train(tiny_config(corpus, steps=1, optim={"lr": 0.0}, loss={"disc_start_step": 5}), tmp_path / "f",
                  init=str(src))
    trained = load_file(report.final_model.parent / "discriminator.safetensors")
    untouched = load_file(fresh.final_model.parent / "discriminator.safetensors")
    assert any(not torch.equal(trained[k], untouched[k]) for k in trained)


def test_init_default_is_the_bundled_model_and_its_discriminator():
    from mimi.defaults import DEFAULT_DISCRIMINATOR_FILE, DEFAULT_MODEL_FILE
    from mimi.training.discriminator import MultiScaleSTFTDiscriminator
    from mimi.training.trainer import INIT_DEFAULT, _init_sources, _load_discriminator

    model_path, disc_path = _init_sources(INIT_DEFAULT, None)
    assert (model_path, disc_path) == (DEFAULT_MODEL_FILE, DEFAULT_DISCRIMINATOR_FILE)
    _load_discriminator(MultiScaleSTFTDiscriminator(), disc_path)  # the shipped pair fits our modules
    assert mimi.load().config.name == "mimi-small"


def test_cli_resume_refuses_init(corpus, tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(f'model = "tiny"\nsteps = 1\n[data]\ntrain = "{corpus}"\n')
    result = CliRunner().invoke(main, ["train", str(cfg), "--resume", str(tmp_path / "r"), "--init", "x"])
    assert result.exit_code == 1 and "--init" in result.output and "Traceback" not in result.output


def test_shipped_configs_parse():
    for path in sorted((Path(__file__).parents[3] / "configs").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.model.quantizer.n_q >= cfg.eval_codebooks, path


def test_ddp_under_torchrun_with_two_cpu_processes(corpus, tmp_path):
    """Scale-out: 2 gloo processes train together; rank 0 logs, checkpoints and reports once."""
    import os
    import socket
    import subprocess
    import sys

    cfg = tmp_path / "tiny.toml"
    cfg.write_text('model = "tiny"\nsteps = 3\nbatch_size = 2\ndevice = "cpu"\ncheckpoint_every = 3\nlog_every = 1\n'
                   f'[data]\ntrain = "{corpus}"\nsegment_seconds = 0.16\n[loss]\nmode = "encodec"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={port}", "-m", "mimi_cli.main", "train", str(cfg),
                          "--out", str(tmp_path / "run"), "-q"],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("trained to step 3") == 1
    assert len(read_log(tmp_path / "run" / "train.csv")) == 3
    assert mimi.load(tmp_path / "run" / "final" / "model.safetensors").config.name == "mimi-tiny"


def test_bad_training_data_fails_before_anything_is_written(tmp_path):
    from mimi.training.trainer import train

    cfg = config_from_dict({"model": "tiny", "steps": 2, "device": "cpu",
                            "data": {"train": str(tmp_path / "missing")}})
    with pytest.raises(MimiError, match="no such file or folder"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_from_a_corrupt_checkpoint_is_a_clear_error(corpus, tmp_path):
    from mimi.training.trainer import train

    train(tiny_config(corpus, steps=3), tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "step_0000003" / "discriminator.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(MimiError, match="cannot read .*discriminator.safetensors"):
        train(tiny_config(corpus, steps=6), tmp_path / "run", resume=True)


def test_cosine_schedule_with_warmup():
    from mimi.training.config import OptimConfig

    opt = OptimConfig(lr=1e-3, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    lrs = [opt.lr_at(step, 111) for step in range(111)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up
    assert lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)  # cosine down to 10 %
    assert lrs[60] == pytest.approx(0.55e-3)  # half-way: the mean of the two ends
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert OptimConfig(lr=1e-3).lr_at(500, 1000) == 1e-3  # constant by default
    with pytest.raises(MimiError, match="schedule"):
        OptimConfig(schedule="linear")


def test_cosine_schedule_is_what_the_run_uses(corpus, tmp_path):
    from mimi.training.trainer import train

    cfg = tiny_config(corpus, optim={"schedule": "cosine", "min_lr_ratio": 0.0, "lr": 1e-3})
    train(cfg, tmp_path / "run")
    lrs = [float(r["lr"]) for r in read_log(tmp_path / "run" / "train.csv")]
    assert lrs == pytest.approx([cfg.optim.lr_at(s, cfg.steps) for s in range(cfg.steps)], rel=1e-5)  # CSV digits
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
