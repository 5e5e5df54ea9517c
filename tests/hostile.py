"""Hostile checkpoint files, made on the spot: each attack writes its file and says what the
loader must answer.

Used by tests/test_hostile_checkpoints.py (in-process checks, and a subprocess that measures
each load's peak memory) and by bench/hostile_bench.py (time and memory, before and after).
Run as a script, it loads the files named on its command line in one process and prints one
JSON line per file: the error, the seconds taken and the peak extra resident memory.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional

SENTINEL = "SENTINEL_RAN"

# --------------------------------------------------------------------------- raw pickle pieces


def proto() -> bytes:
    return pickle.PROTO + b"\x02"


def text(value: str) -> bytes:
    data = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    if 0 <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def glob(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def call(func: bytes, *args: bytes) -> bytes:
    return func + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def mapping(items: Dict[str, bytes]) -> bytes:
    body = b"".join(text(k) + v for k, v in items.items())
    return pickle.EMPTY_DICT + (pickle.MARK + body + pickle.SETITEMS if items else b"")


def tensor(key: str, numel: int, size: tuple, stride: tuple, storage: str = "FloatStorage", offset: int = 0) -> bytes:
    """A tensor as torch.save pickles it: _rebuild_tensor_v2 over a persistent storage id."""
    persid = (pickle.MARK + text("storage") + glob("torch", storage) + text(key) + text("cpu") + integer(numel)
              + pickle.TUPLE + pickle.BINPERSID)
    shape = pickle.MARK + b"".join(integer(s) for s in size) + pickle.TUPLE
    strides = pickle.MARK + b"".join(integer(s) for s in stride) + pickle.TUPLE
    hooks = call(glob("collections", "OrderedDict"))
    return call(glob("torch._utils", "_rebuild_tensor_v2"), persid, integer(offset), shape, strides,
                pickle.NEWFALSE, hooks)


def run_payload(sentinel: Path) -> bytes:
    """``os.system('touch SENTINEL')`` through GLOBAL and REDUCE."""
    return call(glob("os", "system"), text(f"touch '{sentinel}'"))


def stop(body: bytes) -> bytes:
    return proto() + body + pickle.STOP


def torch_zip(path: Path, data_pkl: bytes, records: Optional[Dict[str, bytes]] = None, *,
              prefix: str = "archive", torchscript: bool = False, compress: int = zipfile.ZIP_STORED) -> Path:
    """A zip laid out as torch.save (or torch.jit.save) writes it."""
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr(f"{prefix}/data.pkl", data_pkl)
        _torch_records(archive, prefix)
        if torchscript:
            archive.writestr(f"{prefix}/constants.pkl", stop(pickle.EMPTY_TUPLE))
            archive.writestr(f"{prefix}/code/__torch__.py", "")
        for name, data in (records or {}).items():
            archive.writestr(f"{prefix}/data/{name}", data)
    return path


def _torch_records(archive: zipfile.ZipFile, prefix: str = "archive") -> None:
    """The small records torch.save writes beside data.pkl (torch.load wants them)."""
    archive.writestr(f"{prefix}/byteorder", "little")
    archive.writestr(f"{prefix}/version", "3\n")


def floats(n: int, value: float = 0.5) -> bytes:
    return struct.pack(f"<{n}f", *([value] * n))


# --------------------------------------------------------------------------- the attacks


class Attack(NamedTuple):
    make: Callable[[Path], Path]     # writes the file into a folder, returns its path
    error: str                       # regex the CheckpointError must match
    call: str = "read_state_dict"    # or "load_generator"


def _weights_zip(path: Path, entries: Dict[str, bytes], records: Dict[str, bytes], **kw) -> Path:
    return torch_zip(path, stop(mapping({"state_dict": mapping(entries)})), records, **kw)


def _good_entry(name: str = "generator.model.1.ffc.convl2l.weight") -> Dict[str, bytes]:
    return {name: tensor("0", 4, (2, 2), (2, 1))}


def build_on_allowed_globals(d: Path) -> Path:
    # BUILD with (None, slotstate) would setattr on the real function/class for an unpickler that
    # hands out real globals: the process would be changed for good.
    defaults = pickle.MARK + pickle.NONE + mapping({"__defaults__": pickle.MARK + integer(7) + pickle.TUPLE}) + pickle.TUPLE
    counter = pickle.MARK + pickle.NONE + mapping({"most_common": glob("builtins", "len")}) + pickle.TUPLE
    body = (pickle.EMPTY_LIST + glob("torch._utils", "_rebuild_tensor_v2") + defaults + pickle.BUILD + pickle.APPEND
            + glob("collections", "Counter") + counter + pickle.BUILD + pickle.APPEND)
    return torch_zip(d / "build.pt", stop(body), torchscript=True)


def build_on_container(d: Path) -> Path:
    body = call(glob("collections", "OrderedDict")) + mapping({"x": integer(1)}) + pickle.BUILD
    return torch_zip(d / "build_dict.pt", stop(body))


def huge_bytearray(d: Path) -> Path:
    body = mapping({"state_dict": call(glob("builtins", "bytearray"), integer(2_000_000_000))})
    return torch_zip(d / "bytearray.pt", stop(body))


def reduce_system(d: Path) -> Path:
    return torch_zip(d / "reduce.pt", stop(mapping({"state_dict": run_payload(d / SENTINEL)})))


def stack_global_system(d: Path) -> Path:
    func = text("os") + text("system") + pickle.STACK_GLOBAL
    body = mapping({"x": func + pickle.MARK + text(f"touch '{d / SENTINEL}'") + pickle.TUPLE + pickle.REDUCE})
    return torch_zip(d / "stack_global.pt", stop(body))


def inst_system(d: Path) -> Path:
    body = pickle.MARK + text(f"touch '{d / SENTINEL}'") + pickle.INST + b"os\nsystem\n"
    return torch_zip(d / "inst.pt", stop(mapping({"x": body})))


def obj_system(d: Path) -> Path:
    body = pickle.MARK + glob("os", "system") + text(f"touch '{d / SENTINEL}'") + pickle.OBJ
    return torch_zip(d / "obj.pt", stop(mapping({"x": body})))


def _popen_touch(d: Path) -> bytes:
    """subprocess.Popen and its arguments ``(["touch", SENTINEL],)``, for a NEWOBJ opcode to call."""
    args = pickle.MARK + pickle.MARK + text("touch") + text(str(d / SENTINEL)) + pickle.LIST + pickle.TUPLE
    return glob("subprocess", "Popen") + args


def newobj_popen(d: Path) -> Path:
    return torch_zip(d / "newobj.pt", stop(mapping({"x": _popen_touch(d) + pickle.NEWOBJ})))


def newobj_ex_popen(d: Path) -> Path:
    return torch_zip(d / "newobj_ex.pt", stop(mapping({"x": _popen_touch(d) + pickle.EMPTY_DICT + pickle.NEWOBJ_EX})))


def ext_code(d: Path) -> Path:
    return torch_zip(d / "ext.pt", stop(mapping({"x": pickle.EXT1 + b"\x01"})))


def foreign_persistent_id(d: Path) -> Path:
    persid = pickle.MARK + text("module") + run_payload(d / SENTINEL) + pickle.TUPLE + pickle.BINPERSID
    return torch_zip(d / "persid.pt", stop(mapping({"x": persid})))


def text_persistent_id(d: Path) -> Path:
    return torch_zip(d / "text_persid.pt", stop(mapping({"x": pickle.PERSID + b"0\n"})))


def out_of_band_buffer(d: Path) -> Path:
    return torch_zip(d / "buffer.pt", proto()[:1] + b"\x05" + mapping({"x": pickle.NEXT_BUFFER}) + pickle.STOP)


def object_flood(d: Path) -> Path:
    body = pickle.EMPTY_LIST + (pickle.EMPTY_LIST + pickle.APPEND) * 1_100_000
    return torch_zip(d / "flood.pt", stop(body))


def deep_nesting(d: Path) -> Path:
    body = mapping({"x": pickle.NONE + pickle.TUPLE1 * 200_000})
    return torch_zip(d / "deep.pt", stop(body))


def nested_key(d: Path) -> Path:
    key = pickle.NONE + pickle.TUPLE1 * 100_000
    return torch_zip(d / "nested_key.pt", stop(pickle.EMPTY_DICT + key + integer(1) + pickle.SETITEM))


def record_size_lie(d: Path) -> Path:
    # The pickle says 4 floats; the record holds 4 MiB.
    return _weights_zip(d / "size_lie.pt", _good_entry(), {"0": bytes(4 * 2**20)})


def inflating_record(d: Path) -> Path:
    """A storage of 2**28 floats whose record is 1 GiB of deflated zeros, about 1 MB on disk."""
    numel = 2**28
    path = d / "inflate.pt"
    entries = {"generator.model.1.ffc.convl2l.weight": tensor("0", numel, (numel,), (1,))}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", stop(mapping({"state_dict": mapping(entries)})))
        _torch_records(archive)
        chunk = bytes(16 * 2**20)
        with archive.open("archive/data/0", "w", force_zip64=True) as w:
            for _ in range(numel * 4 // len(chunk)):
                w.write(chunk)
    return path


def inflating_pickle(d: Path) -> Path:
    path = d / "inflate_pkl.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as w:
            w.write(pickle.PROTO + b"\x02" + pickle.EMPTY_LIST)
            chunk = (pickle.NONE + pickle.POP) * (8 * 2**20)
            for _ in range(4):
                w.write(chunk)
            w.write(pickle.STOP)
        _torch_records(archive)
    return path


def many_records(d: Path) -> Path:
    """An end-of-archive record that claims 60,000 entries."""
    path = torch_zip(d / "records.pt", stop(mapping({})))
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x05\x06")
    data[at + 8:at + 12] = struct.pack("<HH", 60_000, 60_000)
    path.write_bytes(bytes(data))
    return path


def _zip_with_record(path: Path, name: str) -> Path:
    """A torch-shaped zip with one more record, stored under ``name`` exactly as given."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", stop(mapping({})))
        _torch_records(archive)
        info = zipfile.ZipInfo("archive/extra")
        info.filename = name  # zipfile would tidy a name given to the constructor
        archive.writestr(info, "touch pwned")
    return path


def traversal_name(d: Path) -> Path:
    return _zip_with_record(d / "traversal.pt", "archive/../../evil.sh")


def absolute_name(d: Path) -> Path:
    return _zip_with_record(d / "absolute.pt", "/etc/cron.d/evil")


def tensor_past_storage(d: Path) -> Path:
    entries = {"generator.model.1.ffc.convl2l.weight": tensor("0", 4, (1000,), (1,))}
    return _weights_zip(d / "past.pt", entries, {"0": floats(4)})


def negative_offset_view(d: Path) -> Path:
    entries = {"generator.model.1.ffc.convl2l.weight": tensor("0", 4, (2, 2), (2, 1), offset=3)}
    return _weights_zip(d / "offset.pt", entries, {"0": floats(4)})


def dtype_file(storage: str, name: str, itemsize: int) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        entries = {"generator.model.1.ffc.convl2l.weight": tensor("0", 4, (4,), (1,), storage=storage)}
        return _weights_zip(d / f"{name}.pt", entries, {"0": bytes(4 * itemsize)})
    return make


def value_file(name: str, key: str, value: float) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        entries = {f"generator.{key}": tensor("0", 4, (4,), (1,))}
        return _weights_zip(d / f"{name}.pt", entries, {"0": floats(3) + struct.pack("<f", value)})
    return make


def rebuilt_by(func: str, name: str) -> Callable[[Path], Path]:
    """A generator weight pickled through another rebuilder (sparse, quantized, meta)."""
    def make(d: Path) -> Path:
        entries = {"generator.model.1.ffc.convl2l.weight": call(glob("torch._utils", func), integer(1))}
        return _weights_zip(d / f"{name}.pt", entries, {})
    return make


def safetensors_file(path: Path, header: dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _zero_size_tensors(path: Path, n: int) -> Path:
    entries = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(n))
    raw = ("{" + entries + "}").encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def safetensors_million(d: Path) -> Path:
    return _zero_size_tensors(d / "million.safetensors", 1_000_000)


def safetensors_many(d: Path) -> Path:
    return _zero_size_tensors(d / "many.safetensors", 30_000)


def safetensors_config(name: str, config_text: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        header = {"__metadata__": {"lama_fast_config": config_text},
                  "model.1.ffc.convl2l.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
        return safetensors_file(d / f"{name}.safetensors", header, floats(1))
    return make


def _config_with(**changes) -> str:
    config = {"input_nc": 4, "output_nc": 3, "ngf": 64, "n_downsampling": 3, "n_blocks": 18,
              "add_out_act": "sigmoid", "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75,
                                                               "enable_lfu": False}}
    config.update(changes)
    return json.dumps(config)


def safetensors_past_end(d: Path) -> Path:
    header = {"model.1.ffc.convl2l.weight": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}}
    return safetensors_file(d / "past_end.safetensors", header, floats(1))


def safetensors_dtype(d: Path) -> Path:
    header = {"model.1.ffc.convl2l.weight": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}
    return safetensors_file(d / "complex.safetensors", header, bytes(8))


def legacy_claim(d: Path) -> Path:
    """A legacy torch.save stream whose storage claims 2**40 floats."""
    magic = stop(integer(0x1950A86A20F9469CFC6C))
    version = stop(pickle.BININT2 + struct.pack("<H", 1001))
    info = stop(mapping({"protocol_version": integer(1001), "little_endian": pickle.NEWTRUE}))
    persid = (pickle.MARK + text("storage") + glob("torch", "FloatStorage") + text("k") + text("cpu")
              + integer(2**40) + pickle.NONE + pickle.TUPLE + pickle.BINPERSID)
    rebuild = call(glob("torch._utils", "_rebuild_tensor_v2"), persid, integer(0),
                   pickle.MARK + integer(2**40) + pickle.TUPLE, pickle.MARK + integer(1) + pickle.TUPLE,
                   pickle.NEWFALSE, call(glob("collections", "OrderedDict")))
    data = stop(mapping({"model.1.ffc.convl2l.weight": rebuild}))
    keys = stop(pickle.EMPTY_LIST + text("k") + pickle.APPEND)
    path = d / "legacy_claim.pth"
    path.write_bytes(magic + version + info + data + keys + struct.pack("<q", 2**40) + floats(4))
    return path


def fifo(d: Path) -> Path:
    path = d / "fifo.ckpt"
    os.mkfifo(path)
    return path


ATTACKS: Dict[str, Attack] = {
    "build-on-allowed-globals": Attack(build_on_allowed_globals, r"refused: the pickle sets the state of .*_rebuild_tensor_v2.* \(BUILD\)"),
    "build-on-container": Attack(build_on_container, r"refused: the pickle sets the state of OrderedDict \(BUILD\)"),
    "bytearray-2GB": Attack(huge_bytearray, r"no generator weights found: its 'state_dict' entry is <unloaded builtins\.bytearray\(\)>"),
    "reduce-os-system": Attack(reduce_system, r"no generator weights found: its 'state_dict' entry is <unloaded os\.system\(\)>"),
    "stack-global": Attack(stack_global_system, r"no generator weights found.*its keys: x"),
    "inst": Attack(inst_system, r"no generator weights found.*its keys: x"),
    "obj": Attack(obj_system, r"no generator weights found.*its keys: x"),
    "newobj": Attack(newobj_popen, r"no generator weights found.*its keys: x"),
    "newobj-ex": Attack(newobj_ex_popen, r"no generator weights found.*its keys: x"),
    "ext1": Attack(ext_code, r"refused: extension-registry references \(EXT1\)"),
    "persistent-id-module": Attack(foreign_persistent_id, r"refused: unsupported persistent id"),
    "persistent-id-text": Attack(text_persistent_id, r"refused: text persistent ids \(PERSID\)"),
    "out-of-band-buffer": Attack(out_of_band_buffer, r"refused: opcode NEXT_BUFFER"),
    "object-flood": Attack(object_flood, r"refused: the pickle creates more than 1,000,000 objects"),
    "deep-nesting": Attack(deep_nesting, r"no generator weights found.*its keys: x"),
    "nested-dict-key": Attack(nested_key, r"refused: a dict key of type tuple"),
    "record-size-lie": Attack(record_size_lie, r"refused: storage '0' claims 4 elements of torch\.float32 \(16 bytes\) but its record holds 4,194,304 bytes"),
    "zip-bomb-record": Attack(inflating_record, r"tensors to load add up to more than [\d,]+ bytes"),
    "zip-bomb-pickle": Attack(inflating_pickle, r"its data\.pkl claims 67,108,868 bytes"),
    "zip-records-claim": Attack(many_records, r"zip archive lists 60,000 records"),
    "path-traversal": Attack(traversal_name, r"zip record name 'archive/\.\./\.\./evil\.sh' is not a plain relative path"),
    "absolute-name": Attack(absolute_name, r"zip record name '/etc/cron\.d/evil' is not a plain relative path"),
    "tensor-past-storage": Attack(tensor_past_storage, r"tensor model\.1\.ffc\.convl2l\.weight of shape \[1000\] reaches past its storage of 4 elements"),
    "view-past-storage": Attack(negative_offset_view, r"tensor model\.1\.ffc\.convl2l\.weight of shape \[2, 2\] reaches past its storage of 4 elements \(offset 3"),
    "int64-weight": Attack(dtype_file("LongStorage", "int64", 8), r"tensor model\.1\.ffc\.convl2l\.weight has dtype torch\.int64; LaMa weights are float16, bfloat16, float32 or float64"),
    "bool-weight": Attack(dtype_file("BoolStorage", "bool", 1), r"has dtype torch\.bool"),
    "complex-weight": Attack(dtype_file("ComplexFloatStorage", "complex", 8), r"has dtype torch\.complex64"),
    "nan-weight": Attack(value_file("nan", "model.1.ffc.convl2l.weight", float("nan")), r"tensor model\.1\.ffc\.convl2l\.weight holds 1 NaN or infinite value\(s\)"),
    "inf-weight": Attack(value_file("inf", "model.1.bn_l.weight", float("inf")), r"tensor model\.1\.bn_l\.weight holds 1 NaN or infinite value\(s\)"),
    "negative-variance": Attack(value_file("var", "model.1.bn_l.running_var", -1.0), r"tensor model\.1\.bn_l\.running_var holds 1 negative value\(s\); a BatchNorm variance cannot be negative"),
    "sparse-tensor": Attack(rebuilt_by("_rebuild_sparse_tensor", "sparse"), r"tensor model\.1\.ffc\.convl2l\.weight \(torch\._utils\._rebuild_sparse_tensor\) is not a dense tensor"),
    "quantized-tensor": Attack(rebuilt_by("_rebuild_qtensor", "quantized"), r"\(torch\._utils\._rebuild_qtensor\) is not a dense tensor"),
    "meta-tensor": Attack(rebuilt_by("_rebuild_meta_tensor_no_storage", "meta"), r"\(torch\._utils\._rebuild_meta_tensor_no_storage\) is not a dense tensor"),
    "safetensors-million": Attack(safetensors_million, r"safetensors header of [\d,]+ bytes is larger than the 8,388,608 bytes"),
    "safetensors-30k": Attack(safetensors_many, r"refused: it holds 30,000 tensors; a LaMa checkpoint has at most 20,000"),
    "safetensors-past-end": Attack(safetensors_past_end, r"tensor 'model\.1\.ffc\.convl2l\.weight' of shape \[1073741824\] claims bytes 0\.\.4294967296 of 4"),
    "safetensors-complex": Attack(safetensors_dtype, r"tensor 'model\.1\.ffc\.convl2l\.weight' has dtype 'C64'"),
    "config-n-blocks": Attack(safetensors_config("blocks", _config_with(n_blocks=200_000)), r"n_blocks must be an integer in \[0, 64\], got 200000", "load_generator"),
    "config-n-downsampling": Attack(safetensors_config("downs", _config_with(n_downsampling=100_000)), r"n_downsampling must be an integer in \[0, 6\], got 100000", "load_generator"),
    "config-deep-json": Attack(safetensors_config("deep", "[" * 30_000 + "]" * 30_000), r"is nested too deeply to be a generator config", "load_generator"),
    "config-huge": Attack(safetensors_config("huge", json.dumps({"pad": "x" * 100_000})), r"is 100,011 characters; a generator config is under 65,536", "load_generator"),
    "config-unknown-key": Attack(safetensors_config("unknown", _config_with(spatial_transform_layers=[1])), r"unsupported option 'spatial_transform_layers'", "load_generator"),
    "legacy-claim": Attack(legacy_claim, r"storage 'k' claims 4,398,046,511,104 bytes past the end of the file"),
    "fifo": Attack(fifo, r"not a regular file \(a FIFO\); give a checkpoint file"),
}


# --------------------------------------------------------------------------- the measuring process


def process_state() -> dict:
    """What an unpickler that handed out real globals could change: the allowed globals, their
    attributes and defaults, the copyreg tables and the imported modules."""
    import collections
    import copyreg

    from torch._weights_only_unpickler import _get_allowed_globals

    objects = dict(_get_allowed_globals())
    objects["collections.Counter"] = collections.Counter
    state: dict = {}
    for name, obj in sorted(objects.items()):
        attrs = getattr(obj, "__dict__", None)
        state[name] = (
            id(obj),
            repr(getattr(obj, "__defaults__", None)),
            repr(getattr(obj, "__kwdefaults__", None)),
            {k: id(v) for k, v in attrs.items()} if attrs is not None else None,
        )
    state["copyreg"] = (dict(copyreg._extension_registry), dict(copyreg.dispatch_table))
    # zipfile imports a codec on first meeting a name without the UTF-8 flag: stdlib, not the file's choice.
    state["modules"] = sorted(m for m in sys.modules if not m.startswith("encodings."))
    return state


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def measure(paths: List[str], call: List[str]) -> None:
    """Load each file in this process; one JSON line each: error, seconds, peak extra MiB."""
    import tempfile

    import torch

    from lama_fast import checkpoint

    # A first load of each format imports what loading needs: done here, so that a change of the
    # process during an attack's load is the attack's doing.
    with tempfile.TemporaryDirectory() as tmp:
        weights = {"model.0.weight": torch.ones(1)}
        torch.save(weights, f"{tmp}/zip.pt")
        torch.save(weights, f"{tmp}/legacy.pt", _use_new_zipfile_serialization=False)
        import safetensors.torch

        safetensors.torch.save_file(weights, f"{tmp}/st.safetensors")
        for name in ("zip.pt", "legacy.pt", "st.safetensors"):
            checkpoint.read_state_dict(f"{tmp}/{name}")
    for path, how in zip(paths, call):
        before = process_state()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident size to the current one
        base = _kib("VmRSS")
        start = time.perf_counter()
        error = None
        try:
            getattr(checkpoint, how)(path)
        except Exception as exc:  # report every outcome: the caller judges
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
        peak = (_kib("VmHWM") - base) / 1024
        changed = process_state() != before
        print(json.dumps({"path": path, "error": error, "seconds": round(seconds, 3), "peak_extra_mib": round(peak, 1),
                          "process_changed": changed}), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    measure(args[0::2], args[1::2])
