"""``lama-fast serve`` as clients meet it: a real server process on a loopback port, real HTTP requests.

Every answer's pixels are compared with ``lama_fast.load(ckpt)(image, mask, ...)`` on the same
files: exactly for lossless formats, and for JPEG answers against the direct result encoded the same way.
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import lama_fast  # noqa: E402
from lama_fast.cli import main  # noqa: E402
from servers import free_port, start_server  # noqa: E402

TINY = "tiny/checkpoint.ckpt"


@pytest.fixture(scope="module")
def checkpoint(golden_dir):
    return str(golden_dir / TINY)


@pytest.fixture(scope="module")
def direct(checkpoint):
    return lama_fast.load(checkpoint)


@pytest.fixture(scope="module")
def server(checkpoint):
    # One request may wait behind the one running: a third at the same time is refused.
    running = start_server("--checkpoint", checkpoint, "--max-queue", "1", "--max-body", "4M",
                           "--max-pixels", "4000000")
    yield running
    running.stop()


def photo(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Smooth colour gradients with noise: something like a photo, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 200
    values = np.clip(base + rng.normal(0, 12, base.shape) + rng.integers(0, 40, 3), 0, 255).astype(np.uint8)
    image = Image.fromarray(values, "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray(((x * 255) // max(1, width - 1)).astype(np.uint8), "L")
        image.putalpha(alpha)
    return image


def hole(width: int, height: int, box=None, value: int = 255) -> Image.Image:
    mask = np.zeros((height, width), np.uint8)
    left, top, right, bottom = box or (width // 4, height // 3, width // 2, height * 2 // 3)
    mask[top:bottom, left:right] = value
    mask[2, 2] = 100  # below IOPaint's threshold of 127: a hole only where any non-zero pixel is one
    return Image.fromarray(mask, "L")


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def b64(data: bytes, prefix: str = "") -> str:
    return prefix + base64.b64encode(data).decode()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def iopaint_inpaint(server, image_data: bytes, mask_data: bytes, **fields) -> httpx.Response:
    payload = {"image": b64(image_data, "data:image/png;base64,"), "mask": b64(mask_data), **fields}
    return httpx.post(f"{server.url}/api/v1/inpaint", json=payload, timeout=120)


def native_inpaint(server, image_data: bytes, mask_data: bytes, headers=None, **fields) -> httpx.Response:
    files = {"image": ("photo", image_data, "application/octet-stream"), "mask": ("mask.png", mask_data, "image/png")}
    return httpx.post(f"{server.url}/v1/inpaint", files=files, data={k: str(v) for k, v in fields.items()},
                      headers=headers, timeout=120)


# --- IOPaint's API ----------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy, size", [("Original", (96, 72)), ("Crop", (200, 150)), ("Resize", (200, 150))])
def test_iopaint_png_answers_the_direct_result(server, direct, strategy, size):
    image, mask = photo(*size, seed=1), hole(*size)
    fields = {"hd_strategy": strategy, "hd_strategy_crop_trigger_size": 120, "hd_strategy_crop_margin": 16,
              "hd_strategy_resize_limit": 128, "prompt": "ignored", "sd_seed": 7, "ldm_steps": 3}
    answer = iopaint_inpaint(server, encoded(image), encoded(mask), **fields)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["x-seed"] == "7"
    want = direct(image, mask, hd_strategy=strategy.lower(), crop_trigger_size=120, crop_margin=16,
                  resize_limit=128, mask_threshold=127)
    got = decoded(answer.content)
    assert got.mode == "RGB" and got.size == size
    assert np.array_equal(pixels(got), pixels(want))
    assert not np.array_equal(pixels(got), pixels(image))
    assert pixels(got)[2, 2].tolist() == pixels(image)[2, 2].tolist()  # 100 <= 127: not a hole


def test_iopaint_jpeg_answers_jpeg_with_exif_kept_and_orientation_applied(server, direct):
    image, mask = photo(96, 64, seed=2), hole(64, 96)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the upright picture is 64 wide, 96 high
    exif[0x010F] = "lama_fast test camera"
    data = encoded(image, "JPEG", quality=92, exif=exif.tobytes())
    answer = iopaint_inpaint(server, data, encoded(mask), hd_strategy="Original")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/jpeg"
    got = decoded(answer.content)
    assert got.format == "JPEG" and got.size == (64, 96)
    kept = got.getexif()
    assert kept[0x010F] == "lama_fast test camera" and kept.get(0x0112, 1) == 1
    upright = lama_fast.images.open_image(io.BytesIO(data), "upload")
    want = direct(upright, mask, hd_strategy="original", mask_threshold=127)
    want_jpeg = decoded(encoded(want, "JPEG", quality=95, exif=upright.info["exif"]))
    assert np.array_equal(pixels(got), pixels(want_jpeg))


def test_iopaint_keeps_alpha(server, direct):
    image, mask = photo(80, 60, seed=3, mode="RGBA"), hole(80, 60)
    answer = iopaint_inpaint(server, encoded(image), encoded(mask.convert("RGB")), hd_strategy="Original")
    assert answer.status_code == 200, answer.text
    got = decoded(answer.content)
    assert got.mode == "RGBA"
    assert np.array_equal(pixels(got)[..., 3], pixels(image)[..., 3])
    assert np.array_equal(pixels(got), pixels(direct(image, mask, hd_strategy="original", mask_threshold=127)))


def test_iopaint_size_mismatch_is_a_400_in_iopaints_words(server):
    answer = iopaint_inpaint(server, encoded(photo(64, 48)), encoded(hole(32, 48)))
    assert answer.status_code == 400
    assert answer.json() == {"detail": "Image size((48, 64)) and mask size((48, 32)) not match."}


def test_iopaint_model_and_server_config_say_lama(server):
    model = httpx.get(f"{server.url}/api/v1/model").json()
    assert model["name"] == "lama" and model["model_type"] == "inpaint" and model["need_prompt"] is False
    config = httpx.get(f"{server.url}/api/v1/server-config").json()
    assert [info["name"] for info in config["modelInfos"]] == ["lama"]
    assert config["plugins"] == [] and config["disableModelSwitch"] is True
    assert httpx.post(f"{server.url}/api/v1/model", json={"name": "lama"}).json()["name"] == "lama"
    other = httpx.post(f"{server.url}/api/v1/model", json={"name": "sd1.5"})
    assert other.status_code == 400 and other.json() == {"detail": "this server runs lama only, not 'sd1.5'"}


@pytest.mark.parametrize("payload, status, detail", [
    (b"{not json", 422, "the body is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
                        "(char 1)"),
    (b"[1, 2]", 422, "the body must be a JSON object with the fields image and mask"),
    (json.dumps({"image": "@@@@", "mask": "AAAA"}).encode(), 400, "image is not valid base64: Only base64 data is "
                                                                  "allowed"),
    (json.dumps({"image": "aGVsbG8=", "mask": "aGVsbG8="}).encode(), 415,
     "image is not an image in a format this server reads (PNG, JPEG, WebP, BMP, TIFF or GIF)"),
    (json.dumps({"mask": "aGVsbG8="}).encode(), 422, "image: Field required"),
    (json.dumps({"image": "aGVsbG8=", "mask": "aGVsbG8=", "hd_strategy": "Zoom"}).encode(), 422,
     "hd_strategy: Value error, must be Crop, Resize or Original"),
])
def test_iopaint_bad_requests_get_a_message(server, payload, status, detail):
    answer = httpx.post(f"{server.url}/api/v1/inpaint", content=payload,
                        headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (status, {"detail": detail})


# --- the native API ---------------------------------------------------------------------------------

def test_native_png_and_fields(server, direct):
    image, mask = photo(200, 150, seed=4), hole(200, 150, value=60)
    answer = native_inpaint(server, encoded(image), encoded(mask), hd_strategy="crop", crop_trigger_size=100,
                            crop_margin=8, mask_threshold=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert float(answer.headers["x-inpaint-seconds"]) > 0 and float(answer.headers["x-queue-seconds"]) >= 0
    want = direct(image, mask, hd_strategy="crop", crop_trigger_size=100, crop_margin=8, mask_threshold=10)
    assert np.array_equal(pixels(decoded(answer.content)), pixels(want))


def test_native_jpeg_in_png_out_is_exact_and_jpeg_out_is_the_same_result_encoded(server, direct):
    image, mask = photo(120, 90, seed=5), hole(120, 90)
    data = encoded(image, "JPEG", quality=90)
    upright = lama_fast.images.open_image(io.BytesIO(data), "upload")
    want = direct(upright, mask, hd_strategy="original")
    as_png = native_inpaint(server, data, encoded(mask), hd_strategy="original", format="png")
    assert as_png.headers["content-type"] == "image/png"
    assert np.array_equal(pixels(decoded(as_png.content)), pixels(want))
    as_jpeg = native_inpaint(server, data, encoded(mask), hd_strategy="original")
    assert as_jpeg.headers["content-type"] == "image/jpeg"
    assert np.array_equal(pixels(decoded(as_jpeg.content)), pixels(decoded(encoded(want, "JPEG", quality=95))))


def test_native_keeps_greyscale_and_alpha(server, direct):
    grey = photo(64, 64, seed=6).convert("LA")
    answer = native_inpaint(server, encoded(grey), encoded(hole(64, 64)), hd_strategy="original")
    got = decoded(answer.content)
    assert got.mode == "LA"
    assert np.array_equal(pixels(got), pixels(direct(grey, hole(64, 64), hd_strategy="original")))


@pytest.mark.parametrize("fmt, media", [("WEBP", "image/webp"), ("BMP", "image/bmp"), ("TIFF", "image/tiff"),
                                        ("GIF", "image/png")])
def test_native_answers_lossless_inputs_losslessly_in_kind(server, direct, fmt, media):
    from lama_fast.batch import renderable

    data, mask = encoded(photo(72, 56, seed=13), fmt, **({"lossless": True} if fmt == "WEBP" else {})), hole(72, 56)
    answer = native_inpaint(server, data, encoded(mask), hd_strategy="original")
    assert answer.headers["content-type"] == media
    upright = renderable(lama_fast.images.open_image(io.BytesIO(data), "upload"))
    assert np.array_equal(pixels(decoded(answer.content)), pixels(direct(upright, mask, hd_strategy="original")))


def test_native_keeps_the_colour_profile_and_resolution(server):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for fmt in ("PNG", "JPEG"):
        data = encoded(photo(64, 48), fmt, icc_profile=icc, dpi=(300, 300))
        got = decoded(native_inpaint(server, data, encoded(hole(64, 48))).content)
        assert got.format == fmt and got.info["icc_profile"] == icc
        assert [round(v) for v in got.info["dpi"]] == [300, 300]


@pytest.mark.parametrize("fields, files, status, detail", [
    ({"hd_strategy": "zoom"}, None, 400, "hd_strategy must be one of original, crop, resize, got 'zoom'"),
    ({"crop_margin": "wide"}, None, 400, "crop_margin must be an integer, got 'wide'"),
    ({"colour": "red"}, None, 400, "unknown field 'colour'; the fields are hd_strategy, crop_margin, "
                                   "crop_trigger_size, resize_limit, mask_threshold, format, refine, refine_n_iters, "
                                   "refine_lr, refine_min_side, refine_max_scales, refine_px_budget, refine_modulo, "
                                   "refine_full_size"),
    ({"format": "gif"}, None, 400, "format must be one of same, png, jpeg, jpg, webp, got 'gif'"),
    ({}, {"image": ("a.png", b"", "image/png")}, 422, "the form needs the files 'image' and 'mask' "
                                                      "(multipart/form-data); missing: mask"),
    ({}, "tiny", 400, "image is 4x4 pixels; this model needs at least 9 pixels on each side"),
    ({}, "garbage", 415, "image is not an image in a format this server reads (PNG, JPEG, WebP, BMP, TIFF or GIF)"),
    ({}, "truncated", 400, "cannot read image: image file is truncated"),
    ({}, "mismatch", 400, "mask is 32x32 but image is 64x64"),
])
def test_native_bad_requests_get_a_message(server, fields, files, status, detail):
    good = encoded(photo(64, 64))
    if files == "tiny":
        files = {"image": ("a.png", encoded(photo(4, 4)), "image/png"), "mask": ("m.png", encoded(hole(4, 4)), "i")}
    elif files == "garbage":
        files = {"image": ("a.png", b"\x89PNG garbage", "image/png"), "mask": ("m.png", encoded(hole(64, 64)), "i")}
    elif files == "truncated":
        files = {"image": ("a.png", good[: len(good) // 2], "image/png"),
                 "mask": ("m.png", encoded(hole(64, 64)), "i")}
    elif files == "mismatch":
        files = {"image": ("a.png", good, "image/png"), "mask": ("m.png", encoded(hole(32, 32)), "i")}
    elif files is None:
        files = {"image": ("a.png", good, "image/png"), "mask": ("m.png", encoded(hole(64, 64)), "image/png")}
    answer = httpx.post(f"{server.url}/v1/inpaint", files=files, data=fields, timeout=60)
    assert (answer.status_code, answer.json()) == (status, {"detail": detail})


def test_native_needs_a_multipart_form(server):
    answer = httpx.post(f"{server.url}/v1/inpaint", json={"image": "x"})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("the form needs the files 'image' and 'mask'")


# --- hostile input ----------------------------------------------------------------------------------

def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header for a huge greyscale image, with a few KB of compressed zero rows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width + 1) * 64, 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def assert_still_serving(server, direct):
    image, mask = photo(48, 40, seed=9), hole(48, 40)
    answer = native_inpaint(server, encoded(image), encoded(mask), hd_strategy="original")
    assert answer.status_code == 200, answer.text
    assert np.array_equal(pixels(decoded(answer.content)), pixels(direct(image, mask, hd_strategy="original")))


def test_decompression_bomb_is_refused_from_its_header(server, direct):
    bomb = png_bomb()
    assert len(bomb) < 10_000
    start = time.monotonic()
    answer = iopaint_inpaint(server, bomb, encoded(hole(64, 64)))
    assert time.monotonic() - start < 5
    assert answer.status_code == 413
    assert answer.json() == {"detail": "image is 30000x30000 pixels (900.0 MP); the limit is 4 MP"}
    native = native_inpaint(server, encoded(photo(64, 64)), png_bomb(4000, 1001))
    assert native.status_code == 413
    assert native.json() == {"detail": "mask is 4000x1001 pixels (4.0 MP); the limit is 4 MP"}
    assert_still_serving(server, direct)


def test_bodies_over_the_limit_are_refused_before_they_are_read(server, direct):
    big = b"0" * (5 * 2 ** 20)
    start = time.monotonic()
    answer = httpx.post(f"{server.url}/api/v1/inpaint", content=big, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json() == {"detail": "the request body is larger than this server's limit of 4194304 bytes "
                                       "(4 MiB)"}

    def chunks():  # no Content-Length: the server counts while it reads
        for _ in range(80):
            yield b"0" * 65536

    streamed = httpx.post(f"{server.url}/api/v1/inpaint", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert time.monotonic() - start < 10
    assert_still_serving(server, direct)


def test_hostile_requests_leave_the_server_answering(server, direct):
    start = time.monotonic()
    for payload in (b"", b"\x00" * 100, b'{"image": ' * 1000, json.dumps({"image": 5, "mask": []}).encode(),
                    json.dumps({"image": b64(encoded(photo(64, 64))), "mask": b64(b"GIF89a" + b"\xff" * 50)}).encode()):
        answer = httpx.post(f"{server.url}/api/v1/inpaint", content=payload,
                            headers={"content-type": "application/json"})
        assert 400 <= answer.status_code < 500, (payload[:40], answer.status_code, answer.text)
        assert set(answer.json()) == {"detail"}
    assert time.monotonic() - start < 10
    assert_still_serving(server, direct)


# --- load ---------------------------------------------------------------------------------------------

def test_eight_concurrent_clients_get_their_own_answer_or_503(server, direct):
    cases = [(photo(96, 80, seed=100 + i), hole(96, 80, box=(10 + 5 * i, 10, 40 + 5 * i, 50))) for i in range(8)]
    wanted = [pixels(direct(image, mask, hd_strategy="original")) for image, mask in cases]
    barrier = threading.Barrier(len(cases))

    def client(i):
        image, mask = cases[i]
        barrier.wait()
        return i, native_inpaint(server, encoded(image), encoded(mask), hd_strategy="original")

    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(client, range(len(cases))))
    statuses = sorted(answer.status_code for _, answer in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2  # at least the one running and the one waiting
    for i, answer in answers:
        if answer.status_code == 200:
            assert np.array_equal(pixels(decoded(answer.content)), wanted[i]), f"client {i} got another image"
        else:
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["detail"].startswith("the server is busy")


def metric(server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_full_queue_answers_503_with_retry_after(server):
    slow = encoded(photo(900, 900, seed=11)), encoded(hole(900, 900))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(native_inpaint, server, *slow, hd_strategy="original")
        wait_for(lambda: metric(server, "lama_fast_inference_running") == 1)
        second = pool.submit(native_inpaint, server, *slow, hd_strategy="original")
        wait_for(lambda: metric(server, "lama_fast_queue_depth") == 1)
        refused = native_inpaint(server, *slow, hd_strategy="original")
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert first.result().status_code == 200 and second.result().status_code == 200


def test_metrics_count_requests_latency_queue_and_load_time(server):
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    assert 'lama_fast_requests_total{route="/healthz",status="200"}' in text
    assert 'lama_fast_request_seconds_bucket{le="0.01",route="/healthz"}' in text
    assert "lama_fast_queue_depth 0.0" in text
    assert metric(server, "lama_fast_model_load_seconds") > 0
    assert metric(server, "lama_fast_ready") == 1


def test_docs_and_config(server, direct):
    assert "swagger" in httpx.get(f"{server.url}/docs").text.lower()
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/inpaint", "/api/v1/inpaint", "/healthz", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/inpaint"]["post"]["requestBody"]["content"]
    config = httpx.get(f"{server.url}/v1/config").json()
    assert (config["model"], config["max_pixels"], config["max_body_bytes"], config["max_queue"], config["auth"]) == \
        ("lama", 4_000_000, 4 * 2 ** 20, 1, False)
    assert (config["backend"], config["min_side"]) == (direct.backend, direct.min_side)


# --- the process --------------------------------------------------------------------------------------

def port_open(url: str) -> bool:
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0


def test_sigterm_lets_the_request_in_flight_finish(checkpoint, direct):
    running = start_server("--checkpoint", checkpoint)
    image, mask = photo(1200, 900, seed=12), hole(1200, 900)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(native_inpaint, running, encoded(image), encoded(mask), hd_strategy="original")
            wait_for(lambda: metric(running, "lama_fast_inference_running") == 1)
            running.proc.send_signal(signal.SIGTERM)
            # The port closes at once: a new client is refused while the request in flight goes on.
            wait_for(lambda: not port_open(running.url), timeout=10)
            assert not pending.done()
            answer = pending.result()
        assert answer.status_code == 200
        assert np.array_equal(pixels(decoded(answer.content)), pixels(direct(image, mask, hd_strategy="original")))
        assert running.proc.wait(60) == 0, running.log()
        code, log = running.stop()
        assert log.rstrip().endswith("lama-fast serve: stopped")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{running.url}/healthz", timeout=5)
    finally:
        running.stop(signal.SIGKILL)


def test_off_loopback_needs_a_key_checked_on_every_api_route(checkpoint, capsys):
    port = free_port()
    assert main(["serve", "--checkpoint", checkpoint, "--host", "0.0.0.0", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        "lama-fast serve: binding to 0.0.0.0 lets other machines in: give --api-key KEY (or set LAMA_FAST_API_KEY), "
        "or pass --no-auth to serve without a key\n")
    running = start_server("--checkpoint", checkpoint, "--api-key", "s3cret", host="0.0.0.0",
                           ready_url="http://127.0.0.1:{port}")
    try:
        files = {"image": encoded(photo(32, 32)), "mask": encoded(hole(32, 32))}
        for route, method in (("/v1/inpaint", "post"), ("/api/v1/inpaint", "post"), ("/v1/config", "get"),
                              ("/api/v1/model", "get"), ("/api/v1/server-config", "get"), ("/metrics", "get")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cre"}):
                answer = httpx.request(method, f"{running.url}{route}", headers=headers)
                assert answer.status_code == 401, (route, headers)
                assert answer.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{running.url}/healthz").status_code == 200  # probes need no key
        assert httpx.get(f"{running.url}/").status_code in (200, 404)
        ok = httpx.post(f"{running.url}/v1/inpaint", files=files, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        ok = httpx.get(f"{running.url}/v1/config", headers={"X-API-Key": "s3cret"})
        assert ok.json()["auth"] is True
    finally:
        code, log = running.stop()
    assert code == 0, log


def test_no_auth_off_loopback_warns(checkpoint):
    running = start_server("--checkpoint", checkpoint, "--no-auth", host="0.0.0.0", ready_url="http://127.0.0.1:{port}")
    code, log = running.stop()
    assert code == 0
    assert ("lama-fast serve: warning: serving on 0.0.0.0 without an API key (--no-auth): anyone who can reach "
            "this port can use it") in log


def test_a_checkpoint_that_does_not_load_ends_the_server(tmp_path, capsys):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["serve", "--checkpoint", str(broken), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"lama-fast serve: {broken}: is not a PyTorch, TorchScript or safetensors "
                                    f"checkpoint (unrecognised content, starts with b'not a ch')")


def test_a_taken_port_is_said_at_once(checkpoint, server, capsys):
    port = int(server.url.rsplit(":", 1)[1])
    assert main(["serve", "--checkpoint", checkpoint, "--port", str(port)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"lama-fast serve: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_healthz_is_ready_only_once_the_model_is_loaded(direct):
    import uvicorn

    from lama_fast.serve import ServeSettings, create_app
    from lama_fast.serve.model import Model

    release = threading.Event()

    def slow_load():
        release.wait(60)
        return direct

    app = create_app(Model(slow_load), ServeSettings(max_queue=1))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: server.started)
        loading = httpx.get(f"{url}/healthz")
        assert (loading.status_code, loading.json(), loading.headers["retry-after"]) == (503, {"status": "loading"}, "5")
        early = native_inpaint(type("S", (), {"url": url}), encoded(photo(32, 32)), encoded(hole(32, 32)))
        assert (early.status_code, early.json()) == (503, {"detail": "the model is still loading"})
        release.set()
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200)
        ready = httpx.get(f"{url}/healthz").json()
        assert ready["status"] == "ready" and ready["backend"] == direct.backend
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)


# --- refinement ---------------------------------------------------------------------------------------

REFINE_BUDGET = 5000  # pixels: 80x60 is refined as it is, 96x72 resized to 81x61 first


@pytest.fixture(scope="module")
def refining(checkpoint):
    running = start_server("--checkpoint", checkpoint, "--refine-px-budget", str(REFINE_BUDGET), "--max-queue", "2")
    yield running
    running.stop()


def refined(direct, image, mask, **options):
    """``Inpainter.refine``'s pixels and the warnings it gave."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = direct.refine(image, mask, **options)
    return pixels(result), [str(w.message) for w in caught]


def test_native_refine_answers_inpainter_refine(refining, direct):
    image, mask = photo(80, 60, seed=20), hole(80, 60, value=90)
    answer = native_inpaint(refining, encoded(image), encoded(mask), refine="true", refine_n_iters=3,
                            refine_min_side=32, mask_threshold=50)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png" and "x-inpaint-notes" not in answer.headers
    want, notes = refined(direct, image, mask, n_iters=3, min_side=32, px_budget=REFINE_BUDGET, full_size=True,
                          mask_threshold=50)
    assert notes == []
    got = pixels(decoded(answer.content))
    assert np.array_equal(got, want)
    assert not np.array_equal(got, pixels(direct(image, mask, hd_strategy="original", mask_threshold=50)))
    known = pixels(mask) <= 50
    assert np.array_equal(got[known], pixels(image)[known])


def test_native_refine_over_the_budget_is_resized_and_answered_at_full_size(refining, direct):
    image, mask = photo(96, 72, seed=21), hole(96, 72)
    fields = {"refine": "on", "refine_n_iters": 2, "refine_min_side": 32, "refine_lr": 0.01}
    full = native_inpaint(refining, encoded(image), encoded(mask), **fields)
    assert full.status_code == 200, full.text
    want, notes = refined(direct, image, mask, n_iters=2, min_side=32, lr=0.01, px_budget=REFINE_BUDGET,
                          full_size=True)
    assert notes == [] and "x-inpaint-notes" not in full.headers
    got = decoded(full.content)
    assert got.size == (96, 72) and np.array_equal(pixels(got), want)
    small = native_inpaint(refining, encoded(image), encoded(mask), refine_full_size="false", **fields)
    want, notes = refined(direct, image, mask, n_iters=2, min_side=32, lr=0.01, px_budget=REFINE_BUDGET)
    assert len(notes) == 1 and small.headers["x-inpaint-notes"] == notes[0]
    got = decoded(small.content)
    assert got.size == (81, 61) and np.array_equal(pixels(got), want)
    # A smaller budget than the server's is the request's to choose (one scale: no optimisation, quick).
    smaller = native_inpaint(refining, encoded(image), encoded(mask), refine_px_budget=3000, refine="true",
                             refine_max_scales=1)
    want, _ = refined(direct, image, mask, max_scales=1, px_budget=3000, full_size=True)
    assert np.array_equal(pixels(decoded(smaller.content)), want)


@pytest.mark.parametrize("refine_size", [(80, 60), (96, 72)])
def test_iopaint_refine_answers_inpainter_refine_at_the_servers_settings(refining, direct, refine_size):
    image, mask = photo(*refine_size, seed=22), hole(*refine_size)
    answer = iopaint_inpaint(refining, encoded(image), encoded(mask), refine=True, hd_strategy="Original",
                             sd_seed=3)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-seed"] == "3"
    want, notes = refined(direct, image, mask, px_budget=REFINE_BUDGET, full_size=True, mask_threshold=127)
    got = decoded(answer.content)
    assert got.size == refine_size and np.array_equal(pixels(got), want)
    assert answer.headers.get("x-inpaint-notes") == (notes[0] if notes else None)
    assert pixels(got)[2, 2].tolist() == pixels(image)[2, 2].tolist()  # 100 <= 127: not a hole
    plain = iopaint_inpaint(refining, encoded(image), encoded(mask), refine=False, hd_strategy="Original")
    assert np.array_equal(pixels(decoded(plain.content)),
                          pixels(direct(image, mask, hd_strategy="original", mask_threshold=127)))


def test_refine_and_inpaint_requests_share_the_queue(refining, direct):
    cases = [(photo(80, 60, seed=30 + i), hole(80, 60, box=(5 + 8 * i, 10, 35 + 8 * i, 40))) for i in range(2)]
    fields = [{"refine": "true", "refine_n_iters": 2, "refine_min_side": 32}, {"hd_strategy": "original"}]
    wanted = [refined(direct, *cases[0], n_iters=2, min_side=32, px_budget=REFINE_BUDGET, full_size=True)[0],
              pixels(direct(*cases[1], hd_strategy="original"))]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda i: native_inpaint(refining, *map(encoded, cases[i]), **fields[i]), range(2)))
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        assert np.array_equal(pixels(decoded(answer.content)), wanted[i]), f"request {i} got another image"


@pytest.mark.parametrize("fields, detail", [
    ({"refine": "maybe"}, "refine must be true or false, got 'maybe'"),
    ({"refine_n_iters": "3"}, "refine_n_iters goes with refine=true"),
    ({"refine": "false", "refine_full_size": "true"}, "refine_full_size goes with refine=true"),
    ({"refine": "true", "hd_strategy": "crop"}, "hd_strategy does not go with refine=true: refinement runs on the "
                                                "whole image resized to refine_px_budget pixels"),
    ({"refine": "true", "resize_limit": "64"}, "resize_limit does not go with refine=true: refinement runs on the "
                                               "whole image resized to refine_px_budget pixels"),
    ({"refine": "true", "refine_n_iters": "0"}, "refine_n_iters must be an integer >= 1, got 0"),
    ({"refine": "true", "refine_n_iters": "many"}, "refine_n_iters must be an integer, got 'many'"),
    ({"refine": "true", "refine_lr": "-1"}, "refine_lr must be a finite number > 0, got -1.0"),
    ({"refine": "true", "refine_lr": "fast"}, "refine_lr must be a number, got 'fast'"),
    ({"refine": "true", "refine_modulo": "0"}, "refine_modulo must be an integer >= 1, got 0"),
    ({"refine": "true", "refine_full_size": "2"}, "refine_full_size must be true or false, got '2'"),
    ({"refine": "true", "refine_px_budget": str(REFINE_BUDGET + 1)},
     f"refine_px_budget must be at most this server's {REFINE_BUDGET} pixels (lama-fast serve --refine-px-budget), "
     f"got {REFINE_BUDGET + 1}"),
    ({"refine": "true", "mask_threshold": "-1"}, "mask_threshold must lie in [0, 65535), got -1"),
])
def test_native_refine_bad_fields_get_a_message(refining, fields, detail):
    files = {"image": ("a.png", encoded(photo(64, 64)), "image/png"), "mask": ("m.png", encoded(hole(64, 64)), "i")}
    answer = httpx.post(f"{refining.url}/v1/inpaint", files=files, data=fields, timeout=60)
    assert (answer.status_code, answer.json()) == (400, {"detail": detail})


def test_native_refine_errors_of_the_model_are_the_libraries_with_the_field_named(refining, direct):
    image, mask = photo(64, 64), hole(64, 64)
    for modulo in (128, 12):  # too large to pad a 64x64 image to; not a multiple of 8, which the model needs
        with pytest.raises(ValueError) as raised:
            direct.refine(image, mask, modulo=modulo, px_budget=REFINE_BUDGET, full_size=True)
        message = str(raised.value)
        answer = native_inpaint(refining, encoded(image), encoded(mask), refine="yes", refine_modulo=modulo)
        assert answer.status_code == 400
        assert answer.json() == {"detail": f"refine_{message}" if message.startswith("modulo ") else message}
    assert answer.json()["detail"].startswith("refine_modulo must be a multiple of 8")


def test_iopaint_refine_must_be_a_boolean(refining):
    payload = {"image": b64(encoded(photo(32, 32))), "mask": b64(encoded(hole(32, 32))), "refine": "sometimes"}
    answer = httpx.post(f"{refining.url}/api/v1/inpaint", json=payload)
    assert (answer.status_code, answer.json()) == (422, {"detail": "refine: Input should be a valid boolean, unable "
                                                                   "to interpret input"})


def test_config_and_openapi_describe_refinement(refining, server):
    config = httpx.get(f"{refining.url}/v1/config").json()
    assert {key: config[key] for key in config if key.startswith("refine")} == {
        "refine": True, "refine_n_iters": 15, "refine_lr": 0.002, "refine_min_side": 512, "refine_max_scales": 3,
        "refine_px_budget": REFINE_BUDGET, "refine_modulo": 8}
    from lama_fast.refine import RefineSettings
    from lama_fast.serve.settings import DEFAULT_REFINE_PX_BUDGET

    assert DEFAULT_REFINE_PX_BUDGET == RefineSettings().px_budget
    assert httpx.get(f"{server.url}/v1/config").json()["refine_px_budget"] == DEFAULT_REFINE_PX_BUDGET
    paths = httpx.get(f"{refining.url}/openapi.json").json()["paths"]
    native = paths["/v1/inpaint"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"refine", "refine_n_iters", "refine_lr", "refine_min_side", "refine_max_scales", "refine_px_budget",
            "refine_modulo", "refine_full_size"} <= set(native)
    iopaint = paths["/api/v1/inpaint"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert iopaint["refine"]["type"] == "boolean" and iopaint["refine"]["default"] is False
    assert "not an IOPaint field" in iopaint["refine"]["description"]


def test_no_refine_refuses_refinement_and_still_inpaints(checkpoint, direct):
    running = start_server("--checkpoint", checkpoint, "--no-refine")
    refused = {"detail": "refinement is turned off on this server (lama-fast serve --no-refine)"}
    try:
        image, mask = photo(64, 48, seed=23), hole(64, 48)
        native = native_inpaint(running, encoded(image), encoded(mask), refine="true")
        assert (native.status_code, native.json()) == (403, refused)
        assert native_inpaint(running, encoded(image), encoded(mask), refine="false").status_code == 200
        iop = iopaint_inpaint(running, encoded(image), encoded(mask), refine=True)
        assert (iop.status_code, iop.json()) == (403, refused)
        plain = iopaint_inpaint(running, encoded(image), encoded(mask))
        assert plain.status_code == 200
        assert np.array_equal(pixels(decoded(plain.content)), pixels(direct(image, mask, mask_threshold=127)))
        config = httpx.get(f"{running.url}/v1/config").json()
        assert (config["refine"], config["refine_refused"]) == (False, refused["detail"])
    finally:
        code, log = running.stop()
    assert code == 0, log
    assert "no refinement" in log.splitlines()[0]


def test_refine_server_options_are_checked_before_the_port_opens(checkpoint, capsys):
    port = str(free_port())
    assert main(["serve", "--checkpoint", checkpoint, "--port", port, "--no-refine", "--refine-px-budget", "9"]) == 2
    assert capsys.readouterr().err == ("lama-fast serve: --refine-px-budget goes without --no-refine: it limits the "
                                       "refinement requests a server takes\n")
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--checkpoint", checkpoint, "--port", port, "--refine-px-budget", "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("lama-fast serve: argument --refine-px-budget: refine pixel budget must be at "
                                       "least 1, got 0 (see lama-fast serve --help)\n")


def test_a_backend_without_refinement_says_so(direct):
    from lama_fast.serve import ServeSettings
    from lama_fast.serve.app import refine_refusal
    from lama_fast.serve.model import Model

    class OnAnotherBackend:
        backend = "triton"

    assert refine_refusal(Model.loaded(direct), ServeSettings(max_queue=1)) is None
    assert refine_refusal(Model.loaded(OnAnotherBackend()), ServeSettings(max_queue=1)) == (
        "this server does not refine: refine runs on the reference and cpu backends, not on 'triton'")
    with pytest.raises(ValueError, match="^refine must be True or False, got 'yes'$"):
        ServeSettings(max_queue=1, refine="yes")
    with pytest.raises(ValueError, match="^refine_px_budget must be a positive integer, got 0$"):
        ServeSettings(max_queue=1, refine_px_budget=0)
