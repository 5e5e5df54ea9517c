"""The memory guard: estimate a run's peak memory before it starts, and compare it with what is free.

The estimate is the extra resident memory of one generator call on a fresh
process (VmHWM after the call minus VmRSS before it, weights already loaded),
measured for big-lama at several square sizes per backend and dtype, and
interpolated linearly in the pixel count of the padded input; above the largest
measured size it grows by the larger of the last segment's slope and the
largest measurement's bytes per pixel.  The
image pipeline around the generator (the padded float image, mask, network
input and output, the blend) adds ``PIPELINE_BYTES_PER_PIXEL`` per input pixel
and element size.  ``MEASURED`` holds the table and says where it came from;
``bench/results/memory.md`` lists the measurements.

What is free is the smaller of the kernel's ``MemAvailable`` and the room left
under the process's cgroup memory limit, if it has one.  CUDA devices are not
guarded (no measurements), nor are models other than the ones measured when
the caller sets no ``max_memory``.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

# (backend, dtype) -> ((pixels, extra bytes), ...) for big-lama on the 2-core development machine
# (torch 2.13.0+cpu), made by bench/memory_table.py; the cpu backend stripes its full-resolution
# layers above 160 MB, hence the bend between 768^2 and 1024^2.
MEASURED: Dict[Tuple[str, str], Sequence[Tuple[int, int]]] = {
    ("cpu", "float32"): ((65536, 82325504), (262144, 361750528), (589824, 787001344), (1048576, 611274752),
                         (2359296, 946941952), (4194304, 954597376)),
    ("cpu", "bfloat16"): ((262144, 295301120), (1048576, 1134579712), (4194304, 931192832)),
    ("cpu", "float64"): ((65536, 1666088960), (262144, 7008555008)),
    ("reference", "float32"): ((65536, 63041536), (262144, 299847680), (1048576, 1171857408), (4194304, 3797639168)),
    ("reference", "float64"): ((65536, 1661722624), (147456, 3719540736), (262144, 6734143488)),
}

# Bytes per input pixel per element byte that Inpainter adds around the generator: the
# image in the compute dtype, padded copy, mask, network input (4 channels), output,
# blend and the uint8 result (counted as 20 elements, rounded up).
PIPELINE_ELEMENTS_PER_PIXEL = 20
# Headroom on top of the estimate for allocator fragmentation and measurement spread.
SAFETY = 1.15

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


class InsufficientMemoryError(MemoryError):
    """A run would need more memory than is available (or allowed by ``max_memory``)."""


def parse_size(value: Union[int, str]) -> int:
    """Bytes from an int or a string like ``4G``, ``512M``, ``1.5GiB`` (powers of 1024)."""
    if isinstance(value, bool):
        raise TypeError("max_memory must be a number of bytes or a string such as '4G', got bool")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"max_memory must be positive, got {value}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"max_memory must be a number of bytes or a string such as '4G', got {type(value).__name__}")
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
    if match is None or match.group(2).upper() not in _UNITS:
        raise ValueError(f"max_memory must look like 4G, 512M or 2000000000; got {value!r}")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size <= 0:
        raise ValueError(f"max_memory must be positive, got {value!r}")
    return size


def format_bytes(size: int) -> str:
    """A byte count for messages: ``1.50 GiB``, ``300 MiB``, ``12 KiB``, ``512 bytes``."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.2f} GiB"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.0f} KiB"
    return f"{size} byte" + ("" if size == 1 else "s")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _interpolate(points: Sequence[Tuple[int, int]], pixels: int) -> float:
    points = sorted(points)
    # The running maximum: a larger input never needs less than a smaller measured one.
    envelope, high = [], 0
    for px, extra in points:
        high = max(high, extra)
        envelope.append((px, high))
    if pixels <= envelope[0][0]:
        return envelope[0][1] * pixels / envelope[0][0]
    for (p0, e0), (p1, e1) in zip(envelope, envelope[1:]):
        if pixels <= p1:
            return e0 + (e1 - e0) * (pixels - p0) / (p1 - p0)
    last_px, last = envelope[-1]
    slope = last / last_px
    if len(envelope) > 1:
        slope = max(slope, (last - envelope[-2][1]) / (last_px - envelope[-2][0]))
    return last + slope * (pixels - last_px)


# Crop planning (lama_fast.hd): extra peak memory of its two stages on the development machine,
# measured by bench/crop_plan_bench.py --stages over masks from one blob to millions of regions
# (bench/results/crop_plan.md), rounded up.  Finding the regions reads the mask in bands and keeps a
# few numbers per component it meets (hd.grouping_size bounds both); merging keeps a few arrays per
# region box, compares a few boxes pair by pair or draws rasters in bands, and makes the plan's Box
# tuples.
PLAN_BYTES_PER_BAND_CELL = 8
PLAN_BYTES_PER_GRID_CELL = 8
PLAN_BYTES_PER_BAND_RUN = 160
PLAN_BYTES_PER_COMPONENT = 160
PLAN_BYTES_PER_BOX = 352
PLAN_RASTER_BYTES = 32 << 20


def estimate_grouping_bytes(band_cells: int, band_runs: int, components: int, grid_cells: int = 0) -> int:
    """Estimated extra memory of hd.crop_regions, from the counts of hd.grouping_size."""
    total = PLAN_BYTES_PER_BAND_CELL * band_cells + PLAN_BYTES_PER_BAND_RUN * band_runs
    total += PLAN_BYTES_PER_COMPONENT * components + PLAN_BYTES_PER_GRID_CELL * grid_cells
    return int(total * SAFETY)


def estimate_merging_bytes(boxes: int) -> int:
    """Estimated extra memory of merging ``boxes`` crop boxes (hd.merge_crops, then hd.as_boxes)."""
    # A few boxes are compared pair by pair (their square, in slices); more are drawn band by band.
    return int((PLAN_BYTES_PER_BOX * boxes + min(PLAN_RASTER_BYTES, 16 * boxes * boxes)) * SAFETY)


def estimate_peak_bytes(backend: str, dtype: torch.dtype, height: int, width: int) -> Optional[int]:
    """Estimated extra memory of one inpainting run at height×width on ``backend`` in ``dtype``,
    the padding to a multiple of 8 included; None when there is no measurement for them."""
    points = MEASURED.get((backend, _dtype_name(dtype)))
    if not points:
        return None
    pixels = (-(-height // 8) * 8) * (-(-width // 8) * 8)
    element = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    # A bfloat16 model takes float32 in and out.
    element = max(element, 4)
    total = _interpolate(points, pixels) + PIPELINE_ELEMENTS_PER_PIXEL * element * pixels
    return int(total * SAFETY)


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> Optional[int]:
    """Bytes left under this process's cgroup memory limit, or None without a limit."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":  # cgroup v2
            base = "/sys/fs/cgroup" + parts[2]
            limit = _read_int(os.path.join(base, "memory.max"))
            used = _read_int(os.path.join(base, "memory.current"))
        elif "memory" in parts[1].split(","):  # cgroup v1
            base = "/sys/fs/cgroup/memory" + parts[2]
            limit = _read_int(os.path.join(base, "memory.limit_in_bytes"))
            used = _read_int(os.path.join(base, "memory.usage_in_bytes"))
        else:
            continue
        if limit is not None and used is not None and limit < (1 << 60):
            return max(0, limit - used)
    return None


def available_bytes() -> Optional[int]:
    """Memory a new allocation can get: min(MemAvailable, room under the cgroup limit); None if unknown."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    room = _cgroup_room()
    candidates = [v for v in (available, room) if v is not None]
    return min(candidates) if candidates else None


def release_free_heap() -> bool:
    """Hand the free pages of the C heap back to the system (glibc's ``malloc_trim``).

    Memory freed inside the heap (a generator's weights dropped after its fast copy
    was built, say) stays resident until then.  False where there is no glibc.
    """
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim(ctypes.c_size_t(0))
    return True

