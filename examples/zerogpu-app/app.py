"""
A Gradio app on zerogpu's own package: `import zerogpu`, `@zerogpu.GPU`.

    pip install . gradio        # from the repository root
    ZEROGPU_SOCKET=/run/zerogpu/zerogpud.sock python examples/zerogpu-app/app.py

Each click borrows a GPU from zerogpud for one call; the visitor's quota pays,
read from the X-IP-Token header Gradio received (docs/python.md). The "GPU
work" is CPU work so that the example runs anywhere; see examples/zerogpu-torch
for a torch model. Without ZEROGPU_SOCKET (or ZEROGPU=1) the functions run
in-process, unchanged.
"""
import asyncio
import os
import time

import gradio as gr
import zerogpu


@zerogpu.GPU(duration=20)
def generate(prompt: str, seconds: float) -> dict:
    """Runs in a worker process holding a lease on one device."""
    time.sleep(max(0.0, float(seconds)))
    return {"result": prompt[::-1], "worker_pid": os.getpid(), "app_pid": os.getppid(),
            "device": os.environ.get("CUDA_VISIBLE_DEVICES")}


@zerogpu.GPU(duration=lambda prompt: 5 + len(prompt.split()))  # longer prompts ask for more
def stream(prompt: str):
    """Generators stream each item back as it is produced."""
    words = prompt.split()
    for i in range(1, len(words) + 1):
        time.sleep(0.1)
        yield " ".join(words[:i])


@zerogpu.GPU(duration=10)
async def shout(prompt: str) -> str:
    """async def works too (the hosted client refuses it)."""
    await asyncio.sleep(0.1)
    return prompt.upper()


@zerogpu.GPU(duration=20)
def denoise(steps: float, progress=gr.Progress()) -> str:
    """Progress bars and toasts made in the worker reach the page, as without zerogpu."""
    gr.Info("Starting on the GPU")
    for _ in progress.tqdm(range(int(steps)), desc="Denoising"):
        time.sleep(0.3)
    gr.Warning("Almost done")
    return f"{int(steps)} steps"


@zerogpu.GPU(duration=5)
def check(prompt: str) -> str:
    """gr.Error raised in the worker is the visitor's error toast."""
    if "forbidden" in prompt:
        raise gr.Error(f"Cannot draw {prompt!r}", title="Bad prompt")
    return "fine"


@zerogpu.GPU(duration=1)
def overrun(seconds: float) -> str:
    """Runs past its 1 s: a warning toast at the deadline, an error toast when aborted."""
    time.sleep(float(seconds))
    return "finished"


with gr.Blocks(title="zerogpu example") as demo:
    gr.Markdown("# zerogpu: `@zerogpu.GPU` in a Gradio app")
    prompt = gr.Textbox(label="Prompt", value="hello zerogpu")
    seconds = gr.Number(label="Seconds of (simulated) GPU work", value=1)
    out = gr.JSON(label="Result")
    streamed = gr.Textbox(label="Streamed")
    shouted = gr.Textbox(label="Shouted")
    gr.Button("Generate").click(generate, [prompt, seconds], out, api_name="generate",
                                concurrency_limit=None)
    gr.Button("Stream").click(stream, [prompt], streamed, api_name="stream",
                              concurrency_limit=None)
    gr.Button("Shout").click(shout, [prompt], shouted, api_name="shout", concurrency_limit=None)
    with gr.Row():
        steps = gr.Number(label="Steps", value=5)
        denoised = gr.Textbox(label="Denoised")
    gr.Button("Denoise (progress and toasts)").click(denoise, [steps], denoised,
                                                     api_name="denoise", concurrency_limit=None)
    gr.Button("Check (gr.Error)").click(check, [prompt], denoised, api_name="check",
                                        concurrency_limit=None)
    gr.Button("Overrun (aborted)").click(overrun, [seconds], denoised, api_name="overrun",
                                         concurrency_limit=None)

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("HOST", "127.0.0.1"),
                server_port=int(os.environ.get("PORT", "7860")))
