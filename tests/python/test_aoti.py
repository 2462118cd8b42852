"""Ahead-of-time compilation (torch.export + AOTInductor), and torch.compile refused.

On simulated devices a worker's "GPU" is the CPU, so the package is compiled by CPU
inductor (a C++ compiler): slow the first time (tens of seconds), from the cache after.
"""
import os

import pytest

if os.environ.get("ZEROGPU_TESTS_NEED_TORCH"):
    import torch
else:
    torch = pytest.importorskip("torch")

import zerogpu  # noqa: E402
from zerogpu import _aoti  # noqa: E402

TORCH = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
AOT = TORCH >= _aoti.MIN_TORCH


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    # One cache for the module's tests: the round trip compiles once.
    d = tmp_path_factory.getbasetemp() / "aoti-cache"
    monkeypatch.setenv("ZEROGPU_CACHE_DIR", str(d))
    return d


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def test_a_model_compiled_ahead_of_time_runs_in_the_workers(zd, cache):
    zd()
    model = small_model()
    model.to("cuda")
    example = torch.randn(3, 16)
    with torch.no_grad():
        want = model(example)  # eager

    @zerogpu.GPU(duration=60)
    def infer(x):
        with torch.no_grad():
            return model(x.to("cuda")), repr(model.forward)

    assert infer(example)[1].startswith("<bound method")  # eager; a worker now knows infer
    if not AOT:
        # Debian's torch 1.13 has no torch.export: the model runs eagerly, and compiling
        # says what it needs.
        torch.testing.assert_close(infer(example)[0], want)
        with pytest.raises(RuntimeError, match=r"compilation needs torch 2\.8 or later, not "
                                               + torch.__version__.replace("+", r"\+")):
            zerogpu.aoti_compile(object())
        return

    @zerogpu.GPU(duration=300)
    def compile_model():
        with zerogpu.aoti_capture(model) as call:
            model(example.to("cuda"))
            raise AssertionError("the capture stops the block at the module's call")
        exported = torch.export.export(model, args=call.args, kwargs=call.kwargs)
        return zerogpu.aoti_compile(exported)

    compiled = compile_model()
    assert isinstance(compiled, zerogpu.AotiModel) and compiled.compiled_now
    assert compiled.device == "cpu" and os.path.exists(compiled.path)
    assert compiled.path.startswith(str(cache)) and compiled.torch_version == torch.__version__
    again = compile_model()  # the same model, inputs and torch: from the cache
    assert not again.compiled_now and again.path == compiled.path and again.key == compiled.key

    zerogpu.aoti_apply(compiled, model)
    got, runs = infer(example)  # not in the idle eager worker: in one forked after the apply
    assert runs.startswith("<zerogpu compiled AotiModel(")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # The package holds code, not weights: it runs the weights the module has.
    with torch.no_grad():
        model[0].weight.mul_(2)
        want2 = torch.relu(example @ model[0].weight.t() + model[0].bias) @ model[2].weight.t() \
            + model[2].bias
    zerogpu.shutdown()  # a fresh worker loads the package again
    got2, _ = infer(example)
    torch.testing.assert_close(got2, want2, rtol=1e-4, atol=1e-5)


def test_another_input_shape_is_another_package(zd, cache):
    zd()
    model = small_model()
    model.to("cuda")

    @zerogpu.GPU(duration=300)
    def key_of(batch):
        with zerogpu.aoti_capture(model) as call:
            model(torch.randn(batch, 16, device="cuda"))
        shape = tuple(call.args[0].shape)  # the capture works on any torch
        if not AOT:  # the key needs torch.export (2.8 and later)
            return shape, None
        return shape, _aoti._key(torch, torch.export.export(model, args=call.args), "cpu", {})

    first, second = key_of(3), key_of(5)
    assert first[0] == (3, 16) and second[0] == (5, 16)
    assert first != second  # a shape is part of the key
    assert first == key_of(3)  # and the same call, the same key


def test_an_old_torch_is_told_what_aot_needs(zd, monkeypatch):
    zd()
    # On a torch that has it, the refusal is seen by asking for a later one.
    need = _aoti.MIN_TORCH if not AOT else (TORCH[0] + 1, 0)
    monkeypatch.setattr(_aoti, "MIN_TORCH", need)
    with pytest.raises(RuntimeError, match=rf"ahead-of-time compilation needs torch "
                                           rf"{need[0]}\.{need[1]} or later"):
        zerogpu.aoti_compile(object())


def test_torch_compile_is_refused_with_the_reason(zd):
    zd()
    if not hasattr(torch, "compile"):  # torch 1.13 has none to refuse
        assert TORCH < (2, 0)
        return
    add_one = torch.compile(lambda x: x + 1)  # decorating works: libraries do it at import
    with pytest.raises(zerogpu.CompileRefused, match="torch.compile is not supported with zerogpu"):
        add_one(torch.ones(1))

    @torch.compile(dynamic=True)
    def twice(x):
        return x * 2

    @zerogpu.GPU
    def inside():
        try:
            twice(torch.ones(1))
        except zerogpu.CompileRefused as err:
            return str(err)
        return "ran"

    assert "zerogpu.aoti_compile" in inside()
