"""Inpainting folders of images: resumable atomic writes, a summary (the pairing: lama_fast.pairing).

    import lama_fast
    from lama_fast import batch

    plan = batch.plan_folder("photos", "out")        # NAME_mask*.png pairs with NAME.<ext>, as LaMa's predict.py
    summary = batch.run_batch(plan, load=lambda: lama_fast.load("big-lama.pt"))
    print(summary.line())   # 9 done, 3 skipped (output exists), 1 failed, 2 images without a mask, 4.2 s, 2.14 images/s

A run can be killed at any moment: every output is written to a temporary file in its
own folder and renamed into place, an existing output counts as done (skipped unless
``overwrite``), and the temporary files a killed run left are removed by the next one.
Outputs never replace inputs: ``plan_folder`` refuses such a plan with a ValueError, and an
output folder inside the input folder that holds image/mask pairs of it.

Several runs may share an output folder: each temporary file names its writer (see ``_io``), so a
run removes only those whose writer is gone, and a job whose output another run is writing is
put off to the end of the queue, where it counts as skipped if that run wrote it meanwhile and is
done again otherwise (the renames then replace one finished output by an equal one).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from ._io import atomic_target, atomic_write, remove_abandoned, temporary_in_use, temporary_target
from .images import read_image
from .pairing import (
    IMAGE_EXTENSIONS,
    MASK_MARKER,
    MASK_PATTERN,
    OUTPUT_FORMATS,
    Failure,
    FolderPlan,
    Job,
    Pair,
    Pairing,
    PathLike,
    check_output_folder,
    check_outputs,
    counted,
    output_suffix,
    pair_folder,
    plan_folder,
    plan_jobs,
)

__all__ = [
    "IMAGE_EXTENSIONS", "MASK_PATTERN", "MASK_MARKER", "OUTPUT_FORMATS", "Pair", "Failure", "Pairing", "Job",
    "FolderPlan", "pair_folder", "output_suffix", "plan_jobs", "check_outputs", "check_output_folder",
    "plan_folder", "SaveOptions", "Summary", "remove_leftovers", "being_written", "pending", "JobFailed",
    "read_pair", "pair_images", "renderable", "encoding", "save_image", "inpaint_images", "inpaint_job",
    "run_batch", "atomic_write",
]


@dataclass(frozen=True)
class SaveOptions:
    """How outputs are encoded: JPEG quality (1..100), PNG compression level (0..9, None: Pillow's 6)."""

    jpeg_quality: int = 95
    png_compress_level: Optional[int] = None

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.jpeg_quality}")
        if self.png_compress_level is not None and not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"PNG compression level must be in 0..9, got {self.png_compress_level}")


@dataclass
class Summary:
    """The outcome of a run; ``line()`` is the one-line report."""

    done: int = 0
    skipped: int = 0
    failures: List[Failure] = field(default_factory=list)
    unmasked: int = 0
    unused_masks: int = 0
    elapsed_s: float = 0.0
    model_loaded: bool = False
    interrupted: bool = False
    removed_leftovers: List[Path] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """``9 done, 3 skipped (output exists), 1 failed, 2 images without a mask, 4.2 s, 2.14 images/s``."""
        parts = [f"{self.done} done", f"{self.skipped} skipped (output exists)", f"{self.failed} failed",
                 counted(self.unmasked, "image") + " without a mask"]
        if self.unused_masks:
            parts.append(counted(self.unused_masks, "mask") + " without an image")
        parts += [f"{self.elapsed_s:.1f} s", f"{self.images_per_s:.2f} images/s"]
        return ", ".join(parts)


def _is_image_temporary(name: str) -> bool:
    target = temporary_target(Path(name))
    return target is not None and Path(target).suffix.lower() in IMAGE_EXTENSIONS


def remove_leftovers(jobs: Sequence[Job]) -> List[Path]:
    """Delete the temporary image files that killed or crashed writers left in the jobs' output folders.

    Only files named as ``atomic_write`` names them count, and of those only the ones whose writer is
    gone: those of a run still writing into the same folder are kept (see ``_io``).
    """
    removed = []
    for folder in sorted({job.output.parent for job in jobs}):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if _is_image_temporary(entry.name) and not entry.is_symlink() and entry.is_file() \
                    and remove_abandoned(entry):
                removed.append(entry)
    return removed


def being_written(output: Path) -> bool:
    """Whether a running process (another run) is writing ``output`` now, going by its temporary files."""
    output = Path(output)
    try:
        with os.scandir(output.parent) as entries:
            names = [e.name for e in entries if e.name.startswith(f".{output.name}.") and e.name.endswith(".tmp")]
    except OSError:  # no folder yet, or one this run cannot read: writing there will say why
        return False
    return any(temporary_target(Path(name)) == output.name and temporary_in_use(output.parent / name)
               for name in names)


def _version(path: Path) -> Optional[Tuple[int, int, int]]:
    """What tells one file at ``path`` from the next: a rename into place changes the inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def pending(jobs: Sequence[Job], overwrite: bool = False) -> List[Job]:
    """The jobs whose output does not exist yet (all of them with ``overwrite``)."""
    return list(jobs) if overwrite else [job for job in jobs if not job.output.exists()]


_RENDERABLE_MODES = ("RGB", "RGBA", "L", "LA")
_OTHER_COLOUR_SPACES = ("CMYK", "YCbCr", "LAB", "HSV")


class JobFailed(Exception):
    """One job could not be done; the message names the file and the reason."""


def read_pair(image_path: PathLike, mask_path: PathLike) -> Tuple[Image.Image, Image.Image]:
    """Read an image and its mask (EXIF orientation applied), checking that their sizes agree.

    The image comes back as :func:`renderable` makes it; every mask comes back as stored.
    """
    return pair_images(read_image(image_path, "image"), read_image(mask_path, "mask"), image_path, mask_path)


def pair_images(image: Image.Image, mask: Image.Image, image_name: PathLike, mask_name: PathLike
                ) -> Tuple[Image.Image, Image.Image]:
    """An image (as :func:`renderable` makes it) and its mask, once their sizes are seen to agree."""
    if mask.size != image.size:
        raise ValueError(f"mask {mask_name} is {mask.width}x{mask.height} but image {image_name} is "
                         f"{image.width}x{image.height}")
    return renderable(image), mask


def renderable(image: Image.Image) -> Image.Image:
    """Palette, bilevel and CMYK-like images as RGB(A) or L, so that a result is not re-quantised to a
    palette; RGB, RGBA, L and LA images as they are."""
    if image.mode in _RENDERABLE_MODES:
        return image
    alpha = image.mode in ("PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    converted = image.convert("L" if image.mode == "1" else "RGBA" if alpha else "RGB")
    if image.mode in _OTHER_COLOUR_SPACES:
        converted.info.pop("icc_profile", None)  # it describes the other colour space
    return converted


def encoding(image: Image.Image, path: Path, options: SaveOptions, icc_profile: Optional[bytes]
              ) -> Tuple[Image.Image, str, Dict[str, Any]]:
    """The image as it is saved (JPEG drops alpha), the Pillow format and the save parameters for ``path``."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"unknown output image format {path.suffix!r} of {path}; use .png or .jpg")
    params: Dict[str, Any] = {}
    if fmt == "JPEG":
        params["quality"] = options.jpeg_quality
        if image.mode not in ("RGB", "L"):
            # JPEG has no alpha: the colours are kept, the transparency is dropped.
            image = image.convert("L" if image.mode in ("LA", "La") else "RGB")
    elif fmt == "PNG" and options.png_compress_level is not None:
        params["compress_level"] = options.png_compress_level
    if icc_profile:
        params["icc_profile"] = icc_profile
    return image, fmt, params


def save_image(image: Image.Image, path: PathLike, options: SaveOptions = SaveOptions(),
               icc_profile: Optional[bytes] = None) -> None:
    """Encode ``image`` by ``path``'s suffix and write it atomically (temporary file, then rename)."""
    path = Path(path)
    image, fmt, params = encoding(image, path, options, icc_profile)
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **params))


def inpaint_job(inpainter: Callable[..., Any], job: Job, options: Optional[Dict[str, Any]] = None,
                save: SaveOptions = SaveOptions(), note: Callable[[str], None] = print) -> None:
    """Read, inpaint and atomically write one job; raises JobFailed naming the file and the reason.

    Warnings of the inpainter (e.g. the memory guard switching to ``crop``) go to ``note`` with the path.
    The output's temporary file is made before inpainting, so that other runs see the output is being
    written (``being_written``) while the model works on it.
    """
    try:
        image, mask = read_pair(job.image, job.mask)
    except (ValueError, OSError) as exc:  # the message names the file
        raise JobFailed(str(exc)) from exc
    except Exception as exc:  # a decoder's own error type
        raise JobFailed(f"cannot read {job.image} or {job.mask}: {type(exc).__name__}: {exc}") from exc
    try:
        with atomic_target(job.output) as tmp:
            result = inpaint_images(inpainter, job.image, image, mask, options, note)
            encoded, fmt, params = encoding(result, job.output, save, image.info.get("icc_profile"))
            encoded.save(tmp, format=fmt, **params)
    except (ValueError, OSError) as exc:
        raise JobFailed(f"cannot write {job.output}: {exc}") from exc


def inpaint_images(inpainter: Callable[..., Any], name: PathLike, image: Image.Image, mask: Image.Image,
                   options: Optional[Dict[str, Any]], note: Callable[[str], None]) -> Image.Image:
    """``inpainter(image, mask, **options)`` as a PIL image; JobFailed naming ``name``, warnings to ``note``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = inpainter(image, mask, **(options or {}))
        except (ValueError, TypeError, MemoryError) as exc:
            raise JobFailed(f"cannot inpaint {name}: {exc}") from exc
        except Exception as exc:
            raise JobFailed(f"cannot inpaint {name}: {type(exc).__name__}: {exc}") from exc
    for warning in caught:
        note(f"{name}: {warning.message}")
    return result if isinstance(result, Image.Image) else Image.fromarray(result)


def run_batch(plan: FolderPlan, inpainter: Optional[Callable[..., Any]] = None, *,
              load: Optional[Callable[[], Callable[..., Any]]] = None, overwrite: bool = False,
              options: Optional[Dict[str, Any]] = None, save: SaveOptions = SaveOptions(),
              progress: bool = True, report: Optional[Callable[[str], None]] = None, lanes: int = 1) -> Summary:
    """Inpaint every job of ``plan`` whose output is missing (all with ``overwrite``), going on past bad files.

    Give the ``inpainter``, or ``load`` to build one on the first job that needs it (so a run with
    nothing to do never loads the model). ``options`` are passed to every ``inpainter(image, mask,
    **options)`` call. Failures and warnings go to ``report`` (default: stderr, above the progress bar).
    Temporary files left in the output folders by a killed run are removed first. A KeyboardInterrupt
    ends the run early with ``summary.interrupted`` set: the outputs written so far are complete, and
    a second run with the same jobs does the rest. Other runs may write into the same folders at the
    same time: an output another run writes (or has written since this run began) is skipped.

    ``lanes`` > 1 keeps that many images in flight, each on a thread of its own running one torch
    thread (one image per core: on small images this beats one image at a time on all cores,
    ``bench/results/cpu_lean.md``); the inpainter is then called from several threads at once, and
    each image in flight holds its own activations. torch's thread count is restored afterwards.
    """
    if (inpainter is None) == (load is None):
        raise TypeError("run_batch takes either an inpainter or a load function")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise ValueError(f"lanes must be an integer >= 1, got {lanes!r}")
    from tqdm import tqdm

    start = time.perf_counter()
    jobs = plan.jobs
    summary = Summary(removed_leftovers=remove_leftovers(jobs), model_loaded=inpainter is not None,
                      failures=list(plan.failures), unmasked=len(plan.unmasked),
                      unused_masks=len(plan.unused_masks))
    todo = pending(jobs, overwrite)
    summary.skipped = len(jobs) - len(todo)
    bar = tqdm(total=len(todo), unit="image", file=sys.stderr, disable=not progress or not todo,
               dynamic_ncols=True)
    say = report or (lambda message: bar.write(message, file=sys.stderr))
    for failure in plan.failures:
        say(f"failed: {failure.message}")
    queue = deque(todo)
    put_off: Dict[Job, Optional[Tuple[int, int, int]]] = {}  # job -> its output when it was put off
    pool = _Lanes(lanes) if lanes > 1 else None

    def finished(job: Job, error: Optional[JobFailed]) -> None:
        if error is None:
            summary.done += 1
        else:
            summary.failures.append(Failure(job.mask, str(error)))
            say(f"failed: {error}")
        bar.update()

    try:
        while queue or (pool and pool.busy):
            if pool and (pool.full or not queue):
                for job, error in pool.wait():
                    finished(job, error)
                continue
            job = queue.popleft()
            if job in put_off:
                # If the output is unchanged, the other run failed, was stopped or is still at it: do it here too.
                written = _version(job.output) != put_off.pop(job)
            else:
                written = not overwrite and job.output.exists()
                if not written and being_written(job.output):
                    put_off[job] = _version(job.output)
                    queue.append(job)
                    if pool and pool.busy and all(j in put_off for j in queue):
                        for done_job, error in pool.wait():  # let the lanes finish before polling again
                            finished(done_job, error)
                    continue
            if written:
                summary.skipped += 1
                bar.update()
                continue
            if inpainter is None:
                inpainter = load()  # an error here ends the run: no job can go on without the model
                summary.model_loaded = True
            if pool:
                pool.submit(job, inpaint_job, inpainter, job, options, save, say)
                continue
            try:
                inpaint_job(inpainter, job, options, save, note=say)
            except JobFailed as exc:
                finished(job, exc)
            else:
                finished(job, None)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if pool:
            for job, error in pool.close():  # the images in flight are finished, never cut off
                finished(job, error)
        bar.close()
        summary.elapsed_s = time.perf_counter() - start
    return summary


class _Lanes:
    """Up to ``count`` jobs in flight, each on a worker thread with one torch thread."""

    def __init__(self, count: int) -> None:
        import torch
        from concurrent.futures import ThreadPoolExecutor

        self.count = count
        self._torch = torch
        self._threads = torch.get_num_threads()
        self._executor = ThreadPoolExecutor(count, thread_name_prefix="lama-fast-lane",
                                            initializer=torch.set_num_threads, initargs=(1,))
        self._futures: Dict[Any, Job] = {}

    @property
    def busy(self) -> bool:
        return bool(self._futures)

    @property
    def full(self) -> bool:
        return len(self._futures) >= self.count

    def submit(self, job: Job, fn: Callable[..., None], *args: Any) -> None:
        self._futures[self._executor.submit(fn, *args)] = job

    def _results(self, futures) -> List[Tuple[Job, Optional[JobFailed]]]:
        results = []
        for future in futures:
            job = self._futures.pop(future)
            error = future.exception()
            if error is not None and not isinstance(error, JobFailed):
                raise error
            results.append((job, error))
        return results

    def wait(self) -> List[Tuple[Job, Optional[JobFailed]]]:
        """The jobs that finished, waiting for at least one."""
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        return self._results(done)

    def close(self) -> List[Tuple[Job, Optional[JobFailed]]]:
        """Wait for every job in flight, stop the threads and give torch its thread count back."""
        try:
            self._executor.shutdown(wait=True)
            return self._results(list(self._futures))
        finally:
            self._torch.set_num_threads(self._threads)
