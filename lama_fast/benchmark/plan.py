"""What a run of ``lama-fast bench`` measures: the suites, their blocks and systems, the aliases on the
command line, and the run's configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

SUITES = ("kernels", "e2e")
KERNEL_BLOCKS = ("fourier_unit", "spectral_transform", "ffc_layer")
KERNEL_SYSTEMS = ("eager", "channels_last", "ours")
KERNEL_SIZES = (64, 128, 256)
PEER_SYSTEMS = ("compile", "openvino-f32", "openvino-bf16", "onnxruntime")
OURS_SYSTEMS = ("ours-f32", "ours-bf16")
E2E_SYSTEMS = ("eager", "channels_last") + PEER_SYSTEMS + OURS_SYSTEMS
E2E_SIZES = (512, 1024, 2048)
# Names that stand for several systems on the command line.
SYSTEM_ALIASES: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "kernels": {"reference": ("eager", "channels_last"), "all": KERNEL_SYSTEMS},
    "e2e": {
        "ours": OURS_SYSTEMS,
        "openvino": ("openvino-f32", "openvino-bf16"),
        "peers": PEER_SYSTEMS,
        "reference": ("eager", "channels_last"),
        "all": E2E_SYSTEMS,
    },
}


def _suite_systems(suite: str) -> Tuple[str, ...]:
    return KERNEL_SYSTEMS if suite == "kernels" else E2E_SYSTEMS


def expand_systems(suite: str, names: Optional[Iterable[str]]) -> List[str]:
    """Resolve system names and aliases ('ours', 'peers', 'all', ...) to this suite's systems, in order.

    Names that belong to the other suite only are dropped, so one ``--systems``
    list serves both suites; a name neither suite knows raises.
    """
    known = _suite_systems(suite)
    if names is None:
        return list(known)
    out: List[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in SYSTEM_ALIASES[suite]:
            expanded = SYSTEM_ALIASES[suite][name]
        elif name in known or (suite == "e2e" and name.startswith("backend:")):
            expanded = (name,)
        elif name.startswith("backend:") or any(
                name in SYSTEM_ALIASES[s] or name in _suite_systems(s) for s in SUITES):
            expanded = ()
        else:
            raise ValueError(f"unknown system {name!r}; kernel systems: {', '.join(KERNEL_SYSTEMS)}; "
                             f"end-to-end systems: {', '.join(E2E_SYSTEMS)}, backend:NAME; "
                             f"aliases: ours, openvino, peers, reference, all")
        out.extend(s for s in expanded if s not in out)
    return out


@dataclass
class BenchConfig:
    """What to run and how: the model, the repetition counts, isolation and the cache of reference outputs."""

    model: Union[str, Dict[str, Any]] = "big-lama"
    checkpoint: Optional[str] = None
    seed: int = 0
    repeats: int = 3
    warmup: int = 1
    isolate: bool = True
    parity: bool = True
    cache_dir: str = os.path.join("bench", ".cache")
    dtype: str = "float32"
    device: str = "cpu"
    job_timeout_s: Optional[float] = None
    blocks: Sequence[str] = KERNEL_BLOCKS
