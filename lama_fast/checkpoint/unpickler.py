"""A pickle reader that builds plain data and tensor references, and nothing else.

It runs the pickle's opcodes itself (decoded by the standard library's ``pickletools``)
instead of handing them to ``pickle.Unpickler``, so no object outside the ones it creates
is ever touched: a named global becomes a :class:`Global` tag and is never imported, a call
(``REDUCE``, ``NEWOBJ``, ``INST``, ``OBJ``) of anything but the tensor rebuilders becomes an
:class:`Inert` record of its arguments, and ``BUILD`` only sets the state of such records.
Tensors become :class:`TensorRef` objects that say where their bytes are; nothing is read
until the loader has picked the tensors it needs and checked their bounds.
"""

from __future__ import annotations

import io
import pickletools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch

from .limits import MAX_PICKLE_ITEMS, MAX_TENSOR_DIMS, MAX_TENSORS


class UnpicklingRefused(Exception):
    """The pickle does something a checkpoint never does, or claims more than the budgets allow."""


class PickleTruncated(UnpicklingRefused):
    """The pickle's bytes end early or do not decode as opcodes."""


@dataclass(frozen=True)
class Global:
    """A global the pickle names (``module.name``); never imported."""

    module: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.module}.{self.name}"


class Inert:
    """What the pickle built by calling a global we do not run: the call's name and arguments."""

    __slots__ = ("global_name", "args", "state", "items", "elements")

    def __init__(self, global_name: str, args: Tuple[Any, ...] = ()) -> None:
        self.global_name = global_name
        self.args = args
        self.state: Any = None
        self.items: Dict[Any, Any] = {}
        self.elements: List[Any] = []

    def __repr__(self) -> str:
        return f"<unloaded {self.global_name}>"


@dataclass(eq=False)
class StorageRef:
    """A tensor storage: ``numel`` elements of ``dtype`` in the record ``key`` of the file."""

    key: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)


@dataclass(eq=False)
class TensorRef:
    """A tensor as a view (offset, size, stride in elements) of a storage, not yet read."""

    storage: StorageRef
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.size

    @property
    def numel(self) -> int:
        n = 1
        for s in self.size:
            n *= s
        return n

    def is_contiguous_view(self) -> bool:
        """Whether the tensor is a plain row-major run of its storage."""
        expected = 1
        for s, st in zip(reversed(self.size), reversed(self.stride)):
            if s != 1 and st != expected:
                return False
            expected *= s
        return True


# The storage classes a torch pickle names, by their legacy names.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}
# Scalars a dict key or set element may be: hashing anything nested could recurse without bound.
_KEY_TYPES = (str, int, float, bool, bytes, type(None))


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _as_int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UnpicklingRefused(f"{what} must be an integer >= {low}, got {_short(value)}")
    return value


def _as_shape(value: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_TENSOR_DIMS:
        raise UnpicklingRefused(f"{what} must be a tuple of at most {MAX_TENSOR_DIMS} integers, got {_short(value)}")
    return tuple(_as_int(v, what) for v in value)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, str, bytes, type(None), Inert, Global)) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


class Reader:
    """Runs one pickle; ``persistent`` turns a persistent id into a :class:`StorageRef`."""

    def __init__(self, persistent: Callable[[Any], Any]) -> None:
        self._persistent = persistent
        self._items = 0
        self.tensors = 0

    # ------------------------------------------------------------------ budgets

    def _count(self, n: int = 1) -> None:
        self._items += n
        if self._items > MAX_PICKLE_ITEMS:
            raise UnpicklingRefused(f"the pickle creates more than {MAX_PICKLE_ITEMS:,} objects")

    # ------------------------------------------------------------------ calls

    def _rebuild_tensor(self, args: Tuple[Any, ...]) -> TensorRef:
        if len(args) < 4:
            raise UnpicklingRefused(f"torch._utils._rebuild_tensor_v2 called with {len(args)} arguments")
        storage, offset, size, stride = args[:4]
        if not isinstance(storage, StorageRef):
            raise UnpicklingRefused(f"a tensor rebuilt from {_short(storage)} instead of a storage")
        offset = _as_int(offset, "a tensor's storage offset")
        size, stride = _as_shape(size, "a tensor's size"), _as_shape(stride, "a tensor's stride")
        if len(size) != len(stride):
            raise UnpicklingRefused(f"a tensor's size {size} and stride {stride} differ in length")
        self.tensors += 1
        if self.tensors > MAX_TENSORS:
            raise UnpicklingRefused(f"the pickle holds more than {MAX_TENSORS:,} tensors")
        return TensorRef(storage, offset, size, stride)

    def _rebuild_parameter(self, args: Tuple[Any, ...]) -> Any:
        if not args or not isinstance(args[0], TensorRef):
            raise UnpicklingRefused("a parameter rebuilt from something that is not a tensor")
        return args[0]

    def _ordered_dict(self, args: Tuple[Any, ...]) -> "OrderedDict[Any, Any]":
        out: "OrderedDict[Any, Any]" = OrderedDict()
        if args:
            if len(args) != 1 or not isinstance(args[0], (list, tuple)):
                raise UnpicklingRefused("collections.OrderedDict called with arguments other than a list of pairs")
            for pair in args[0]:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise UnpicklingRefused("collections.OrderedDict called with an item that is not a pair")
                self._setitem(out, pair[0], pair[1])
        return out

    def _call(self, func: Any, args: Any) -> Any:
        if not isinstance(args, tuple):
            raise UnpicklingRefused(f"a call with arguments of type {type(args).__name__}")
        if isinstance(func, Global):
            name = func.full_name
            if name == "torch._utils._rebuild_tensor_v2" or name == "torch._utils._rebuild_tensor":
                return self._rebuild_tensor(args)
            if name in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
                return self._rebuild_parameter(args)
            if name == "collections.OrderedDict":
                return self._ordered_dict(args)
            if name == "torch.Size":
                return _as_shape(args[0] if args else (), "torch.Size")
            return Inert(f"{name}()", args)
        if isinstance(func, Inert):
            return Inert(f"{func.global_name}()", args)
        raise UnpicklingRefused(f"the pickle calls a {type(func).__name__}")

    # ------------------------------------------------------------------ containers

    def _setitem(self, target: Any, key: Any, value: Any) -> None:
        if not isinstance(key, _KEY_TYPES):
            raise UnpicklingRefused(f"a dict key of type {type(key).__name__}")
        self._count()
        if isinstance(target, dict):
            target[key] = value
        elif isinstance(target, Inert):
            target.items[key] = value
        else:
            raise UnpicklingRefused(f"the pickle sets an item on a {type(target).__name__}")

    def _append(self, target: Any, values: List[Any]) -> None:
        self._count(len(values))
        if isinstance(target, list):
            target.extend(values)
        elif isinstance(target, Inert):
            target.elements.extend(values)
        else:
            raise UnpicklingRefused(f"the pickle appends to a {type(target).__name__}")

    def _set(self, values: List[Any]) -> List[Any]:
        for v in values:
            if not isinstance(v, _KEY_TYPES):
                raise UnpicklingRefused(f"a set element of type {type(v).__name__}")
        self._count(len(values))
        return values

    # ------------------------------------------------------------------ the machine

    def load(self, stream: io.BufferedIOBase) -> Any:
        """Run the pickle that starts at the stream's position; it is left just past STOP."""
        stack: List[Any] = []
        marks: List[int] = []
        memo: Dict[int, Any] = {}

        def pop_mark() -> List[Any]:
            if not marks:
                raise UnpicklingRefused("the pickle pops a mark it never set")
            start = marks.pop()
            items = stack[start:]
            del stack[start:]
            return items

        def pop() -> Any:
            if len(stack) <= (marks[-1] if marks else 0):
                raise UnpicklingRefused("the pickle pops from an empty stack")
            return stack.pop()

        def top() -> Any:
            if not stack:
                raise UnpicklingRefused("the pickle reads an empty stack")
            return stack[-1]

        def put(index: int) -> None:
            self._count()
            memo[index] = top()

        try:
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if name in ("PROTO", "FRAME"):
                    continue
                if name == "STOP":
                    if len(stack) != 1 or marks:
                        raise UnpicklingRefused("the pickle stops with an unbalanced stack")
                    return stack[0]
                self._count()
                if name == "MARK":
                    marks.append(len(stack))
                elif name == "POP":
                    pop()
                elif name == "POP_MARK":
                    pop_mark()
                elif name == "DUP":
                    stack.append(top())
                elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
                              "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE",
                              "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES",
                              "SHORT_BINBYTES", "BINBYTES8"):
                    # pickletools has decoded the argument already ("INT" 01/00 are bools).
                    stack.append(arg)
                elif name == "BYTEARRAY8":
                    stack.append(bytes(arg))
                elif name == "NONE":
                    stack.append(None)
                elif name in ("NEWTRUE", "NEWFALSE"):
                    stack.append(name == "NEWTRUE")
                elif name == "EMPTY_TUPLE":
                    stack.append(())
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    if len(stack) - (marks[-1] if marks else 0) < n:
                        raise UnpicklingRefused(f"{name} on a stack of fewer than {n} items")
                    items = tuple(stack[-n:])
                    del stack[-n:]
                    stack.append(items)
                elif name == "TUPLE":
                    stack.append(tuple(pop_mark()))
                elif name == "EMPTY_LIST":
                    stack.append([])
                elif name == "LIST":
                    items = pop_mark()
                    self._count(len(items))
                    stack.append(items)
                elif name == "EMPTY_DICT":
                    stack.append({})
                elif name == "DICT":
                    items = pop_mark()
                    d: Dict[Any, Any] = {}
                    for k, v in zip(items[::2], items[1::2]):
                        self._setitem(d, k, v)
                    stack.append(d)
                elif name == "EMPTY_SET":
                    stack.append(set())
                elif name == "FROZENSET":
                    stack.append(frozenset(self._set(pop_mark())))
                elif name == "ADDITEMS":
                    items = self._set(pop_mark())
                    target = top()
                    if not isinstance(target, set):
                        raise UnpicklingRefused(f"ADDITEMS on a {type(target).__name__}")
                    target.update(items)
                elif name == "APPEND":
                    value = pop()
                    self._append(top(), [value])
                elif name == "APPENDS":
                    items = pop_mark()
                    self._append(top(), items)
                elif name == "SETITEM":
                    value, key = pop(), pop()
                    self._setitem(top(), key, value)
                elif name == "SETITEMS":
                    items = pop_mark()
                    if len(items) % 2:
                        raise UnpicklingRefused("SETITEMS with an odd number of items")
                    target = top()
                    for k, v in zip(items[::2], items[1::2]):
                        self._setitem(target, k, v)
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    put(int(arg))
                elif name == "MEMOIZE":
                    put(len(memo))
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    if int(arg) not in memo:
                        raise UnpicklingRefused(f"the pickle reads memo entry {arg}, which it never wrote")
                    stack.append(memo[int(arg)])
                elif name == "GLOBAL":
                    module, _, attr = str(arg).partition(" ")
                    stack.append(Global(module, attr))
                elif name == "STACK_GLOBAL":
                    attr, module = pop(), pop()
                    if not isinstance(module, str) or not isinstance(attr, str):
                        raise UnpicklingRefused("STACK_GLOBAL with names that are not strings")
                    stack.append(Global(module, attr))
                elif name == "REDUCE":
                    args = pop()
                    func = pop()
                    stack.append(self._call(func, args))
                elif name == "NEWOBJ":
                    args = pop()
                    cls = pop()
                    stack.append(Inert(_class_name(cls), args if isinstance(args, tuple) else (args,)))
                elif name == "NEWOBJ_EX":
                    _, args, cls = pop(), pop(), pop()  # keyword arguments are never applied
                    stack.append(Inert(_class_name(cls), args if isinstance(args, tuple) else (args,)))
                elif name == "INST":
                    module, _, attr = str(arg).partition(" ")
                    stack.append(Inert(f"{module}.{attr}", tuple(pop_mark())))
                elif name == "OBJ":
                    items = pop_mark()
                    if not items:
                        raise UnpicklingRefused("OBJ without a class")
                    stack.append(Inert(_class_name(items[0]), tuple(items[1:])))
                elif name == "BUILD":
                    state = pop()
                    target = top()
                    if not isinstance(target, Inert):
                        raise UnpicklingRefused(
                            f"the pickle sets the state of {_short(target)} (BUILD); only objects it "
                            "created itself may get a state")
                    target.state = state
                elif name == "BINPERSID":
                    stack.append(self._persistent(pop()))
                elif name == "PERSID":
                    raise UnpicklingRefused("text persistent ids (PERSID) do not occur in torch files")
                elif name in ("EXT1", "EXT2", "EXT4"):
                    raise UnpicklingRefused(f"extension-registry references ({name}) do not occur in torch files")
                else:  # NEXT_BUFFER, READONLY_BUFFER and anything newer
                    raise UnpicklingRefused(f"opcode {name} does not occur in torch files")
        except UnpicklingRefused:
            raise
        except (ValueError, TypeError, EOFError, OverflowError, UnicodeDecodeError, IndexError,
                RecursionError, MemoryError) as exc:
            # pickletools reports truncated or malformed opcodes as ValueError.
            raise PickleTruncated(f"{type(exc).__name__}: {exc}") from None
        raise PickleTruncated("the pickle ends without STOP")


def _class_name(cls: Any) -> str:
    if isinstance(cls, Global):
        return cls.full_name
    if isinstance(cls, Inert):
        return f"{cls.global_name}()"
    raise UnpicklingRefused(f"the pickle instantiates {_short(cls)}, which is not a class it named")


def storage_persistent_id(saved_id: Any) -> Tuple[str, torch.dtype, int]:
    """The (key, dtype, numel) of a torch storage persistent id, checked."""
    if not isinstance(saved_id, tuple) or len(saved_id) not in (5, 6) or saved_id[0] not in ("storage", b"storage"):
        raise UnpicklingRefused(f"unsupported persistent id {_short(saved_id)}")
    _, storage_type, key, _location, numel = saved_id[:5]
    if not isinstance(storage_type, Global) or storage_type.module not in ("torch", "torch.cuda"):
        raise UnpicklingRefused(f"persistent id with storage type {_short(storage_type)}")
    dtype = STORAGE_DTYPES.get(storage_type.name)
    if dtype is None:
        raise UnpicklingRefused(f"unsupported storage type {storage_type.full_name}")
    if not isinstance(key, (str, int)) or isinstance(key, bool):
        raise UnpicklingRefused(f"persistent id with storage key {_short(key)}")
    if len(saved_id) == 6 and saved_id[5] is not None:
        raise UnpicklingRefused("storage views (legacy view metadata) are not supported")
    return str(key), dtype, _as_int(numel, "a storage's element count")


def read_pickle(stream: io.BufferedIOBase, persistent: Callable[[Any], Any]) -> Any:
    """Run one pickle from ``stream`` (left just past its STOP) and return what it built."""
    return Reader(persistent).load(stream)


__all__ = ["Global", "Inert", "PickleTruncated", "StorageRef", "TensorRef", "UnpicklingRefused", "read_pickle",
           "storage_persistent_id", "STORAGE_DTYPES"]
