"""
An unmodified-style Hugging Face Space: `import spaces`, `@spaces.GPU`, Gradio.

It runs against zerogpud exactly as it would on the hosted ZeroGPU; only the
environment differs (see docs/spaces-compat.md):

    SPACES_ZERO_GPU=true SPACES_ZERO_DEVICE_API_URL=http://127.0.0.1:8470 python app.py

The "GPU work" here is CPU work (a sleep and a string transform) so that the
example runs on any machine; a real Space would run its model here.
"""
import os
import time

import spaces  # before gradio's heavy imports, as on the hosted platform
import gradio as gr


@spaces.GPU(duration=20)
def generate(prompt: str, seconds: float) -> dict:
    """Runs in a worker process holding a zerogpud lease on one device."""
    time.sleep(max(0.0, float(seconds)))
    return {
        "result": prompt[::-1],
        "worker_pid": os.getpid(),
        "app_pid": os.getppid(),
    }


@spaces.GPU(duration=20)
def stream(prompt: str):
    """Generators stream each item back as it is produced."""
    for i, word in enumerate(prompt.split(), start=1):
        time.sleep(0.1)
        yield " ".join(prompt.split()[:i])


with gr.Blocks(title="zerogpu spaces example") as demo:
    gr.Markdown("# zerogpu: an unmodified `spaces` app")
    prompt = gr.Textbox(label="Prompt", value="hello zerogpu")
    seconds = gr.Number(label="Seconds of (simulated) GPU work", value=1)
    out = gr.JSON(label="Result")
    streamed = gr.Textbox(label="Streamed")
    gr.Button("Generate").click(generate, [prompt, seconds], out, api_name="generate",
                                concurrency_limit=None)
    gr.Button("Stream").click(stream, [prompt], streamed, api_name="stream",
                              concurrency_limit=None)

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("HOST", "127.0.0.1"),
                server_port=int(os.environ.get("PORT", "7860")))
