"""Checkpoints: round trip, atomic writes, refusing pickled code, truncation, config identity, pruning."""

from __future__ import annotations

import os
import re

import pytest
import torch

from scoresde import checkpoint as ck

CONFIG = {"data": {"name": "gmm2d", "n": 100, "data_range": (-1.0, 1.0)},
          "model": {"network": {"name": "mlp", "hidden": 16}, "prediction": "eps"},
          "sde": {"name": "vp", "N": 1000}}


def _state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.SiLU(), torch.nn.Linear(4, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(5, 3)).square().mean().backward()
    opt.step()
    gen = torch.Generator().manual_seed(seed)
    return {"net": net.state_dict(), "optimizer": opt.state_dict(), "step": 7 + seed, "loss": 0.25,
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "ema": {"decay": 0.999, "num_updates": 3, "shadow": {"w": torch.ones(2, 2)}},
            "history": [(1, 0.5), (2, 0.4)], "note": "hello", "nothing": None}


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert type(a) is type(b) and a == b


def test_round_trip(tmp_path):
    state = _state()
    path = tmp_path / "sub" / "ck.pt"
    ck.save_checkpoint(path, state, CONFIG)
    loaded = ck.load_checkpoint(path, config=CONFIG)
    _assert_same(state, loaded)
    # The loaded states are usable: the generator continues the same stream.
    g1, g2 = torch.Generator(), torch.Generator()
    g1.set_state(state["generator"])
    g2.set_state(loaded["generator"])
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    assert ck.checkpoint_config(path)["data"]["data_range"] == [-1.0, 1.0]
    assert not [p for p in path.parent.iterdir() if p.name != "ck.pt"]  # no temp file left


def test_save_refuses_state_that_could_not_be_loaded(tmp_path):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"state\.net is a torch\.nn\.modules\.linear\.Linear.*state_dict"):
        ck.save_checkpoint(tmp_path / "ck.pt", {"net": net}, CONFIG)
    with pytest.raises(TypeError, match=r"config value at data\.bad"):
        ck.save_checkpoint(tmp_path / "ck.pt", {"step": 1}, {"data": {"bad": object()}})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("crash_in", ["torch.save", "os.replace"])
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch, crash_in):
    ck.save_and_prune(tmp_path, 10, _state(0), CONFIG)
    good = ck.checkpoint_path(tmp_path, 10)
    before = good.read_bytes()

    real_save = torch.save

    def partial_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half-written file ...
        raise OSError("disk full")  # ... then the crash

    def failing_replace(src, dst):
        raise KeyboardInterrupt  # interrupted just before the rename

    if crash_in == "torch.save":
        monkeypatch.setattr(ck.torch, "save", partial_save)
        error = OSError
    else:
        monkeypatch.setattr(ck.os, "replace", failing_replace)
        error = KeyboardInterrupt
    # Overwriting the same step and writing a newer step both leave the old file intact.
    with pytest.raises(error):
        ck.save_checkpoint(good, _state(1), CONFIG)
    with pytest.raises(error):
        ck.save_and_prune(tmp_path, 20, _state(1), CONFIG)
    monkeypatch.undo()

    assert good.read_bytes() == before
    assert ck.latest_checkpoint(tmp_path) == good
    _assert_same(ck.load_checkpoint(good, CONFIG), _state(0))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]  # temp files removed


def test_stray_temp_files_are_ignored(tmp_path):
    ck.save_and_prune(tmp_path, 5, _state(), CONFIG)
    stray = tmp_path / "checkpoints" / ".ckpt_00000009.pt.123.abcd.tmp"
    stray.write_bytes(b"partial")
    assert ck.latest_checkpoint(tmp_path) == ck.checkpoint_path(tmp_path, 5)
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [5]


class _Payload:
    """An object whose unpickling would run code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Custom:
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize("kind", ["reduce", "custom_class"])
def test_pickled_objects_are_refused_and_not_run(tmp_path, kind):
    side_effect = tmp_path / "pwned"
    obj = _Payload(side_effect) if kind == "reduce" else _Custom()
    path = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "config_json": "{}", "state": {"step": 1, "extra": obj}}, path)
    with pytest.raises(ValueError, match=r"evil\.pt refused: it contains pickled code/objects") as e:
        ck.load_checkpoint(path)
    assert ("system" if kind == "reduce" else "_Custom") in str(e.value)
    assert not side_effect.exists()


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "ck.pt"
    ck.save_checkpoint(path, _state(), CONFIG)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"ck\.pt is truncated or corrupt"):
        ck.load_checkpoint(path)
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF  # inside a tensor's bytes: torch.load alone would not notice
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"ck\.pt is truncated or corrupt.*CRC"):
        ck.load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ck.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="absent"):
        ck.load_checkpoint(tmp_path / "absent.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a scoresde checkpoint"):
        ck.load_checkpoint(tmp_path / "plain.pt")


def test_latest_skips_damaged_checkpoints(tmp_path):
    for step in (100, 200):
        ck.save_and_prune(tmp_path, step, _state(), CONFIG)
    newest = ck.checkpoint_path(tmp_path, 200)
    newest.write_bytes(newest.read_bytes()[:500])
    with pytest.warns(UserWarning, match="ckpt_00000200.pt is truncated or corrupt"):
        assert ck.latest_checkpoint(tmp_path) == ck.checkpoint_path(tmp_path, 100)


def test_config_mismatch_lists_dotted_keys(tmp_path):
    path = tmp_path / "ck.pt"
    ck.save_checkpoint(path, {"step": 1}, CONFIG)
    # Tuples and lists, ints and floats of equal value are the same config.
    same = {**CONFIG, "data": {**CONFIG["data"], "data_range": [-1, 1.0]}}
    assert ck.load_checkpoint(path, config=same) == {"step": 1}
    other = {"data": {"name": "moons", "n": 100, "data_range": (-1.0, 1.0)},
             "model": {"network": {"name": "mlp", "hidden": 32}, "prediction": "eps", "extra": True},
             "sde": {"name": "vp", "N": 1000}}
    with pytest.raises(ValueError, match="different config") as e:
        ck.load_checkpoint(path, config=other)
    msg = str(e.value)
    assert 'data.name: checkpoint "gmm2d", given "moons"' in msg
    assert "model.network.hidden: checkpoint 16, given 32" in msg
    assert "model.extra: checkpoint <missing>, given true" in msg
    assert "sde." not in msg and "data.n:" not in msg
    assert ck.load_checkpoint(path) == {"step": 1}  # no config given: no check


def test_latest_and_prune(tmp_path):
    assert ck.latest_checkpoint(tmp_path) is None
    assert ck.checkpoint_path(tmp_path, 42) == tmp_path / "checkpoints" / "ckpt_00000042.pt"
    for step in (5, 10, 1000, 20000, 300):
        ck.save_and_prune(tmp_path, step, {"step": step}, CONFIG, keep=10)
    assert ck.latest_checkpoint(tmp_path) == ck.checkpoint_path(tmp_path, 20000)  # by step, not by name
    path = ck.save_and_prune(tmp_path, 30000, {"step": 30000}, CONFIG, keep=3)
    assert path == ck.checkpoint_path(tmp_path, 30000)
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [1000, 20000, 30000]
    assert ck.load_checkpoint(ck.latest_checkpoint(tmp_path), CONFIG) == {"step": 30000}
    # Big step numbers keep sorting by value.
    ck.save_and_prune(tmp_path, 123_456_789, {"step": 1}, CONFIG, keep=1)
    names = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert names == ["ckpt_123456789.pt"] and re.fullmatch(r"ckpt_\d+\.pt", names[0])
    with pytest.raises(ValueError, match="keep must be"):
        ck.save_and_prune(tmp_path, 1, {}, CONFIG, keep=0)
    with pytest.raises(ValueError, match="step must be"):
        ck.checkpoint_path(tmp_path, -1)
