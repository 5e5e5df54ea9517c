"""CUDA-graph inference: a forward captured once per input shape and replayed.

At batch 1 a LaMa forward is ~400-500 kernel launches at 1/8 resolution, and
launching them costs more CPU time than the GPU needs to run them; a replayed
graph launches them all at once.  ``GraphCache`` keeps the graphs of the most
recently used input shapes (each graph holds its own memory pool);
``CudaGraphed`` wraps any module with one (``optimize(..., cuda_graphs=True)``
for backends whose module has no graphs of its own).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

__all__ = ["GraphCache", "CudaGraphed"]


class GraphCache:
    """Captured graphs of ``fn`` keyed by the input's shape, dtype and device (and ``extra_key``)."""

    def __init__(self, max_graphs: int = 4) -> None:
        self.max_graphs = max_graphs
        self.error: Optional[str] = None  # set when a capture failed; graphs are then off
        self._graphs: Dict[Tuple, Tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Drop the captured graphs and the memory they hold."""
        self._graphs.clear()

    def run(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, extra_key: Tuple = ()) -> torch.Tensor:
        """``fn(x)``, through the graph captured for this input (captured now if new).

        When capturing fails (something in ``fn`` cannot be captured), ``error`` says why and
        ``fn`` runs eagerly, now and for every later call."""
        if self.error is not None:
            return fn(x)
        key = (tuple(x.shape), x.dtype, x.device) + tuple(extra_key)
        entry = self._graphs.pop(key, None)
        if entry is None:
            while len(self._graphs) >= max(1, self.max_graphs):
                self._graphs.pop(next(iter(self._graphs)))
            static_in = x.detach().clone()
            # A first run outside the capture autotunes kernels and makes FFT plans and cuBLAS handles.
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                fn(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    static_out = fn(static_in)
            except RuntimeError as error:
                self.error = f"{type(error).__name__}: {error}"
                self._graphs.clear()
                return fn(x)
            entry = (graph, static_in, static_out)
        self._graphs[key] = entry
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


class CudaGraphed(nn.Module):
    """``module`` run through CUDA graphs on CUDA inputs (eagerly elsewhere), without gradients."""

    def __init__(self, module: nn.Module, max_graphs: int = 4) -> None:
        super().__init__()
        self.module = module
        self.graphs = GraphCache(max_graphs)

    @property
    def graph_error(self) -> Optional[str]:
        return self.graphs.error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if torch.is_tensor(x) and x.is_cuda and not torch.cuda.is_current_stream_capturing():
                return self.graphs.run(self.module, x, (torch.backends.cudnn.allow_tf32,
                                                        torch.backends.cuda.matmul.allow_tf32))
            return self.module(x)
