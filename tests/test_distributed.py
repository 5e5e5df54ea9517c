"""Dataset runs on Ray Data (lama_fast.distributed, ``lama-fast inpaint --ray``) on a real Ray cluster of two
nodes started with the ``ray`` CLI on this machine, and on a local Ray instance reading and writing a local
S3 server: the outputs equal the single-process folder run's pixel for pixel, each is written once, a
killed worker costs nothing, bad items fail alone, and a rerun does nothing.

The tests that need Ray, pyarrow, moto or boto3 are skipped where they are not installed, except on CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import csv
import gc
import importlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from PIL import Image

import lama_fast
from lama_fast.batch import plan_folder, run_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_cluster import RayCluster, driver_of, free_port, processes, start_cluster  # noqa: E402

ON_CI = os.environ.get("CI", "").lower() == "true"
ACTOR = "InpaintWorker"  # in the title Ray gives the pool's processes: ray::MapWorker(MapBatches(InpaintWorker))
SIZES = ((64, 48), (80, 60), (96, 72))
RUN_TIMEOUT = 240  # seconds a dataset run may take here (2 cores shared), actor start-up included
SUMMARY = re.compile(r"^summary: (\d+) done, (\d+) skipped \(output exists\), (\d+) failed, (\d+) workers?, "
                     r"[0-9.]+ s, [0-9.]+ images/s$", re.MULTILINE)


def needs(module: str) -> Any:
    """Import ``module``, or skip the test where it is not installed (fail on CI, which must run it)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = "moto[server] boto3" if module.split(".")[0] in ("moto", "boto3") else "'lama_fast[distributed]'"
        message = f"{module} does not import ({error}): pip install {package}"
        if ON_CI:
            pytest.fail(f"CI runs the dataset tests: {message}")
        pytest.skip(message)


# ---------------------------------------------------------------- inputs and outputs


def write_picture(path: Path, size: Tuple[int, int], seed: int) -> Path:
    """A smooth random RGB picture, saved in the format of ``path``'s suffix."""
    width, height = size
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(path)
    return path


def write_hole(path: Path, size: Tuple[int, int], seed: int) -> Path:
    """A mask with one rectangular hole, placed by ``seed``."""
    width, height = size
    hole = np.zeros((height, width), np.uint8)
    left, top = 4 + seed % 5 * 3, 3 + seed % 4 * 2
    hole[top:top + height // 3, left:left + width // 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(hole).save(path)
    return path


def write_folder(root: Path, count: int, sizes: Sequence[Tuple[int, int]] = SIZES) -> List[str]:
    """``count`` pairs NAME.png|jpg + NAME_mask.png at the top of ``root`` and two folder levels down;
    the outputs' names (relative, as the folder run writes them)."""
    names = []
    for i in range(count):
        folder = ("", "trip", "trip/day2")[i % 3]
        stem = f"{folder}/shot{i:02d}".lstrip("/")
        size = sizes[i % len(sizes)]
        write_picture(root / f"{stem}{'.jpg' if i % 4 == 1 else '.png'}", size, seed=i)
        write_hole(root / f"{stem}_mask.png", size, seed=i)
        names.append(f"{stem}_mask.png")
    return sorted(names)


def files_under(folder: Path) -> List[str]:
    """Every file under ``folder``, hidden ones included, relative and sorted."""
    return sorted(Path(d, f).relative_to(folder).as_posix() for d, _, fs in os.walk(folder) for f in fs)


def pixels(data: Any) -> np.ndarray:
    """The decoded pixels of a path, of encoded bytes, or of a PIL image."""
    if isinstance(data, bytes):
        data = io.BytesIO(data)
    if isinstance(data, Image.Image):
        return np.asarray(data)
    with Image.open(data) as image:
        return np.asarray(image)


def single_process_run(source: Path, output: Path, inpainter: Any) -> None:
    """The folder run of ``lama-fast inpaint SRC -o OUT``, in this process."""
    plan = plan_folder(source, output)
    summary = run_batch(plan, inpainter=inpainter, progress=False)
    assert (summary.done, summary.failed) == (len(plan.jobs), 0), summary.line()


def assert_same_pictures(output: Path, reference: Path, names: Sequence[str]) -> None:
    """``output`` holds exactly the files ``names`` (no temporary file), each pixel-equal to ``reference``'s."""
    assert files_under(output) == sorted(names)
    for name in names:
        got, want = pixels(output / name), pixels(reference / name)
        assert got.shape == want.shape and np.array_equal(got, want), name


def read_rows(location: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in location.read_text().splitlines()]


# ---------------------------------------------------------------- runs, bounded in time


class Background:
    """A call run in a daemon thread, waited for with a timeout."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as error:  # handed to wait()
            self.error = error

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def wait(self, timeout: float = RUN_TIMEOUT) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            pytest.fail(f"the run did not end in {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


def bounded(call: Callable[[], Any], timeout: float = RUN_TIMEOUT) -> Any:
    return Background(call).wait(timeout)


def identity(path: Path) -> Optional[Tuple[int, int]]:
    """What tells one file at ``path`` from the next (a rename into place makes a new inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class Watch:
    """What a run does while it runs: the cluster's pool processes (pid -> the raylet they run under) and
    each output as first seen (to tell an output written twice)."""

    def __init__(self, cluster: RayCluster, output: Path, names: Sequence[str]) -> None:
        self.cluster, self.output, self.names = cluster, output, list(names)
        self.actors: Dict[int, int] = {}
        self.first_seen: Dict[str, Tuple[int, int]] = {}

    def look(self) -> None:
        for process in self.cluster.actors(ACTOR):
            self.actors.setdefault(process.pid, process.ppid)
        for name in self.names:
            if name not in self.first_seen:
                seen = identity(self.output / name)
                if seen is not None:
                    self.first_seen[name] = seen

    def until_done(self, run: Background, timeout: float = RUN_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while run.running and time.monotonic() < deadline:
            self.look()
            time.sleep(0.05)
        return run.wait(max(1.0, deadline - time.monotonic()))

    def assert_written_once(self) -> None:
        assert sorted(self.first_seen) == sorted(self.names)
        assert {name: identity(self.output / name) for name in self.names} == self.first_seen


def refs_left_in_cycles(call: Callable[[], Any]) -> Tuple[Any, List[str]]:
    """``call()`` with the cyclic garbage collector off, and the ids of the Ray object refs that only
    unreachable reference cycles hold once it has returned."""
    import ray

    gc.collect()
    gc.disable()
    try:
        result = call()
    finally:
        gc.enable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept in gc.garbage to be looked at
    try:
        gc.collect()
        stale = {ref.hex() for item in gc.garbage for ref in [item, *gc.get_referents(item)]
                 if isinstance(ref, ray.ObjectRef)}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return result, sorted(stale)


def worker_pid(row: Dict[str, Any]) -> int:
    """The pid of the ``worker`` column (``HOST:PID``), checked to name this machine."""
    host, _, pid = row["worker"].rpartition(":")
    assert host == socket.gethostname() and pid.isdigit(), row
    return int(pid)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(golden_dir: Path) -> Path:
    return golden_dir / "tiny" / "checkpoint.ckpt"


@pytest.fixture(scope="module")
def inpainter(ckpt: Path) -> Any:
    return lama_fast.load(ckpt)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """A head and a second node of one CPU each, started with ``ray start``; this process is their driver.

    Stopped at the end: every process it started is killed, and no raylet of it is left.
    """
    needs("ray.data")
    needs("pyarrow")
    temp_dir = Path(tempfile.mkdtemp(prefix="lama-ray-"))  # short: Ray's socket paths must fit 107 bytes
    started = start_cluster(temp_dir, nodes=2)
    try:
        with driver_of(started):
            yield started
            import ray

            if ray.is_initialized():  # a driver left connected would wait for the stopped cluster at exit
                ray.shutdown()
    finally:
        left = started.stop()
        raylets = subprocess.run(["pgrep", "-af", "raylet"], capture_output=True, text=True, timeout=30).stdout
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert left == [], f"processes of the cluster still running: {left}"
        assert str(temp_dir) not in raylets, raylets


@pytest.fixture(scope="module")
def folder_run(cluster: RayCluster, ckpt: Path, inpainter: Any, tmp_path_factory: pytest.TempPathFactory
               ) -> Dict[str, Any]:
    """A 12-image folder (two levels of subfolders, PNG and JPEG images) run on the cluster with 2 workers,
    watched while it runs, and the single-process folder run of it."""
    from lama_fast.distributed import folder_items, inpaint_dataset

    root = tmp_path_factory.mktemp("folder")
    source, output, reference, results = root / "in", root / "out", root / "reference", root / "results.jsonl"
    names = write_folder(source, 12)
    single_process_run(source, reference, inpainter)
    items, plan = folder_items(str(source), str(output))
    lines: List[str] = []
    watch = Watch(cluster, output, names)
    run = Background(lambda: inpaint_dataset(items, str(ckpt), address=cluster.address, workers=2,
                                             results=str(results), progress=False, report=lines.append))
    summary = watch.until_done(run)
    return dict(address=cluster.address, source=source, output=output, reference=reference, names=names,
                items=items, plan=plan, summary=summary, rows=read_rows(results), watch=watch, lines=lines)


# ---------------------------------------------------------------- a folder on two nodes


def test_a_folder_on_two_nodes_equals_the_single_process_run(folder_run: Dict[str, Any]) -> None:
    summary, rows, watch = folder_run["summary"], folder_run["rows"], folder_run["watch"]
    names = folder_run["names"]
    assert (summary.done, summary.skipped, summary.failed, summary.workers) == (12, 0, 0, 2), summary.line()
    assert folder_run["lines"][0] == f"inpainting 12 images with 2 workers of 1 thread on {folder_run['address']}"
    # Paired as the folder run pairs the folder: one item per mask, named by its output.
    assert sorted(item.name for item in folder_run["items"]) == names
    assert not folder_run["plan"].failures and not folder_run["plan"].unmasked
    assert_same_pictures(folder_run["output"], folder_run["reference"], names)
    watch.assert_written_once()

    assert len(rows) == 12 and sorted(row["name"] for row in rows) == names
    assert len({row["output"] for row in rows}) == 12
    assert {(row["status"], row["error"]) for row in rows} == {("done", "")}
    # Each item ran in a process of the pool on this cluster, not in this process; with one CPU a node, the
    # pool's two workers run on the two nodes (under two raylets). Which of them does how many items is
    # the scheduler's choice.
    pids = {worker_pid(row) for row in rows}
    assert os.getpid() not in pids and pids <= set(watch.actors), (pids, watch.actors)
    assert len(watch.actors) == 2 and len(set(watch.actors.values())) == 2, watch.actors


def test_a_rerun_does_nothing_and_starts_no_ray(folder_run: Dict[str, Any], ckpt: Path,
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import ray

    from lama_fast.distributed import folder_items, inpaint_dataset

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", refuse)
    before = {name: identity(folder_run["output"] / name) for name in folder_run["names"]}
    items, _ = folder_items(str(folder_run["source"]), str(folder_run["output"]))
    # Nothing listens at 127.0.0.1:1: a run that tried to join it would fail.
    summary = bounded(lambda: inpaint_dataset(items, str(ckpt), address="127.0.0.1:1", progress=False,
                                              results=str(tmp_path / "rerun.jsonl"), report=print), timeout=60)
    assert (summary.done, summary.skipped, summary.failed, summary.workers) == (0, 12, 0, 0)
    assert {name: identity(folder_run["output"] / name) for name in folder_run["names"]} == before
    rows = read_rows(tmp_path / "rerun.jsonl")
    assert sorted(row["name"] for row in rows) == folder_run["names"]
    assert {(row["status"], row["worker"]) for row in rows} == {("skipped", "")}


# ---------------------------------------------------------------- a worker killed mid-run


def test_a_worker_killed_mid_run_costs_nothing(cluster: RayCluster, ckpt: Path, inpainter: Any,
                                               tmp_path: Path) -> None:
    from lama_fast.distributed import folder_items, inpaint_dataset

    source, output, reference, results = tmp_path / "in", tmp_path / "out", tmp_path / "ref", tmp_path / "r.jsonl"
    # Larger pictures than the others, so that items are still to do when the first output appears.
    names = write_folder(source, 12, sizes=((480, 360), (448, 336)))
    single_process_run(source, reference, inpainter)
    items, _ = folder_items(str(source), str(output))
    watch = Watch(cluster, output, names)
    run = Background(lambda: inpaint_dataset(items, str(ckpt), address=cluster.address, workers=2,
                                             results=str(results), progress=False, report=print))
    deadline = time.monotonic() + RUN_TIMEOUT
    while run.running and not watch.first_seen and time.monotonic() < deadline:
        watch.look()
        time.sleep(0.05)
    if not watch.first_seen:
        run.wait(1)  # raises the run's error, if it ended with one
    assert watch.first_seen, "the run ended or timed out before writing an output"
    # A worker past its start (Ray titles it ...(InpaintWorker).__init__ until then): one that is doing items.
    victims = [p.pid for p in cluster.actors(ACTOR) if not p.cmdline.endswith(".__init__")]
    assert victims, "no process of the pool is running"
    victim = victims[0]
    written_before_kill = sum((output / name).exists() for name in names)
    os.kill(victim, signal.SIGKILL)
    assert written_before_kill < 12, "the run was over before the kill"

    summary = watch.until_done(run, timeout=max(1.0, deadline - time.monotonic()))
    assert victim not in processes()
    # Ray Data restarts the killed actor and retries its item; an item whose output the killed attempt
    # wrote is skipped by the retry.
    assert (summary.done + summary.skipped, summary.failed) == (12, 0), summary.line()
    assert_same_pictures(output, reference, names)
    watch.assert_written_once()
    rows = read_rows(results)
    assert len(rows) == 12 and sorted(row["name"] for row in rows) == names
    assert {row["status"] for row in rows} <= {"done", "skipped"}
    assert all(worker_pid(row) in watch.actors for row in rows)


# ---------------------------------------------------------------- bad items


def write_bad_folder(source: Path) -> Tuple[List[str], Path, Path, Path]:
    """Two good pairs, an image that is no image, and a mask of another size than its image."""
    names = write_folder(source, 2)
    garbage = source / "broken.png"
    garbage.write_bytes(b"these bytes are not a PNG file\n" * 4)
    write_hole(source / "broken_mask.png", SIZES[0], seed=3)
    odd = write_picture(source / "trip" / "odd.png", (80, 60), seed=4)
    odd_mask = write_hole(source / "trip" / "odd_mask.png", (64, 48), seed=4)
    return names, garbage, odd, odd_mask


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_bad_items_fail_alone_and_the_command_says_so(cluster: RayCluster, ckpt: Path, inpainter: Any,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``lama-fast inpaint SRC -o DST --ray ADDRESS``: the bad items fail with their reason, the others are
    done, the summary counts them and the exit code is 1."""
    from lama_fast.cli import main

    source, output, reference = tmp_path / "in", tmp_path / "out", tmp_path / "reference"
    names, garbage, odd, odd_mask = write_bad_folder(source)
    code = main(["inpaint", str(source), "-o", str(output), "--ray", cluster.address, "--checkpoint", str(ckpt)])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert [tuple(int(n) for n in found) for found in SUMMARY.findall(out)] == [(2, 0, 2, 2)], (out, err)
    mismatch = f"mask {odd_mask} is 64x48 but image {odd} is 80x60"
    unreadable = f"cannot read image {garbage}: "
    failures = sorted(line for line in err.splitlines() if line.startswith("failed: "))
    assert len(failures) == 2 and failures[0].startswith(f"failed: broken_mask.png: {unreadable}"), err
    assert failures[1] == f"failed: trip/odd_mask.png: {mismatch}", err

    found = re.search(r"^results: (.+)$", out, re.MULTILINE)
    assert found, out
    results = Path(found.group(1))
    rows = {row["name"]: row for row in read_rows(results)}
    assert sorted(rows) == sorted(names + ["broken_mask.png", "trip/odd_mask.png"])
    assert {name: row["status"] for name, row in rows.items()} == {
        names[0]: "done", names[1]: "done", "broken_mask.png": "failed", "trip/odd_mask.png": "failed"}
    assert rows["trip/odd_mask.png"]["error"] == mismatch
    assert rows["broken_mask.png"]["error"].startswith(unreadable)
    assert rows[names[0]]["error"] == rows[names[1]]["error"] == ""
    # The good ones are written as the folder run writes them; the bad ones not at all.
    write_folder(tmp_path / "good", 2)
    single_process_run(tmp_path / "good", reference, inpainter)
    assert results.parent == output
    results.unlink()
    assert_same_pictures(output, reference, names)


# ---------------------------------------------------------------- S3


BUCKET = "lama"


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A local S3 server (moto) on 127.0.0.1, the environment that points pyarrow at it, and a boto3 client."""
    needs("ray.data")
    needs("pyarrow")
    moto_server = needs("moto.server")
    boto3 = needs("boto3")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        environment = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_EC2_METADATA_DISABLED": "true"}
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        server.stop()


def upload(client: Any, key: str, data: bytes) -> str:
    client.put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def download(client: Any, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_a_manifest_on_s3_round_trip(s3: Any, ckpt: Path, inpainter: Any, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lama_fast.distributed import Item, inpaint_dataset, manifest_items

    local = tmp_path / "in"
    names = write_folder(local, 3)
    expected, rows = [], []
    for name in names:
        stem = name[: -len("_mask.png")]
        image = next(local.glob(f"{stem}.*"))
        image_uri = upload(s3, f"pictures/{image.relative_to(local).as_posix()}", image.read_bytes())
        mask_uri = upload(s3, f"pictures/{name}", (local / name).read_bytes())
        output_uri = f"s3://{BUCKET}/cleaned/{Path(stem).name}.png"
        rows.append({"image": image_uri, "mask": mask_uri, "output": output_uri})
        expected.append((Item(f"cleaned/{Path(stem).name}.png", image_uri, mask_uri, output_uri), image, local / name))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["image", "mask", "output"])
    writer.writeheader()
    writer.writerows(rows)
    manifest = upload(s3, "jobs/manifest.csv", text.getvalue().encode())

    items = manifest_items(manifest)
    assert items == [item for item, _, _ in expected]
    lines: List[str] = []
    results = f"s3://{BUCKET}/results.jsonl"
    # A local Ray instance: its workers are started by this process and inherit the S3 environment. It is
    # this process's own even where RAY_ADDRESS names a cluster (here one where nothing listens).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    summary, stale = refs_left_in_cycles(lambda: bounded(
        lambda: inpaint_dataset(items, str(ckpt), address="local", results=results, progress=False,
                                report=lines.append), timeout=150))
    # None may outlive its instance: the next one this process starts would take its release for theirs.
    assert stale == [], stale
    assert lines[0].startswith("inpainting 3 images with 1 worker of "), lines
    assert lines[0].endswith(" on a local Ray instance"), lines
    assert (summary.done, summary.skipped, summary.failed) == (3, 0, 0), (summary.line(), lines)
    listed = [entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET, Prefix="cleaned/")["Contents"]]
    # pyarrow marks the folder it is asked to make with an empty "cleaned/" object.
    assert sorted(key for key in listed if not key.endswith("/")) == sorted(item.name for item, _, _ in expected)
    for item, image, mask in expected:
        written = download(s3, item.name)
        assert written[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(image) as picture, Image.open(mask) as hole:
            want = pixels(inpainter(picture, hole))
        got = pixels(written)
        assert got.shape == want.shape and np.array_equal(got, want), item.name
    result_rows = [json.loads(line) for line in download(s3, "results.jsonl").decode().splitlines()]
    assert sorted((row["output"], row["status"], row["error"]) for row in result_rows) == sorted(
        (item.output, "done", "") for item, _, _ in expected)
    assert os.getpid() not in {worker_pid(row) for row in result_rows}  # written by the workers

    # A Parquet manifest of paths relative to its own folder, without outputs: named in the output folder.
    table = pa.table({"image": ["pics/a.jpg", "s3://other/b.png"], "mask": ["pics/a_mask.png", "masks/b.png"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    upload(s3, "jobs/more.parquet", buffer.getvalue())
    assert manifest_items(f"s3://{BUCKET}/jobs/more.parquet", f"s3://{BUCKET}/out") == [
        Item("out/a.png", f"s3://{BUCKET}/jobs/pics/a.jpg", f"s3://{BUCKET}/jobs/pics/a_mask.png",
             f"s3://{BUCKET}/out/a.png"),
        Item("out/b.png", "s3://other/b.png", f"s3://{BUCKET}/jobs/masks/b.png", f"s3://{BUCKET}/out/b.png"),
    ]


# ---------------------------------------------------------------- manifests


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_manifest_without_a_mask_column_is_refused(tmp_path: Path) -> None:
    needs("pyarrow")
    from lama_fast.distributed import manifest_items

    manifest = write_csv(tmp_path / "jobs.csv", ["image", "output"], [["a.png", "out/a.png"]])
    with pytest.raises(ValueError) as raised:
        manifest_items(str(manifest))
    assert str(raised.value) == f"the manifest {manifest} has no mask column (its columns: image, output)"


def test_a_manifest_writing_one_output_twice_is_refused(tmp_path: Path) -> None:
    needs("pyarrow")
    from lama_fast.distributed import manifest_items

    manifest = write_csv(tmp_path / "jobs.csv", ["image", "mask", "output"],
                         [["a.png", "a_mask.png", "out/x.png"], ["b.png", "b_mask.png", "out/x.png"]])
    with pytest.raises(ValueError) as raised:
        manifest_items(str(manifest))
    assert str(raised.value) == (f"the manifest {manifest}: {tmp_path / 'a.png'} and {tmp_path / 'b.png'} would "
                                 f"both be written to {tmp_path / 'out' / 'x.png'}")


def located(items: Sequence[Any]) -> List[Tuple[str, str, str]]:
    return [(item.image, item.mask, item.output) for item in items]


def test_a_manifests_relative_paths_are_taken_from_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    needs("pyarrow")
    from lama_fast.distributed import manifest_items

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the manifest's folder
    jobs = tmp_path / "jobs"
    absolute = str(tmp_path / "masks" / "b.png")
    manifest = write_csv(jobs / "list.csv", ["image", "mask", "output"],
                         [["pics/a.png", "pics/a_mask.png", "done/a.png"], ["b.jpg", absolute, ""]])
    want = [(str(jobs / "pics" / "a.png"), str(jobs / "pics" / "a_mask.png"), str(jobs / "done" / "a.png")),
            (str(jobs / "b.jpg"), absolute, str(tmp_path / "out" / "b.png"))]
    assert located(manifest_items(str(manifest), str(tmp_path / "out"))) == want
    lines = jobs / "list.jsonl"
    lines.write_text("".join(json.dumps(row) + "\n" for row in [
        {"image": "pics/a.png", "mask": "pics/a_mask.png", "output": "done/a.png"},
        {"image": "b.jpg", "mask": absolute}]))
    assert located(manifest_items(str(lines), str(tmp_path / "out"))) == want


# ---------------------------------------------------------------- without Ray


def test_the_command_says_how_to_install_ray(ckpt: Path, tmp_path: Path) -> None:
    source = tmp_path / "in"
    write_folder(source, 1)
    program = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "sys.modules['ray.data'] = None\n"
        "from lama_fast.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run([sys.executable, "-c", program, "inpaint", str(source), "-o", str(tmp_path / "out"),
                           "--ray", "local", "--checkpoint", str(ckpt)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "lama-fast inpaint: --ray needs the distributed extra: ray.data does not import (import of ray.data halted; "
        "None in sys.modules): pip install 'lama_fast[distributed]' (or ray[data])"]
    assert done.stdout == "" and not (tmp_path / "out").exists()
