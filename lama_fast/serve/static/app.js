// lama-fast serve: the web page. Open a photo, paint a mask over it, send both to POST v1/inpaint,
// compare before/after, download the answer. No dependencies; talks only to v1/config and v1/inpaint.
// A "Refine" checkbox, shown when v1/config says the server refines, sends refine=true with Remove.
//
// Model of the page:
//  - A "picture" is an image as bytes (the Blob that is sent or downloaded) plus its decoded bitmap.
//    Its mask lives in an offscreen canvas at the image's full resolution; the visible canvas
//    shows the picture scaled to fit, with the mask drawn semi-transparent over it.
//  - Edits are a list of operations: "stroke" (brush or eraser), "clear" (empties the mask) and
//    "result" (an answer of the server, which becomes the picture to work on). The picture shown is
//    the latest result (else the opened file); the mask is the replay of the strokes after the last
//    result or clear. Undo/redo move operations between two stacks, so they also step through results.
//  - EXIF orientation: the browser decodes JPEG/PNG files turned upright and the server applies the
//    orientation too, so the mask is made in the upright frame, the one shown.
//
// Test hooks (window.lamaFast, read-only view of the page):
//   state          "empty" | "ready" | "working" | "done" | "error"
//   lastError      text of the last error shown ("" if none)
//   maskPNG()      Promise<Blob>: the binary PNG mask (255 = hole) that Remove would send now
//   lastMaskSent   Blob of the mask sent by the last Remove (null before)
//   lastRefined    whether the last Remove asked for refinement
//   resultBlob     Blob of the last image the server answered (null before)
//   resultPixels() Promise<{width, height, data: number[]} | null>: RGBA pixels of the shown result,
//                  read back from a canvas at the image's full size
//   config         the JSON of GET v1/config (null until loaded)
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    open: $("open"), openBig: $("open-big"), fileInput: $("file-input"),
    brushSize: $("brush-size"), brushSizeValue: $("brush-size-value"), eraser: $("eraser"),
    undo: $("undo"), redo: $("redo"), clear: $("clear"),
    compare: $("compare"), remove: $("remove"), download: $("download"),
    refine: $("refine"), refineLabel: $("refine-label"),
    stage: $("stage"), drop: $("drop"), view: $("view"), canvas: $("canvas"),
    split: $("split"), labelBefore: $("label-before"), labelAfter: $("label-after"),
    progress: $("progress"), progressText: $("progress-text"),
    status: $("status"), serverInfo: $("server-info"),
    keyPanel: $("key-panel"), keyForm: $("key-form"), keyInput: $("api-key"), keyMessage: $("key-message"),
    keyCancel: $("key-cancel"),
  };

  const KEY_STORAGE = "lama-fast.api-key";
  const MASK_RGB = [255, 59, 92];           // colour of painted strokes; shown at MASK_ALPHA
  const MASK_ALPHA = 0.55;
  const MAX_DPR = 2;
  const EXTENSIONS = {
    "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/bmp": "bmp",
    "image/tiff": "tiff", "image/gif": "gif",
  };

  const app = {
    state: "empty",
    lastError: "",
    config: null,
    original: null,        // {picture, name, stem}
    ops: [],               // applied operations (see header)
    undone: [],            // operations undone, most recent last
    mask: document.createElement("canvas"),
    comparing: false,
    split: 0.5,            // divider position, 0..1 of the width
    stroke: null,          // {pointerId, op} while a stroke is drawn
    hover: null,           // {x, y} pointer position in CSS pixels of the canvas, for the brush outline
    layout: null,          // {cssW, cssH, dpr}
    lastMaskSent: null,
    lastRefined: false,
    resultBlob: null,
    erase: false,          // eraser on
    retryAfterKey: false,  // a Remove was refused with 401: run it again once a key is given
    memoryKey: "",         // the key when sessionStorage is unavailable
    timer: 0,
    workStart: 0,
    renderQueued: false,
  };
  const maskCtx = app.mask.getContext("2d");
  const viewCtx = ui.canvas.getContext("2d");

  // ---------- pictures ----------

  /** Decode an image Blob; rejects with a readable Error when the browser cannot. */
  async function loadPicture(blob) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob);
    } catch (err) {
      throw new Error(`this browser cannot decode ${blob.type || "this file"} as an image`);
    }
    return { blob, bitmap, width: bitmap.width, height: bitmap.height };
  }

  function stemOf(name) {
    const base = (name || "").replace(/^.*[\\/]/, "");
    const dot = base.lastIndexOf(".");
    return (dot > 0 ? base.slice(0, dot) : base) || "image";
  }

  function resultName(type) {
    const ext = EXTENSIONS[(type || "").split(";")[0].trim().toLowerCase()] || "png";
    return `${app.original ? app.original.stem : "image"}_inpainted.${ext}`;
  }

  // ---------- edit history ----------

  /** Index of the first operation that belongs to the current mask (after the last result or clear). */
  function maskStart() {
    for (let i = app.ops.length - 1; i >= 0; i--) {
      if (app.ops[i].kind !== "stroke") return i + 1;
    }
    return 0;
  }

  function lastResultOp() {
    for (let i = app.ops.length - 1; i >= 0; i--) {
      if (app.ops[i].kind === "result") return app.ops[i];
    }
    return null;
  }

  /** The picture painted on and sent: the latest result, else the opened file. */
  function currentPicture() {
    const op = lastResultOp();
    return op ? op.picture : app.original && app.original.picture;
  }

  function hasStrokes() {
    return app.ops.length > maskStart();
  }

  function pushOp(op) {
    app.ops.push(op);
    app.undone = [];
  }

  /** Make the mask canvas match the current picture and replay the strokes of the current mask. */
  function rebuildMask() {
    const pic = currentPicture();
    if (!pic) return;
    if (app.mask.width !== pic.width || app.mask.height !== pic.height) {
      app.mask.width = pic.width;
      app.mask.height = pic.height;
    }
    maskCtx.setTransform(1, 0, 0, 1, 0, 0);
    maskCtx.globalCompositeOperation = "source-over";
    maskCtx.clearRect(0, 0, app.mask.width, app.mask.height);
    for (let i = maskStart(); i < app.ops.length; i++) {
      const op = app.ops[i];
      for (let p = 0; p < op.points.length / 2; p++) paintSegment(op, p);
    }
  }

  /** Draw point p of a stroke onto the mask: a dot for the first point, a segment from the previous one after. */
  function paintSegment(op, p) {
    const ctx = maskCtx;
    ctx.globalCompositeOperation = op.erase ? "destination-out" : "source-over";
    ctx.fillStyle = ctx.strokeStyle = `rgb(${MASK_RGB.join(",")})`;
    ctx.lineWidth = op.size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    const x = op.points[2 * p], y = op.points[2 * p + 1];
    ctx.beginPath();
    if (p === 0) {
      ctx.arc(x, y, op.size / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.moveTo(op.points[2 * p - 2], op.points[2 * p - 1]);
      ctx.lineTo(x, y);
      ctx.stroke();
    }
    ctx.globalCompositeOperation = "source-over";
  }

  function undo() {
    if (isBusy() || !app.ops.length) return;
    endStroke();
    const op = app.ops.pop();
    app.undone.push(op);
    afterHistoryChange(op);
  }

  function redo() {
    if (isBusy() || !app.undone.length) return;
    endStroke();
    const op = app.undone.pop();
    app.ops.push(op);
    afterHistoryChange(op);
  }

  function afterHistoryChange(op) {
    if (op.kind === "result") {
      app.comparing = false;
      setState(lastResultOp() ? "done" : "ready");
      setStatus(lastResultOp() ? "Showing an earlier result." : "Back to the original photo.");
      layout();
    } else if (app.state === "error") {
      setState(lastResultOp() ? "done" : "ready");
    }
    rebuildMask();
    refresh();
  }

  function clearMask() {
    if (isBusy() || !hasStrokes()) return;
    endStroke();
    pushOp({ kind: "clear" });
    rebuildMask();
    refresh();
  }

  // ---------- mask export ----------

  /** The binary mask at the image's full resolution: {blob: PNG (255 hole, 0 keep), holes: count of hole pixels}. */
  async function buildMask() {
    const w = app.mask.width, h = app.mask.height;
    const src = maskCtx.getImageData(0, 0, w, h).data;
    const out = new ImageData(w, h);
    const dst = out.data;
    let holes = 0;
    for (let i = 0; i < src.length; i += 4) {
      const v = src[i + 3] > 0 ? 255 : 0;
      if (v) holes++;
      dst[i] = dst[i + 1] = dst[i + 2] = v;
      dst[i + 3] = 255;
    }
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").putImageData(out, 0, 0);
    const blob = await new Promise((resolve, reject) =>
      canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("cannot encode the mask"))), "image/png"));
    return { blob, holes };
  }

  // ---------- display ----------

  function layout() {
    const pic = currentPicture();
    if (!pic) return;
    const style = getComputedStyle(ui.stage);
    const availW = ui.stage.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const availH = ui.stage.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
    const scale = Math.max(Math.min(availW / pic.width, availH / pic.height), 0.01);
    const cssW = Math.max(1, Math.round(pic.width * scale));
    const cssH = Math.max(1, Math.round(pic.height * scale));
    const dpr = Math.min(window.devicePixelRatio || 1, MAX_DPR);
    ui.canvas.style.width = `${cssW}px`;
    ui.canvas.style.height = `${cssH}px`;
    ui.canvas.width = Math.round(cssW * dpr);
    ui.canvas.height = Math.round(cssH * dpr);
    app.layout = { cssW, cssH, dpr };
    render();
  }

  function scheduleRender() {
    if (app.renderQueued) return;
    app.renderQueued = true;
    requestAnimationFrame(() => {
      app.renderQueued = false;
      render();
    });
  }

  function render() {
    const pic = currentPicture();
    if (!pic || !app.layout) return;
    const { cssW, cssH, dpr } = app.layout;
    const ctx = viewCtx;
    const sx = (cssW * dpr) / pic.width, sy = (cssH * dpr) / pic.height;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, ui.canvas.width, ui.canvas.height);
    ctx.imageSmoothingEnabled = sx < 4;
    ctx.imageSmoothingQuality = "high";
    ctx.setTransform(sx, 0, 0, sy, 0, 0);
    ctx.drawImage(pic.bitmap, 0, 0);
    const before = app.comparing && lastResultOp() ? lastResultOp().before : null;
    if (before) {
      ctx.save();
      ctx.beginPath();
      ctx.rect(0, 0, pic.width * app.split, pic.height);
      ctx.clip();
      ctx.drawImage(before.bitmap, 0, 0, pic.width, pic.height);
      ctx.restore();
    }
    if (hasStrokes()) {
      ctx.save();
      ctx.globalAlpha = MASK_ALPHA;
      ctx.drawImage(app.mask, 0, 0);
      ctx.restore();
    }
    if (app.hover && !isBusy()) drawBrushOutline(ctx, dpr);
    positionSplit();
  }

  function drawBrushOutline(ctx, dpr) {
    const r = brushCss() / 2;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.lineWidth = 1.5;
    ctx.setLineDash(app.erase ? [4, 3] : []);
    // A dark ring just outside a light one: visible on any photo.
    for (const [colour, radius] of [["rgba(0,0,0,.8)", r + 1], ["rgba(255,255,255,.95)", r]]) {
      ctx.strokeStyle = colour;
      ctx.beginPath();
      ctx.arc(app.hover.x, app.hover.y, radius, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }

  function positionSplit() {
    const show = app.comparing && !!lastResultOp() && !!app.layout;
    ui.split.hidden = !show;
    ui.labelBefore.hidden = !show;
    ui.labelAfter.hidden = !show;
    if (!show) return;
    ui.split.style.left = `${app.split * app.layout.cssW}px`;
    ui.split.setAttribute("aria-valuenow", String(Math.round(app.split * 100)));
    ui.split.setAttribute("aria-valuetext", `${Math.round(app.split * 100)}% before`);
  }

  function setComparing(on) {
    app.comparing = on && !!lastResultOp();
    refresh();
  }

  // ---------- painting ----------

  function brushCss() {
    return Number(ui.brushSize.value);
  }

  /** Pointer position in CSS pixels of the canvas (x, y) and in pixels of the picture (px, py). */
  function pointerPosition(e) {
    const rect = ui.canvas.getBoundingClientRect();
    const pic = currentPicture();
    const x = e.clientX - rect.left, y = e.clientY - rect.top;
    return { x, y, px: (x * pic.width) / rect.width, py: (y * pic.height) / rect.height, perCss: pic.width / rect.width };
  }

  function onPointerDown(e) {
    if (!currentPicture() || isBusy() || app.stroke || e.button !== 0) return;
    e.preventDefault();
    ui.canvas.setPointerCapture(e.pointerId);
    if (app.comparing) app.comparing = false;
    const pos = pointerPosition(e);
    const op = { kind: "stroke", erase: app.erase, size: brushCss() * pos.perCss, points: [pos.px, pos.py] };
    pushOp(op);
    app.stroke = { pointerId: e.pointerId, op };
    app.hover = e.pointerType === "touch" ? null : { x: pos.x, y: pos.y };
    paintSegment(op, 0);
    if (app.state === "error") setState(lastResultOp() ? "done" : "ready");
    refresh();
  }

  function onPointerMove(e) {
    if (!currentPicture()) return;
    const stroke = app.stroke;
    if (stroke && e.pointerId === stroke.pointerId) {
      const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
      for (const ev of events.length ? events : [e]) {
        const pos = pointerPosition(ev);
        const n = stroke.op.points.length;
        if (pos.px === stroke.op.points[n - 2] && pos.py === stroke.op.points[n - 1]) continue;
        stroke.op.points.push(pos.px, pos.py);
        paintSegment(stroke.op, stroke.op.points.length / 2 - 1);
      }
    }
    if (e.pointerType !== "touch") {
      const pos = pointerPosition(e);
      app.hover = { x: pos.x, y: pos.y };
    }
    scheduleRender();
  }

  function onPointerUp(e) {
    if (app.stroke && e.pointerId === app.stroke.pointerId) {
      endStroke();
      refresh();
    }
    if (e.pointerType === "touch") {
      app.hover = null;
      scheduleRender();
    }
  }

  function endStroke() {
    if (!app.stroke) return;
    try {
      ui.canvas.releasePointerCapture(app.stroke.pointerId);
    } catch (err) {
      // Capture already gone (pointer cancelled).
    }
    app.stroke = null;
  }

  function setEraser(on) {
    app.erase = on;
    ui.eraser.setAttribute("aria-pressed", String(on));
    scheduleRender();
  }

  function setBrushSize(value) {
    const min = Number(ui.brushSize.min), max = Number(ui.brushSize.max);
    ui.brushSize.value = String(Math.min(max, Math.max(min, Math.round(value))));
    ui.brushSizeValue.textContent = ui.brushSize.value;
    scheduleRender();
  }

  // ---------- split divider ----------

  function onSplitPointer(e) {
    if (e.type === "pointerdown") {
      if (e.button !== 0) return;
      ui.split.setPointerCapture(e.pointerId);
    } else if (!ui.split.hasPointerCapture(e.pointerId)) {
      return;
    }
    e.preventDefault();
    const rect = ui.canvas.getBoundingClientRect();
    app.split = Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width));
    scheduleRender();
  }

  function onSplitKey(e) {
    const step = e.shiftKey ? 0.01 : 0.05;
    const moves = { ArrowLeft: -step, ArrowDown: -step, ArrowRight: step, ArrowUp: step };
    if (e.key in moves) app.split = Math.min(1, Math.max(0, app.split + moves[e.key]));
    else if (e.key === "Home") app.split = 0;
    else if (e.key === "End") app.split = 1;
    else return;
    e.preventDefault();
    scheduleRender();
  }

  // ---------- opening files ----------

  async function openFile(file) {
    if (!file || isBusy()) return;
    if (file.type && !file.type.startsWith("image/")) {
      fail(`${file.name || "This file"} is not an image (${file.type}).`);
      return;
    }
    let picture;
    try {
      picture = await loadPicture(file);
    } catch (err) {
      fail(`Cannot open ${file.name || "the pasted image"}: ${err.message}.`);
      return;
    }
    endStroke();
    app.original = { picture, name: file.name || "image.png", stem: stemOf(file.name) };
    app.ops = [];
    app.undone = [];
    app.comparing = false;
    app.lastMaskSent = null;
    app.resultBlob = null;
    rebuildMask();
    setState("ready");
    setStatus(`${app.original.name}: ${picture.width}×${picture.height}. Paint over what to remove, then press Remove.`);
    refresh();
    layout();
  }

  function firstImageFile(list) {
    const files = Array.from(list || []);
    return files.find((f) => f.type.startsWith("image/")) || files[0] || null;
  }

  function onDragOver(e) {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types || []).includes("Files")) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = isBusy() ? "none" : "copy";
    ui.stage.classList.add("dragging");
  }

  function onDragLeave(e) {
    if (!e.relatedTarget || !document.documentElement.contains(e.relatedTarget)) {
      ui.stage.classList.remove("dragging");
    }
  }

  function onDrop(e) {
    if (!e.dataTransfer) return;
    e.preventDefault();
    ui.stage.classList.remove("dragging");
    openFile(firstImageFile(e.dataTransfer.files));
  }

  function onPaste(e) {
    if (e.target === ui.keyInput || !e.clipboardData) return;
    const item = Array.from(e.clipboardData.items || []).find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item) return;
    e.preventDefault();
    const file = item.getAsFile();
    const ext = EXTENSIONS[file.type] || "png";
    openFile(file.name ? file : new File([file], `pasted.${ext}`, { type: file.type }));
  }

  // ---------- API key ----------

  function apiKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (err) {
      return app.memoryKey;
    }
  }

  function saveKey(key) {
    app.memoryKey = key;
    try {
      sessionStorage.setItem(KEY_STORAGE, key);
    } catch (err) {
      // Storage disabled: the key lives in memory for this page only.
    }
  }

  function authHeaders() {
    const key = apiKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  /** Take a key given as #key=... in the address, then drop it from the address bar. */
  function keyFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const key = params.get("key");
    if (!key) return;
    saveKey(key);
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }

  function askForKey(message) {
    ui.keyMessage.textContent = message;
    ui.keyPanel.hidden = false;
    ui.keyInput.value = "";
    ui.keyInput.focus();
  }

  function onKeySubmit(e) {
    e.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    saveKey(key);
    ui.keyInput.value = "";
    ui.keyPanel.hidden = true;
    setStatus("API key set for this tab.");
    if (!app.config) loadConfig();
    if (app.retryAfterKey && !isBusy()) {
      app.retryAfterKey = false;
      removeObjects();
    }
  }

  async function loadConfig() {
    let response;
    try {
      response = await fetch("v1/config", { headers: authHeaders() });
    } catch (err) {
      ui.serverInfo.textContent = "server not reachable";
      return;
    }
    if (response.status === 401) {
      askForKey(apiKey() ? "The API key was not accepted; enter the right one." : "This server needs an API key.");
      return;
    }
    if (!response.ok) {
      ui.serverInfo.textContent = `server config unavailable (HTTP ${response.status})`;
      return;
    }
    app.config = await response.json();
    const c = app.config;
    ui.serverInfo.textContent = [c.model, c.backend, c.device, c.dtype].filter(Boolean).join(" · ");
    ui.refineLabel.hidden = c.refine !== true;
    if (c.auth && !apiKey()) askForKey("This server needs an API key.");
  }

  // ---------- Remove ----------

  async function removeObjects() {
    const pic = currentPicture();
    if (!pic || isBusy()) return;
    endStroke();
    const refine = ui.refine.checked && !ui.refineLabel.hidden;
    startWorking(refine ? "Refining…" : "Removing…");
    let response, answer, maskBlob, holes;
    try {
      ({ blob: maskBlob, holes } = await buildMask());
    } catch (err) {
      stopWorking();
      fail(`Cannot make the mask: ${err.message}.`);
      return;
    }
    if (!holes) {
      stopWorking();
      setState(lastResultOp() ? "done" : "ready");
      setStatus("Paint over what you want to remove first.");
      refresh();
      return;
    }
    const form = new FormData();
    form.append("image", pic.blob, lastResultOp() ? resultName(pic.blob.type) : app.original.name);
    form.append("mask", maskBlob, "mask.png");
    if (refine) form.append("refine", "true");
    app.lastMaskSent = maskBlob;
    app.lastRefined = refine;
    const sentKey = apiKey();
    try {
      response = await fetch("v1/inpaint", { method: "POST", body: form, headers: authHeaders() });
      if (response.ok) answer = await response.blob();
    } catch (err) {
      stopWorking();
      fail(`Cannot reach the server: ${err.message}.`);
      return;
    }
    if (!response.ok) {
      const detail = await errorDetail(response);
      stopWorking();
      failFromResponse(response, detail, sentKey);
      return;
    }
    let result;
    try {
      result = await loadPicture(answer);
    } catch (err) {
      stopWorking();
      fail(`This browser cannot show the server's answer (${answer.type || "unknown type"}).`);
      return;
    }
    const seconds = stopWorking();
    app.resultBlob = answer;
    pushOp({ kind: "result", picture: result, before: pic });
    app.comparing = true;
    app.split = 0.5;
    rebuildMask();
    setState("done");
    const model = parseFloat(response.headers.get("X-Inpaint-Seconds") || "");
    setStatus(`Done in ${seconds.toFixed(1)} s${Number.isFinite(model) ? ` (model ${model.toFixed(2)} s)` : ""}. ` +
              "Drag the divider to compare; paint again to keep editing the result.", "done");
    layout();
    refresh();
  }

  /** The "detail" of an error answer as one line of text ("" if none). */
  async function errorDetail(response) {
    let text = "";
    try {
      text = await response.text();
    } catch (err) {
      return "";
    }
    try {
      const detail = JSON.parse(text).detail;
      if (typeof detail === "string") return detail;
      if (Array.isArray(detail)) {
        return detail.map((d) => (d && d.msg ? `${(d.loc || []).slice(-1)[0] || "request"}: ${d.msg}` : String(d)))
          .join("; ");
      }
      if (detail !== undefined) return JSON.stringify(detail);
    } catch (err) {
      // Not JSON: fall back to the text itself.
    }
    return text.trim().split("\n")[0].slice(0, 300);
  }

  function failFromResponse(response, detail, sentKey) {
    const status = response.status;
    const suffix = detail ? `: ${detail}` : "";
    if (status === 401) {
      app.retryAfterKey = true;
      const message = sentKey ? "The API key was not accepted" : "This server needs an API key";
      askForKey(`${message}. Enter it to continue.`);
      fail(`${message}${suffix}`);
    } else if (status === 503) {
      const wait = parseInt(response.headers.get("Retry-After") || "", 10);
      fail(Number.isFinite(wait) ? `Server busy, retry in ${wait} s.` : "Server busy, retry in a moment.");
    } else if (status === 413) {
      fail(`Too large${suffix}`);
    } else if (status === 415) {
      fail(`Unsupported format${suffix}`);
    } else if (status === 400 || status === 422) {
      fail(detail || `The server rejected the request (HTTP ${status}).`);
    } else {
      fail(`Server error ${status}${suffix || ` ${response.statusText}`}`);
    }
  }

  function startWorking(what) {
    setState("working");
    const start = performance.now();
    const tick = () => {
      const text = `${what} ${((performance.now() - start) / 1000).toFixed(1)} s`;
      ui.progressText.textContent = text;
      ui.status.textContent = text;
    };
    ui.status.className = "";
    tick();
    app.timer = setInterval(tick, 100);
    app.workStart = start;
    ui.progress.hidden = false;
    refresh();
  }

  /** Stop the progress display; returns the seconds spent. */
  function stopWorking() {
    clearInterval(app.timer);
    ui.progress.hidden = true;
    return (performance.now() - app.workStart) / 1000;
  }

  // ---------- download ----------

  function download() {
    const op = lastResultOp();
    if (!op || isBusy()) return;
    const blob = op.picture.blob;
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = resultName(blob.type);
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    setStatus(`Saved ${a.download} (${op.picture.width}×${op.picture.height}, ${formatBytes(blob.size)}).`);
  }

  function formatBytes(n) {
    return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
  }

  // ---------- state and controls ----------

  function isBusy() {
    return app.state === "working";
  }

  function setState(state) {
    app.state = state;
    document.body.dataset.state = state;
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.className = kind || "";
  }

  function fail(message) {
    app.lastError = message;
    setState("error");
    setStatus(message, "error");
    refresh();
  }

  /** Enable/disable controls and show/hide parts from the current state, then redraw. */
  function refresh() {
    const busy = isBusy();
    const pic = currentPicture();
    const result = lastResultOp();
    ui.drop.hidden = !!pic;
    ui.view.hidden = !pic;
    ui.view.classList.toggle("busy", busy);
    ui.open.disabled = busy;
    ui.openBig.disabled = busy;
    ui.brushSize.disabled = busy;
    ui.refine.disabled = busy;
    ui.eraser.disabled = busy || !pic;
    ui.undo.disabled = busy || !app.ops.length;
    ui.redo.disabled = busy || !app.undone.length;
    ui.clear.disabled = busy || !hasStrokes();
    ui.remove.disabled = busy || !hasStrokes();
    ui.download.disabled = busy || !result;
    ui.compare.disabled = busy || !result;
    ui.compare.setAttribute("aria-pressed", String(app.comparing && !!result));
    ui.remove.setAttribute("aria-busy", String(busy));
    if (pic && !app.layout) layout();
    else scheduleRender();
  }

  function onKeyDown(e) {
    const target = e.target;
    if (target === ui.keyInput) return;
    const mod = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    if (mod && key === "z") {
      e.preventDefault();
      if (e.shiftKey) redo();
      else undo();
    } else if (mod && key === "y") {
      e.preventDefault();
      redo();
    } else if (!mod && !e.altKey && (key === "[" || key === "]")) {
      setBrushSize(brushCss() * (key === "]" ? 1.25 : 0.8));
    } else if (!mod && !e.altKey && key === "e" && !isBusy() && currentPicture()) {
      setEraser(!app.erase);
    }
  }

  function wire() {
    ui.open.addEventListener("click", () => ui.fileInput.click());
    ui.openBig.addEventListener("click", () => ui.fileInput.click());
    ui.fileInput.addEventListener("change", () => {
      const file = firstImageFile(ui.fileInput.files);
      ui.fileInput.value = "";
      openFile(file);
    });
    ui.brushSize.addEventListener("input", () => setBrushSize(brushCss()));
    ui.eraser.addEventListener("click", () => setEraser(!app.erase));
    ui.undo.addEventListener("click", undo);
    ui.redo.addEventListener("click", redo);
    ui.clear.addEventListener("click", clearMask);
    ui.compare.addEventListener("click", () => setComparing(!app.comparing));
    ui.remove.addEventListener("click", removeObjects);
    ui.download.addEventListener("click", download);

    ui.canvas.addEventListener("pointerdown", onPointerDown);
    ui.canvas.addEventListener("pointermove", onPointerMove);
    ui.canvas.addEventListener("pointerup", onPointerUp);
    ui.canvas.addEventListener("pointercancel", onPointerUp);
    ui.canvas.addEventListener("pointerleave", () => {
      app.hover = null;
      scheduleRender();
    });
    ui.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    for (const type of ["pointerdown", "pointermove", "pointerup", "pointercancel"]) {
      ui.split.addEventListener(type, onSplitPointer);
    }
    ui.split.addEventListener("keydown", onSplitKey);

    window.addEventListener("dragover", onDragOver);
    window.addEventListener("dragleave", onDragLeave);
    window.addEventListener("drop", onDrop);
    document.addEventListener("paste", onPaste);
    document.addEventListener("keydown", onKeyDown);
    ui.keyForm.addEventListener("submit", onKeySubmit);
    ui.keyCancel.addEventListener("click", () => {
      ui.keyPanel.hidden = true;
      app.retryAfterKey = false;
    });
    new ResizeObserver(() => layout()).observe(ui.stage);
  }

  window.lamaFast = {
    get state() { return app.state; },
    get lastError() { return app.lastError; },
    get lastMaskSent() { return app.lastMaskSent; },
    get lastRefined() { return app.lastRefined; },
    get resultBlob() { return app.resultBlob; },
    get config() { return app.config; },
    maskPNG: async () => (await buildMask()).blob,
    resultPixels: async () => {
      const op = lastResultOp();
      if (!op) return null;
      const pic = op.picture;
      const canvas = document.createElement("canvas");
      canvas.width = pic.width;
      canvas.height = pic.height;
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(pic.bitmap, 0, 0);
      const data = ctx.getImageData(0, 0, pic.width, pic.height).data;
      return { width: pic.width, height: pic.height, data: Array.from(data) };
    },
  };

  wire();
  keyFromFragment();
  setBrushSize(brushCss());
  refresh();
  loadConfig();
})();
