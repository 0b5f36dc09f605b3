"""`grace kernels`: which packed-matmul backends this machine can run, best first."""

from __future__ import annotations

import typer

from grace.cli.main import app


@app.command("kernels")
def kernels_cmd(
    device: str = typer.Option("cpu", help="device to plan for: cpu or cuda"),
    dtype: str = typer.Option("bfloat16", help="activation dtype: bfloat16, float16 or float32"),
) -> None:
    """List the available kernel backends per bit width (the first is what attach picks)."""
    import torch

    import grace.kernels as K

    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(dtype)
    if dt is None:
        raise K.KernelError(f"--dtype must be bfloat16, float16 or float32; got {dtype!r}")
    for bits in (4, 8):
        names = K.available_backends(bits, device, dt)
        print(f"W{bits} on {device} ({dtype}): {', '.join(names)}")
    for name in K.backend_names():
        b = K.get_backend(name)
        dev = torch.device(device)
        if dev.type in b.devices and not b.is_available(dev):
            print(f"  unavailable: {name}: {b.unavailable_reason(dev)}")
