"""
zerogpu outside any web framework: a torch model placed "on cuda" at start-up,
used by a plain script.

    pip install .               # from the repository root; torch installed separately
    ZEROGPU_SOCKET=/run/zerogpu/zerogpud.sock python examples/zerogpu-torch/script.py

The app process never touches CUDA: `model.to("cuda")` moves the weights into
shared host memory, once. Each call runs in a worker that holds a lease; on a
real GPU the worker moves the weights there before its first call and keeps
them for later calls, so only the first call pays for the copy. On simulated
devices the worker computes on the CPU.
"""
import os
import time

import torch
import zerogpu

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).eval()
model.to("cuda")  # placed, not copied: see docs/python.md


@zerogpu.GPU(duration=10)
def infer(batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(batch.to("cuda")).cpu()


if __name__ == "__main__":
    print(f"cuda available in the app process: {torch.cuda.is_available()} "
          f"({torch.cuda.get_device_name(0)})")
    x = torch.randn(8, 1024)
    for i in range(3):
        t0 = time.perf_counter()
        y = infer(x)
        print(f"call {i + 1}: {tuple(y.shape)} in {(time.perf_counter() - t0) * 1e3:.1f} ms "
              f"(app pid {os.getpid()})")
