"""A folder run's plan: masks paired with their images, and the outputs named under the output folder.

Masks pair with images as LaMa's ``predict.py`` pairs them (``NAME_mask*.png`` next to ``NAME.<ext>``),
or by equal names in a mask folder.  Outputs never replace inputs: ``plan_folder`` refuses such a plan
with a ValueError, and an output folder inside the input folder that holds image/mask pairs of it.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

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


def counted(n: int, noun: str) -> str:
    """``1 image``, ``3 images``."""
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
            raise ValueError(f"{output_dir}: the output folder holds {counted(len(inside), 'image/mask pair')} of "
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
