"""Inpainting folders of images: pairing masks with images, resumable atomic writes, a summary.

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

import fnmatch
import os
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from PIL import Image

from ._io import atomic_target, atomic_write, remove_abandoned, temporary_in_use, temporary_target
from .images import read_image

PathLike = Union[str, "os.PathLike[str]"]

# Extensions (lower case) of the files that are read as images, in the order a pairing reports them.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# The original's glob ('**/*mask*.png', case-sensitive) and the cut it makes to find the image.
MASK_PATTERN = "*mask*.png"
MASK_MARKER = "_mask"
OUTPUT_FORMATS = ("png", "jpg", "same")


@dataclass(frozen=True)
class Pair:
    """An image, its mask, and the output's path relative to the output folder, without suffix."""

    image: Path
    mask: Path
    name: PurePosixPath


@dataclass(frozen=True)
class Failure:
    """A file that could not be inpainted; ``message`` names the file and the reason."""

    path: Path
    message: str


@dataclass
class Pairing:
    """What a folder holds: the pairs to inpaint, masks that cannot be, and images without a mask."""

    pairs: List[Pair] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)
    unmasked: List[Path] = field(default_factory=list)
    unused_masks: List[Path] = field(default_factory=list)  # --mask-dir only: masks with no image
    inputs: List[Path] = field(default_factory=list)  # every image and mask file seen


@dataclass(frozen=True)
class Job:
    """One output to make: inpaint ``image`` under ``mask`` into ``output``."""

    image: Path
    mask: Path
    output: Path


@dataclass
class FolderPlan:
    """The jobs of a folder run, and what cannot be done or has nothing to do."""

    jobs: List[Job] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)  # known before running: pairing problems
    unmasked: List[Path] = field(default_factory=list)
    unused_masks: List[Path] = field(default_factory=list)


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
                 _count(self.unmasked, "image") + " without a mask"]
        if self.unused_masks:
            parts.append(_count(self.unused_masks, "mask") + " without an image")
        parts += [f"{self.elapsed_s:.1f} s", f"{self.images_per_s:.2f} images/s"]
        return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _walk(root: Path, exclude: Sequence[Path]) -> List[Path]:
    """Files under ``root``, sorted, without hidden files and folders (as glob) or the ``exclude`` folders."""
    excluded = {p.resolve() for p in exclude}
    found = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in excluded)
        found.extend(here / f for f in sorted(files) if not f.startswith("."))
    return found


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _relative_stem(path: Path, root: Path) -> PurePosixPath:
    return PurePosixPath(path.relative_to(root).with_suffix("").as_posix())


def pair_folder(input_dir: PathLike, mask_dir: Optional[PathLike] = None,
                exclude: Iterable[PathLike] = ()) -> Pairing:
    """Pair the masks in ``input_dir`` with their images (LaMa's rule), or with ``mask_dir``'s masks by name.

    Without ``mask_dir``: every ``*mask*.png`` under ``input_dir`` (recursive) is a mask; its image is the
    file next to it named as the mask cut at its last ``_mask``, with any image extension
    (``a_mask001.png`` -> ``a.png``, ``a.jpg``, ...); several masks may share an image; the output is
    named after the mask. With ``mask_dir``: the image ``input_dir/sub/a.jpg`` pairs with the one file
    ``mask_dir/sub/a.<any image extension>``; the output is named after the image.
    Folders in ``exclude`` (e.g. the output folder) are not read. Problems are collected, not raised.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    excluded = [Path(p) for p in exclude]
    if mask_dir is None:
        return _pair_by_mask_names(root, _walk(root, excluded))
    masks_root = Path(mask_dir)
    if not masks_root.is_dir():
        raise FileNotFoundError(f"mask folder {masks_root} does not exist or is not a folder")
    images = [p for p in _walk(root, excluded + [masks_root]) if _is_image_file(p)]
    masks = [p for p in _walk(masks_root, excluded) if _is_image_file(p)]
    return _pair_by_equal_names(root, images, masks_root, masks)


def _pair_by_mask_names(root: Path, files: List[Path]) -> Pairing:
    by_folder: Dict[Path, Dict[str, Path]] = {}
    for path in files:
        by_folder.setdefault(path.parent, {})[path.name] = path
    pairing = Pairing()
    candidates = [p for p in files if fnmatch.fnmatchcase(p.name, MASK_PATTERN)]
    used_as_image = set()
    found: List[Tuple[Path, List[Path], str]] = []
    for mask in candidates:
        stem = mask.name[: -len(".png")]
        cut = stem.rfind(MASK_MARKER)
        if cut < 0:
            found.append((mask, [], f"mask {mask} has no '{MASK_MARKER}' in its name to find its image by "
                                     f"(name masks NAME{MASK_MARKER}*.png, next to NAME.png or NAME.jpg)"))
            continue
        prefix = stem[:cut]
        siblings = by_folder[mask.parent]
        images = [siblings[n] for n in sorted(siblings) if n != mask.name and _is_image_file(siblings[n])
                  and siblings[n].stem == prefix]
        used_as_image.update(images)
        found.append((mask, images, f"no image {mask.parent / prefix}.* for mask {mask}"))
    for mask, images, missing in found:
        if len(images) == 1:
            pairing.pairs.append(Pair(images[0], mask, _relative_stem(mask, root)))
        elif len(images) > 1:
            names = ", ".join(p.name for p in images)
            pairing.failures.append(Failure(mask, f"mask {mask} matches several images: {names}"))
        elif mask not in used_as_image:
            # A *mask*.png that another mask names as its image is an image, not a broken mask.
            pairing.failures.append(Failure(mask, missing))
    masks = {mask for mask, _, _ in found}
    pairing.unmasked = [p for p in files if _is_image_file(p) and p not in masks and p not in used_as_image]
    pairing.inputs = [p for p in files if _is_image_file(p)]
    return pairing


def _pair_by_equal_names(root: Path, images: List[Path], masks_root: Path, masks: List[Path]) -> Pairing:
    masks_by_stem: Dict[PurePosixPath, List[Path]] = {}
    for mask in masks:
        masks_by_stem.setdefault(_relative_stem(mask, masks_root), []).append(mask)
    pairing = Pairing(inputs=images + masks)
    used = set()
    for image in images:
        stem = _relative_stem(image, root)
        found = masks_by_stem.get(stem, [])
        used.add(stem)
        if not found:
            pairing.unmasked.append(image)
        elif len(found) > 1:
            names = ", ".join(p.name for p in found)
            pairing.failures.append(Failure(image, f"image {image} matches several masks in {masks_root}: {names}"))
        else:
            pairing.pairs.append(Pair(image, found[0], stem))
    pairing.unused_masks = [m for stem, group in masks_by_stem.items() if stem not in used for m in group]
    return pairing


def output_suffix(image: Path, output_format: str) -> str:
    """``.png``, ``.jpg``, or the image's own suffix for ``same``."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    return image.suffix if output_format == "same" else "." + output_format


def plan_jobs(pairing: Pairing, output_dir: PathLike, output_format: str = "png"
              ) -> Tuple[List[Job], List[Failure]]:
    """The output path of every pair, ``output_dir / name + suffix``, and the pairs that would write
    the same output (``a.jpg`` and ``a.png`` under one mask with ``--mask-dir``) as failures."""
    out = Path(output_dir)
    targets = [out / (str(pair.name) + output_suffix(pair.image, output_format)) for pair in pairing.pairs]
    writers: Dict[Path, List[Path]] = {}
    for pair, target in zip(pairing.pairs, targets):
        writers.setdefault(target, []).append(pair.image)
    jobs, failures = [], []
    for pair, target in zip(pairing.pairs, targets):
        if len(writers[target]) == 1:
            jobs.append(Job(pair.image, pair.mask, target))
        else:
            names = " and ".join(str(image) for image in writers[target])
            failures.append(Failure(pair.image, f"{names} would both be written to {target}"))
    return jobs, failures


def check_outputs(pairing: Pairing, jobs: Sequence[Job], output_dir: PathLike,
                  input_dirs: Iterable[Optional[PathLike]] = ()) -> None:
    """Raise ValueError when an output would replace an input image or mask, or when the output
    folder is one of ``input_dirs`` (the input and mask folders)."""
    out = Path(output_dir)
    for kind, folder in zip(("input", "mask"), input_dirs):
        if folder is not None and out.resolve() == Path(folder).resolve():
            raise ValueError(f"refusing to overwrite input files: the output folder {out} is the {kind} folder; "
                             f"choose an output folder apart from the inputs")
    inputs = {p.resolve(): p for p in pairing.inputs}
    clashes = [(job.output, inputs[job.output.resolve()]) for job in jobs if job.output.resolve() in inputs]
    if clashes:
        output, source = clashes[0]
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise ValueError(f"refusing to overwrite input files: the output {output} would replace the input "
                         f"{source}{more}; choose an output folder apart from the inputs")


def _real(path: Path) -> Path:
    """``path`` with its folders' links and ``..`` resolved, but not a link that the file itself is."""
    return path.parent.resolve() / path.name


def check_output_folder(input_dir: PathLike, output_dir: PathLike, mask_dir: Optional[PathLike] = None,
                        jobs: Sequence[Job] = ()) -> None:
    """Raise ValueError when the output folder lies inside the input (or mask) folder and holds
    image/mask pairs of it: a run would skip them unseen, or with ``overwrite`` write over them.

    Pairs made only of ``jobs``' outputs (an earlier run's results) do not count.
    """
    out = Path(output_dir).resolve()
    for kind, folder in (("input", input_dir), ("mask", mask_dir)):
        if folder is None or Path(folder).resolve() not in out.parents:
            continue
        ours = {_real(job.output) for job in jobs}
        inside = []
        for pair in pair_folder(input_dir, mask_dir).pairs:
            image, mask = _real(pair.image), _real(pair.mask)
            if image in ours and mask in ours:
                continue
            held = [p for p in (image, mask) if out in p.parents]
            if held:
                inside.append(held[0].relative_to(out).as_posix())
        if inside:
            raise ValueError(f"{output_dir}: the output folder holds {_count(len(inside), 'image/mask pair')} of "
                             f"the {kind} folder (e.g. {inside[0]}); choose an output folder outside {folder} "
                             f"or move them")
        return


def plan_folder(input_dir: PathLike, output_dir: PathLike, mask_dir: Optional[PathLike] = None,
                output_format: str = "png") -> FolderPlan:
    """Pair the folder's masks and images (see ``pair_folder``) and name their outputs under ``output_dir``.

    ``output_format``: ``png``, ``jpg`` or ``same`` (the image's own suffix). An output folder inside the
    input folder is not read as input. Raises ValueError when an output would replace an input file, or
    when an output folder inside the input folder holds image/mask pairs (``check_output_folder``).
    """
    pairing = pair_folder(input_dir, mask_dir, exclude=[output_dir])
    jobs, clashes = plan_jobs(pairing, output_dir, output_format)
    check_outputs(pairing, jobs, output_dir, (input_dir, mask_dir))
    check_output_folder(input_dir, output_dir, mask_dir, jobs)
    return FolderPlan(jobs, pairing.failures + clashes, pairing.unmasked, pairing.unused_masks)


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

    Palette, bilevel and CMYK-like images come back as RGB(A) or L, so that the result is not
    re-quantised to a palette; RGB, RGBA, L and LA images and every mask come back as stored.
    """
    image = read_image(image_path, "image")
    mask = read_image(mask_path, "mask")
    if mask.size != image.size:
        raise ValueError(f"mask {mask_path} is {mask.width}x{mask.height} but image {image_path} is "
                         f"{image.width}x{image.height}")
    if image.mode not in _RENDERABLE_MODES:
        alpha = image.mode in ("PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
        converted = image.convert("L" if image.mode == "1" else "RGBA" if alpha else "RGB")
        if image.mode in _OTHER_COLOUR_SPACES:
            converted.info.pop("icc_profile", None)  # it describes the other colour space
        image = converted
    return image, mask


def _encoding(image: Image.Image, path: Path, options: SaveOptions, icc_profile: Optional[bytes]
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
    image, fmt, params = _encoding(image, path, options, icc_profile)
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
            result = _inpaint(inpainter, job, image, mask, options, note)
            encoded, fmt, params = _encoding(result, job.output, save, image.info.get("icc_profile"))
            encoded.save(tmp, format=fmt, **params)
    except (ValueError, OSError) as exc:
        raise JobFailed(f"cannot write {job.output}: {exc}") from exc


def _inpaint(inpainter: Callable[..., Any], job: Job, image: Image.Image, mask: Image.Image,
             options: Optional[Dict[str, Any]], note: Callable[[str], None]) -> Image.Image:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = inpainter(image, mask, **(options or {}))
        except (ValueError, TypeError, MemoryError) as exc:
            raise JobFailed(f"cannot inpaint {job.image}: {exc}") from exc
        except Exception as exc:
            raise JobFailed(f"cannot inpaint {job.image}: {type(exc).__name__}: {exc}") from exc
    for warning in caught:
        note(f"{job.image}: {warning.message}")
    return result if isinstance(result, Image.Image) else Image.fromarray(result)


def run_batch(plan: FolderPlan, inpainter: Optional[Callable[..., Any]] = None, *,
              load: Optional[Callable[[], Callable[..., Any]]] = None, overwrite: bool = False,
              options: Optional[Dict[str, Any]] = None, save: SaveOptions = SaveOptions(),
              progress: bool = True, report: Optional[Callable[[str], None]] = None) -> Summary:
    """Inpaint every job of ``plan`` whose output is missing (all with ``overwrite``), going on past bad files.

    Give the ``inpainter``, or ``load`` to build one on the first job that needs it (so a run with
    nothing to do never loads the model). ``options`` are passed to every ``inpainter(image, mask,
    **options)`` call. Failures and warnings go to ``report`` (default: stderr, above the progress bar).
    Temporary files left in the output folders by a killed run are removed first. A KeyboardInterrupt
    ends the run early with ``summary.interrupted`` set: the outputs written so far are complete, and
    a second run with the same jobs does the rest. Other runs may write into the same folders at the
    same time: an output another run writes (or has written since this run began) is skipped.
    """
    if (inpainter is None) == (load is None):
        raise TypeError("run_batch takes either an inpainter or a load function")
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
    try:
        while queue:
            job = queue.popleft()
            if job in put_off:
                # If the output is unchanged, the other run failed, was stopped or is still at it: do it here too.
                written = _version(job.output) != put_off.pop(job)
            else:
                written = not overwrite and job.output.exists()
                if not written and being_written(job.output):
                    put_off[job] = _version(job.output)
                    queue.append(job)
                    continue
            if written:
                summary.skipped += 1
                bar.update()
                continue
            if inpainter is None:
                inpainter = load()  # an error here ends the run: no job can go on without the model
                summary.model_loaded = True
            try:
                inpaint_job(inpainter, job, options, save, note=say)
            except JobFailed as exc:
                summary.failures.append(Failure(job.mask, str(exc)))
                say(f"failed: {exc}")
            else:
                summary.done += 1
            bar.update()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.elapsed_s = time.perf_counter() - start
    return summary
