"""Where the spectral transform's GEMM time goes on a GPU: each of the three GEMMs of the Triton op
against cuBLAS on the same shapes, with the input layouts the op sees (diagnostics, one GPU run).

    python3 bench/gemm_probe.py [SIDE] [OUT.json]     # SIDE of the 384-channel map, default 256

The kernels are launched as the op launches them in eager mode, with ``wrap_triton`` disabled:
called from plain Python, ``wrap_triton`` dispatches a higher-order op per launch, whose host
time (about 1 ms here) would hide the kernels' own.
"""

import json
import sys

import torch
from torch._library.triton import set_wrap_triton_enabled

from gpu_common import time_gpu  # bench/, beside this script
from lama_fast.kernels import gemm
from lama_fast.kernels import spectral as k


def main():
    dev = torch.device("cuda")
    rows = []
    c_in, c_half, side = 384, 192, int(sys.argv[1]) if len(sys.argv) > 1 else 256
    wf = side // 2 + 1
    p, pf = side * side, side * wf
    for dtype in (torch.bfloat16, torch.float32):
        dot = k.dot_mode(dtype)
        w1 = torch.randn(c_half, c_in, device=dev) / 20
        b1 = torch.randn(c_half, device=dev)
        wq = torch.randn(2 * c_half, 2 * c_half, device=dev) / 20
        bq = torch.randn(2 * c_half, device=dev)
        w2 = torch.randn(c_in, c_half, device=dev) / 20
        x_cl = torch.randn(1, c_in, side, side, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x_nchw = x_cl.contiguous()
        spec = torch.randn(1, c_half, side, wf, dtype=torch.complex64, device=dev)
        y = torch.randn(1, c_half, side, side, device=dev)
        u = torch.randn(1, c_half, side, side, device=dev)
        flops = {"in": 2 * c_half * c_in * p, "freq": 2 * (2 * c_half) ** 2 * pf, "out": 2 * c_in * c_half * p}
        cases = {
            "in, x channels_last": (lambda: k.conv1x1_in(x_cl, w1, b1), "in"),
            "in, x NCHW": (lambda: k.conv1x1_in(x_nchw, w1, b1), "in"),
            "freq (complex in place)": (lambda: k.frequency_mix(spec, wq, bq, dot=dot), "freq"),
            "out, y+u fp32 NCHW -> channels_last": (lambda: k.conv1x1_out(y, u, w2, None, None, False, dtype), "out"),
        }
        a_in = x_nchw.view(c_in, p)
        a_q = torch.randn(2 * c_half, pf, device=dev, dtype=dtype)
        a_out = (y + u).to(dtype).view(c_half, p)
        w1d, wqd, w2d = w1.to(dtype), wq.to(dtype), w2.to(dtype)
        cases["cuBLAS in (NCHW)"] = (lambda: torch.mm(w1d, a_in), "in")
        cases["cuBLAS freq (real)"] = (lambda: torch.mm(wqd, a_q), "freq")
        cases["cuBLAS out (NCHW)"] = (lambda: torch.mm(w2d, a_out), "out")
        for name, (fn, kind) in cases.items():
            with set_wrap_triton_enabled(False):
                ms = time_gpu(fn, warmup=1, repeats=30)["median_ms"]  # torch.backends.cuda.matmul.allow_tf32 is False by default: cuBLAS fp32 is exact too
            row = dict(dtype=str(dtype), side=side, case=name, ms=round(ms, 4), tflops=round(flops[kind] / ms / 1e9, 1))
            rows.append(row)
            print(f"{str(dtype):15s} {side}^2 {name:40s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s", flush=True)
        for d, kern in gemm._KERNELS.items():
            best = getattr(kern, "best_config", None)
            if best is not None:
                print(f"  dot {gemm.DOT_NAMES[d]}: last best config {best}")
    json.dump(rows, open(sys.argv[2] if len(sys.argv) > 2 else "gemm_probe.json", "w"), indent=1)


if __name__ == "__main__":
    main()
