"""The memory format a run trains in: measured (the faster layout here), leaving no trace, kept by the run."""
from __future__ import annotations

import torch

from ssdfast.engine import Trainer
from ssdfast.engine import memory_format as mf
from ssdfast.model_files import load_checkpoint
from ssdfast.models import create_model


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96)


def _with_costs(monkeypatch, nchw: float, channels_last: float) -> list[float]:
    """A clock that a forward + backward pass advances by the given cost of the layout it ran in."""
    clock = [0.0]
    real = mf._forward_backward

    def fake(model, x, device, amp_dtype):
        real(model, x, device, amp_dtype)
        contiguous = x.is_contiguous()
        clock[0] += nchw if contiguous else channels_last

    monkeypatch.setattr(mf, "_forward_backward", fake)
    return clock


def test_the_faster_layout_is_picked(monkeypatch):
    for nchw, cl, expected in ((2.0, 1.0, True), (1.0, 2.0, False)):
        clock = _with_costs(monkeypatch, nchw, cl)
        choice = mf.measure_memory_format(_tiny_model(), 96, torch.device("cpu"), timer=lambda clock=clock: clock[0])
        assert choice.channels_last is expected
        assert (choice.nchw_s, choice.channels_last_s) == (nchw, cl)
        assert choice.memory_format == (torch.channels_last if expected else torch.contiguous_format)
        assert ("channels-last" if expected else "NCHW") in choice.describe()


def test_processes_of_a_run_agree_on_the_summed_times(monkeypatch):
    clock = _with_costs(monkeypatch, 1.0, 2.0)  # this process finds NCHW faster; the others did not
    choice = mf.measure_memory_format(_tiny_model(), 96, torch.device("cpu"), timer=lambda: clock[0],
                                      combine=lambda t: t + torch.tensor([5.0, 0.0], dtype=t.dtype))
    assert choice.channels_last is True


def test_measuring_leaves_no_trace():
    model = _tiny_model().train()
    for p in list(model.parameters())[:3]:
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    mf.measure_memory_format(model, 96, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # BatchNorm statistics included
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert model.training and all(p.is_contiguous() for p in model.parameters())


def test_a_gpu_trains_channels_last_without_measuring(monkeypatch):
    monkeypatch.setattr(mf, "_forward_backward", lambda *a: (_ for _ in ()).throw(AssertionError("measured")))
    choice = mf.measure_memory_format(_tiny_model(), 96, torch.device("cuda"))
    assert choice.channels_last is True and choice.nchw_s is None


def test_the_run_measures_once_logs_it_and_keeps_it(voc_data, tmp_path, tiny_config, monkeypatch):
    clock = _with_costs(monkeypatch, 1.0, 2.0)
    monkeypatch.setattr(mf.time, "perf_counter", lambda: clock[0])
    config = tiny_config(voc_data, tmp_path / "run", iterations=1)
    trainer = Trainer(config)
    assert trainer.memory_format == torch.contiguous_format and config.channels_last is False
    trainer.fit()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Memory format: NCHW, measured faster here" in log
    saved = load_checkpoint(tmp_path / "run" / "last.pth")["train_state"]["args"]
    assert saved["channels_last"] is False  # --resume takes it from here, measuring nothing

    def refuse(*args, **kwargs):
        raise AssertionError("a given layout is not measured")

    monkeypatch.setattr(mf, "measure_memory_format", refuse)
    given = Trainer(tiny_config(voc_data, tmp_path / "given", iterations=1, channels_last=True))
    assert given.memory_format == torch.channels_last
    resumed = Trainer(type(config).resumed_from(str(tmp_path / "run" / "last.pth"), iterations=2))
    assert resumed.memory_format == torch.contiguous_format
