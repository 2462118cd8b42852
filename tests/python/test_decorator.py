"""@zerogpu.GPU: its forms, its argument checks, and doing nothing when not enabled."""
import datetime
import os

import pytest

import zerogpu
from conftest import ledger, run_app


def cvd():
    return os.environ["CUDA_VISIBLE_DEVICES"]


def requested(d, task_suffix):
    return [r["requested_ms"] for r in ledger(d) if r["task"].endswith(task_suffix)]


def test_every_form_of_spaces_gpu_asks_for_what_it_says(zd):
    d = zd("--simulate", "2x80G")

    def bare():
        return cvd()

    def positional_seconds():
        return 1

    def keyword_seconds():
        return 1

    def as_timedelta():
        return 1

    def from_the_arguments(steps, scale=1):
        return steps

    def positional_size():
        return 1

    def keyword_size():
        return 1

    def two():
        return cvd()

    uuid = zerogpu.GPU(bare)()
    assert uuid.startswith("GPU-") and "," not in uuid
    zerogpu.GPU(45)(positional_seconds)()
    zerogpu.GPU(duration=7.5)(keyword_seconds)()
    zerogpu.GPU(datetime.timedelta(minutes=2))(as_timedelta)()
    seen = []

    def duration(steps, scale=1):
        seen.append((steps, scale))
        return steps * scale

    assert zerogpu.GPU(duration=duration)(from_the_arguments)(3, scale=4) == 3
    assert seen == [(3, 4)]
    zerogpu.GPU("xlarge")(positional_size)()
    zerogpu.GPU(size="xlarge", duration=20)(keyword_size)()
    both = zerogpu.GPU(gpus=2)(two)().split(",")
    assert len(both) == 2 and len(set(both)) == 2

    assert requested(d, ".bare") == [60000]
    assert requested(d, ".positional_seconds") == [45000]
    assert requested(d, ".keyword_seconds") == [7500]
    assert requested(d, ".as_timedelta") == [120000]
    assert requested(d, ".from_the_arguments") == [12000]
    sizes = {r["task"].rsplit(".", 1)[1]: (r["size"], r["gpus"]) for r in ledger(d)}
    assert sizes["positional_size"] == ("xlarge", 1)
    assert sizes["keyword_size"] == ("xlarge", 1)
    assert sizes["bare"] == ("large", 1)
    assert sizes["two"] == ("large", 2)


def test_decorating_twice_gives_the_same_wrapper(zd):
    def f():
        return 1

    w = zerogpu.GPU(f)
    assert zerogpu.GPU(f) is w
    assert zerogpu.GPU(duration=10)(f) is w
    assert zerogpu.GPU(w) is w
    assert w.__name__ == "f" and w.__wrapped__ is f


@pytest.mark.parametrize("kwargs, message", [
    ({"duration": -1}, "duration must be a positive number of seconds, not -1"),
    ({"duration": float("nan")}, "positive number of seconds"),
    ({"duration": "60"}, "duration must be seconds (int, float or timedelta), not str"),
    ({"size": "huge"}, "size must be 'large' or 'xlarge', not 'huge'"),
    ({"gpus": 0}, "gpus must be a whole number >= 1, not 0"),
    ({"gpus": 1.5}, "gpus must be a whole number >= 1"),
    ({"enable_queue": False}, "unexpected arguments: enable_queue"),
])
def test_bad_decorator_arguments_are_refused_with_a_message(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        zerogpu.GPU(**kwargs)
    assert message in str(err.value)


def test_a_duration_callable_that_returns_nonsense_fails_the_call_before_any_lease(zd):
    d = zd()

    @zerogpu.GPU(duration=lambda: "soon")
    def f():
        return 1

    with pytest.raises(TypeError, match="the duration callable's result must be seconds"):
        f()
    assert ledger(d) == []


def test_not_enabled_the_decorator_changes_nothing():
    out = run_app("""
        import sys
        try:
            import torch
        except ImportError:  # the package's own checks still run
            torch = None
        if torch:
            orig = (torch.Tensor.to, torch.Tensor.cuda, torch.nn.Module.to, torch.zeros,
                    torch.cuda.is_available, torch.cuda.init, torch.cuda._lazy_init)
        import zerogpu
        assert not zerogpu.enabled()
        def f(x): return x
        def g(): yield 1
        async def h(): return 1
        assert zerogpu.GPU(f) is f
        assert zerogpu.GPU(duration=5)(f) is f and zerogpu.GPU('xlarge')(g) is g
        assert zerogpu.GPU(45)(h) is h and zerogpu.GPU(gpus=2)(f) is f
        if torch:
            assert (torch.Tensor.to, torch.Tensor.cuda, torch.nn.Module.to, torch.zeros,
                    torch.cuda.is_available, torch.cuda.init, torch.cuda._lazy_init) == orig
            assert torch.cuda.is_available() is False
        assert not any(type(h).__module__.startswith('zerogpu') for h in sys.meta_path)
        print("untouched", "torch" if torch else "no torch")
    """)
    assert out.returncode == 0, out.stderr
    expected = "untouched torch" if os.environ.get("ZEROGPU_TESTS_NEED_TORCH") else "untouched"
    assert out.stdout.strip().startswith(expected)


def test_zerogpu_0_switches_it_off_even_with_a_socket(tmp_path):
    out = run_app("import zerogpu; f = lambda: 1; print(zerogpu.enabled(), zerogpu.GPU(f) is f)",
                  env={"ZEROGPU": "0", "ZEROGPU_SOCKET": str(tmp_path / "s.sock")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_a_socket_alone_switches_it_on(tmp_path):
    out = run_app("import zerogpu; f = lambda: 1; print(zerogpu.enabled(), zerogpu.GPU(f) is f)",
                  env={"ZEROGPU_SOCKET": str(tmp_path / "s.sock")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
