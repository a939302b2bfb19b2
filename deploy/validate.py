"""The one validation layer for what users hand the tool: ONNX files, model metadata, labels, numbers, output
paths and the memory a run will need. Every command goes through these checks, so a bad input is one line
``error: ...`` (exit 2) that names the file and the field, never a traceback deep inside onnx or numpy.

Torch-free and Python 3.8, like the rest of deploy/; checkpoint checks that need torch live in
models/checkpoint.py and reuse ``check_finite_number`` and the messages here.
"""
import math
import numbers
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import UserError

# Opsets a model may carry. The Q/DQ models and TensorRT's parser need 13+ (per-channel QuantizeLinear);
# anything older or newer than the installed onnx knows cannot be checked, calibrated or converted.
MIN_OPSET = 13
# The oldest opset ONNX Runtime loads; deploy.infer and bundle accept any model it can run.
MIN_LOAD_OPSET = 7
# Used when the onnx package is absent (a Jetson): ORT 1.x and TensorRT 8.5-10.x parse up to this.
FALLBACK_MAX_OPSET = 21
# Class counts and indices beyond this are typos (ImageNet-21k has 21841); it also keeps indices in int64.
MAX_CLASSES = 1000000
# Preprocessing sizes beyond this make one image a multi-gigabyte tensor; no classifier here needs it. It bounds
# --input-size/--crop and --resize as well as the metadata's input_size and resize_size: one bound for both.
MAX_INPUT_SIZE = 4096
# A batch may use at most this share of the memory the machine has available, the rest is for the runtime.
MEMORY_SHARE = 0.6
# Bounds of the size-like options. Each is far above any real use and far below what exhausts a machine; the
# memory a batch needs at a given input size is checked on top (check_batch_memory).
MAX_BATCH = 4096            # --batch, --batch-size, --batch-sizes, --max-batch: TensorRT profiles stop far lower
MAX_NUM_IMAGES = 1000000    # --num-images and the like: ImageNet's validation split is 50,000
MAX_ITERATIONS = 100000     # --iterations, --warmup: timed runs per batch size
MAX_ECA_CONVS = 16          # export --eca-convs: 1-D convs stacked per ECA module; 100000 never finish tracing
MAX_ECA_KERNEL = 63         # export --k-size: the paper's kernels are 3-9; 1000001 took 2.6 GB and 46 s
MAX_WORKSPACE_MIB = 1 << 20  # build --workspace: 1 TiB, above any GPU's memory (an H200 has 141 GB)
# The widest classifier input in the zoo (bottleneck ResNets), and the copies of the head an export holds at once
# (PyTorch's, the traced graph's, the ONNX proto's and ONNX Runtime's): what --num-classes costs.
HEAD_FEATURES = 2048
EXPORT_COPIES = 4
# Threads (--threads, --workers) per core: more only adds switching, and 100000 of them broke the machine.
THREADS_PER_CORE = 4


# -- numbers ---------------------------------------------------------------------------------------------

def check_finite_number(name: str, value, minimum: Optional[float] = None,
                        maximum: Optional[float] = None) -> float:
    """``value`` as a float, or a UserError naming ``name`` when it is NaN, infinite or out of range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError("{} must be a number, got {!r}".format(name, value)) from None
    if not math.isfinite(number):
        raise UserError("{} must be a finite number, got {}".format(name, value))
    if minimum is not None and number < minimum:
        raise UserError("{} must be at least {:g}, got {:g}".format(name, minimum, number))
    if maximum is not None and number > maximum:
        raise UserError("{} must be at most {:g}, got {:g}".format(name, maximum, number))
    return number


def parse_int_field(name: str, text, minimum: int = 1, maximum: Optional[int] = None, source: str = "") -> int:
    """An integer field of metadata or a labels file: ``"10"`` or ``10``, never ``"ten"``, ``"1e3"`` or 10**20."""
    where = "{}: ".format(source) if source else ""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise UserError("{}{} must be an integer, got {!r}".format(where, name, text))
    raw = text.strip().strip('"') if isinstance(text, str) else str(text)
    if not re.match(r"^-?[0-9]{1,12}$", raw):
        raise UserError("{}{} must be an integer{}, got {!r}".format(
            where, name, " from {} to {}".format(minimum, maximum) if maximum is not None else "", str(text)[:40]))
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        raise UserError("{}{} must be between {} and {}, got {}".format(where, name, minimum, maximum, value)
                        if maximum is not None else "{}{} must be at least {}, got {}".format(
                            where, name, minimum, value))
    return value


def max_threads() -> int:
    """The most threads (--threads, --workers) a run may ask for on this machine."""
    return (os.cpu_count() or 1) * THREADS_PER_CORE


def check_bound(flag: str, value, maximum: int, minimum: int = 1):
    """A size-like option within [minimum, maximum], else one line naming the flag and the bound; None passes
    (not given) and a list is checked item by item. Commands call it before heavy imports."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return type(value)(check_bound(flag, item, maximum, minimum) for item in value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError("{} must be an integer, got {!r}".format(flag, value))
    value = int(value)
    if value < minimum:
        raise UserError("{} must be at least {}, got {}".format(flag, minimum, value))
    if value > maximum:
        raise UserError("{} {} is above the limit of {}".format(flag, value, maximum))
    return value


def check_threads(flag: str, value, minimum: int = 1):
    """--threads / --workers: at most THREADS_PER_CORE per core of this machine."""
    if isinstance(value, numbers.Integral) and value > max_threads():
        raise UserError("{} {} is above the limit of {} ({} per core, {} cores)".format(
            flag, value, max_threads(), THREADS_PER_CORE, os.cpu_count() or 1))
    return check_bound(flag, value, max_threads(), minimum)


# -- ONNX files ------------------------------------------------------------------------------------------

def max_opset() -> int:
    """The newest opset the installed onnx knows (what the checker and converters accept)."""
    try:
        import onnx
        return int(onnx.defs.onnx_opset_version())
    except Exception:  # noqa: BLE001  (no onnx on a Jetson: a conservative bound)
        return FALLBACK_MAX_OPSET


def check_opset(opset, minimum: int = MIN_OPSET, maximum: Optional[int] = None, source: str = "--opset") -> int:
    """``opset`` inside [minimum, maximum]; the message says which range is supported."""
    maximum = max_opset() if maximum is None else maximum
    value = parse_int_field(source, opset, minimum=0)
    if not minimum <= value <= maximum:
        raise UserError("{} {} is not supported; use an opset from {} to {}".format(source, value, minimum, maximum))
    return value


def model_opset(model) -> Optional[int]:
    """The default-domain opset of a ModelProto, or None when it imports none."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _tensors_of(model):
    """Every TensorProto of a ModelProto that may keep its data outside the file: initializers, the values and
    indices of sparse initializers (onnx's own external-data helper skips those), tensors in node attributes,
    through subgraphs and functions."""
    found = []

    def attributes(nodes):
        for node in nodes:
            for attribute in node.attribute:
                found.extend([attribute.t] if attribute.HasField("t") else [])
                found.extend(attribute.tensors)
                for sparse in ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []) + list(
                        attribute.sparse_tensors):
                    found.extend((sparse.values, sparse.indices))
                for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    walk(graph)

    def walk(graph):
        found.extend(graph.initializer)
        for sparse in graph.sparse_initializer:
            found.extend((sparse.values, sparse.indices))
        attributes(graph.node)

    walk(model.graph)
    for function in model.functions:
        attributes(function.node)
    return found


def external_data_files(model, path: str) -> List[str]:
    """The external-data files (relative to the model's folder) a ModelProto needs; UserError for a location
    that is absolute, leaves the folder or is missing, since loading it would read elsewhere or fail."""
    folder = os.path.dirname(os.path.abspath(path))
    real_folder = os.path.realpath(folder)
    found: List[str] = []
    for tensor in _tensors_of(model):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if not location or os.path.isabs(location) or location.replace("\\", "/").startswith("/"):
            raise UserError("{}: tensor {!r} keeps its data at {!r}, not a path inside the model's folder".format(
                path, tensor.name, location))
        target = os.path.realpath(os.path.join(folder, location))
        if os.path.commonpath([target, real_folder]) != real_folder:
            raise UserError("{}: tensor {!r} keeps its data at {!r}, outside the model's folder".format(
                path, tensor.name, location))
        if not os.path.isfile(target):
            raise UserError("{}: external data file {} of tensor {!r} is missing".format(
                path, os.path.join(folder, location), tensor.name))
        relative = os.path.normpath(location)
        if relative not in found:
            found.append(relative)
    return found


def model_data_paths(path: str) -> List[str]:
    """Every external-data file an ONNX model refers to (dense and sparse tensors), as absolute paths, whether or
    not it exists or lies in the model's folder: what reading the model reads, for the output guard. Never
    raises: [] for a file that is not a readable model (the command's own checks say what is wrong with it).
    Without the onnx package (a Jetson), a bundle's manifest lists its models' data files."""
    from .filekind import is_regular_file
    if not path.lower().endswith(".onnx") or not is_regular_file(path):
        return []
    folder = os.path.dirname(os.path.abspath(path))
    if not _may_hold_external_data(path):
        return []
    try:
        import onnx
    except ImportError:
        return _manifest_data_paths(folder)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001  (not a model: nothing of it to protect)
        return []
    found: List[str] = []
    for tensor in _tensors_of(model):
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            location = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
            target = os.path.normpath(os.path.join(folder, location)) if location else ""
            if target and target not in found:
                found.append(target)
    return found


def _may_hold_external_data(path: str) -> bool:
    """A model whose bytes never spell "location" (the key of every external-data entry) has none; a large model
    without external data is then not parsed twice."""
    import mmap
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return False
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return data.find(b"location") >= 0
    except (OSError, ValueError):
        return False


def _manifest_data_paths(folder: str) -> List[str]:
    from .manifest import read_manifest
    try:
        manifest = read_manifest(folder)
    except UserError:
        return []
    return [os.path.normpath(os.path.join(folder, name)) for name in (manifest or {}).get("data_files", [])]


# Files whose sidecar (<file>.json: metadata, or the engine's TensorRT version and GPU) is read with them.
_SIDECAR_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")


def files_read_with(path: str) -> List[Tuple[str, str]]:
    """(what, path) of the files a command reads along with the input ``path``: a model's external data, a
    model's or engine's sidecar JSON and, for a model or engine in a bundle, the bundle's members."""
    found = [("external data", data) for data in model_data_paths(path)]
    if path.lower().endswith(_SIDECAR_SUFFIXES) and os.path.isfile(path + ".json"):
        found.append(("sidecar", path + ".json"))
    if path.lower().endswith(_SIDECAR_SUFFIXES) and os.path.isfile(path):
        from .manifest import bundle_members
        found += [("bundle file", member) for member in bundle_members(os.path.dirname(os.path.abspath(path)))
                  if member != os.path.abspath(path)]
    return found


# The largest ONNX file read whole (onnx.load and ONNX Runtime hold it in memory, protobuf stops at 2 GiB): the
# zoo's largest model, ECA-ResNet-152 in FP32, is 0.23 GB; bigger models keep their weights as external data.
MAX_ONNX_BYTES = 1 << 30
# A ModelProto has a handful of top-level fields plus one per metadata entry and opset import: more than this
# many is no model, and walking them stays quick.
MAX_TOP_LEVEL_FIELDS = 100000


def _read_varint(handle) -> int:
    result = 0
    for shift in range(0, 70, 7):
        byte = handle.read(1)
        if not byte:
            raise EOFError("it ends inside a field")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
    raise ValueError("a field key is longer than protobuf allows")


def _walk_top_level_fields(path: str, size: int) -> None:
    """Skip over the top-level protobuf fields of ``path`` (key, then length) without reading their contents: a
    file of zeros (a sparse 1.5 GB file) or of random bytes fails at its first key, at no memory cost, before a
    parser reads it whole. ValueError/EOFError say why it is no ModelProto."""
    with open(path, "rb") as handle:
        fields = 0
        while handle.tell() < size:
            key = _read_varint(handle)
            number, wire = key >> 3, key & 7
            if number == 0 or wire not in (0, 1, 2, 5):
                raise ValueError("byte {} is no protobuf field (number {}, wire type {})".format(
                    handle.tell() - 1, number, wire))
            if wire == 0:
                _read_varint(handle)
            else:
                handle.seek({1: 8, 5: 4}.get(wire) or _read_varint(handle), os.SEEK_CUR)
            if handle.tell() > size:
                raise EOFError("field {} runs past the end of the file".format(number))
            fields += 1
            if fields > MAX_TOP_LEVEL_FIELDS:
                raise ValueError("more than {} top-level fields".format(MAX_TOP_LEVEL_FIELDS))


def check_onnx_file(path: str) -> None:
    """Before any parser reads ``path`` whole: at most MAX_ONNX_BYTES, and its top-level structure is protobuf.
    UserError naming the file otherwise; a missing file is left to the caller's own message."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_ONNX_BYTES:
            raise UserError("{} is {:.2f} GiB, above the {:g} GiB an ONNX file may hold inline; save its weights as "
                            "external data (onnx.save_model(..., save_as_external_data=True))".format(
                                path, size / 2.0 ** 30, MAX_ONNX_BYTES / 2.0 ** 30))
        _walk_top_level_fields(path, size)
    except (ValueError, EOFError) as exc:
        raise UserError("{} is not a readable ONNX model: {}".format(path, exc)) from None
    except OSError:
        return  # unreadable: the loader that follows names the reason


def check_onnx_model(model, path: str, min_opset: int = MIN_LOAD_OPSET) -> None:
    """Opset in range and external data inside the model's folder, before onnx or ORT is asked to load it."""
    opset = model_opset(model)
    if opset is None:
        raise UserError("{} imports no ONNX operator set; it is not a model this tool exported".format(path))
    top = max_opset()
    if not min_opset <= opset <= top:
        raise UserError("{} uses opset {}; supported: {} to {}".format(path, opset, min_opset, top))
    problem = graph_structure_problem(model.graph)
    if problem:
        raise UserError("{}: {}".format(path, problem))
    external_data_files(model, path)


def graph_structure_problem(graph) -> Optional[str]:
    """Why the top-level graph cannot be run in any order, or None: a node input nothing provides, a graph output
    no node makes, or a cycle. ONNX Runtime refuses these when a session starts and TensorRT's parser while
    importing ("Node input was not registered", "The output tensor was not registered", "Failed to sort the
    model topologically"); named here, before anything is planned or run. Nodes need not be listed in order."""
    provided = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    provided |= {sparse.values.name for sparse in graph.sparse_initializer}
    producer = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name:
                producer[name] = index
    for node in graph.node:
        for name in node.input:
            if name and name not in provided and name not in producer:
                return "node {} ({}) reads {!r}, which no node, input or initializer provides".format(
                    node.name or "?", node.op_type, name)
    for output in graph.output:
        if output.name not in producer and output.name not in provided:
            return "graph output {!r} is not produced by any node (it is disconnected)".format(output.name)
    # Kahn's algorithm: whatever cannot be ordered lies on or behind a cycle
    users = {}
    waiting = []
    for index, node in enumerate(graph.node):
        sources = {producer[name] for name in node.input if name in producer and name not in provided}
        waiting.append(len(sources))
        for source in sources:
            users.setdefault(source, []).append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        index = ready.pop()
        done += 1
        for user in users.get(index, ()):
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if done < len(graph.node):
        stuck = next(node for index, node in enumerate(graph.node) if waiting[index] > 0)
        return "its graph has a cycle (through node {} ({})); an ONNX graph must be acyclic".format(
            stuck.name or "?", stuck.op_type)
    return None


# -- metadata --------------------------------------------------------------------------------------------

def check_metadata_dict(meta, source: str) -> Dict[str, str]:
    """Metadata must be a flat object of strings (an ONNX ``metadata_props`` or a sidecar's ``metadata``)."""
    if not isinstance(meta, dict):
        raise UserError("{}: metadata must be a JSON object, got a {}".format(source, type(meta).__name__))
    return {str(key): value if isinstance(value, str) else _json_text(value) for key, value in meta.items()}


def _json_text(value) -> str:
    import json
    return json.dumps(value)


def check_against_graph(input_shape: Optional[Sequence], output_shape: Optional[Sequence], input_size: int,
                        num_classes: int, source: str) -> None:
    """Metadata that describes another model (copied in, or edited) is refused, naming the field that differs."""
    if input_shape is not None and len(input_shape) == 4:
        height, width = input_shape[2], input_shape[3]
        if all(isinstance(d, int) and d > 0 for d in (height, width)) and (height, width) != (input_size,
                                                                                            input_size):
            raise UserError("{}: metadata field input_size is {}, but the model's input is {}x{} (metadata of "
                            "another model?)".format(source, input_size, height, width))
    if output_shape is not None and len(output_shape) == 2:
        classes = output_shape[1]
        if isinstance(classes, int) and classes > 0 and classes != num_classes:
            raise UserError("{}: metadata field num_classes is {}, but the model outputs {} classes (metadata of "
                            "another model?)".format(source, num_classes, classes))


def graph_io_shapes(model) -> Tuple[Optional[List], Optional[List]]:
    """(first input shape, first output shape) of a ModelProto, dims as int or None (symbolic)."""
    def shape(value):
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            return None
        return [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return (shape(inputs[0]) if inputs else None,
            shape(model.graph.output[0]) if model.graph.output else None)


# -- labels ----------------------------------------------------------------------------------------------

def parse_class_index(text: str, labels_file: str, line: int) -> int:
    """A class index of a labels file: a non-negative integer below MAX_CLASSES, else a UserError at its line."""
    return parse_int_field("class index", text, minimum=0, maximum=MAX_CLASSES - 1,
                           source="labels file {} line {}".format(labels_file, line))


def check_labels_in_range(labels: Iterable[int], sources: Optional[Sequence[str]], num_classes: int,
                          what: str = "labels") -> None:
    """Every class index < ``num_classes``; the error names the first bad one and where it came from."""
    for position, label in enumerate(labels):
        if not 0 <= int(label) < num_classes:
            where = sources[position] if sources and position < len(sources) and sources[position] else \
                "{} entry {}".format(what, position + 1)
            raise UserError("{}: class index {} is out of range for a model with {} classes (0 to {})".format(
                where, int(label), num_classes, num_classes - 1))


# -- output paths ----------------------------------------------------------------------------------------

def check_output_file(path, what: str = "output") -> str:
    """An output file path that can be written: not a folder, its parent a folder (or creatable)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise UserError("{} {} is a folder; give a file path".format(what, path))
    check_parent_folders(path, what)
    return path


def check_parent_folders(path, what: str = "output") -> None:
    """The nearest existing parent of ``path`` is a folder: `-o f/m.onnx` with a file f fails here, by name."""
    path = os.path.abspath(os.fspath(path))
    probe = os.path.dirname(path)
    while probe and not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if probe and os.path.exists(probe) and not os.path.isdir(probe):
        raise UserError("cannot write {} {}: {} is not a folder".format(what, path, probe))


def check_output_files(paths: Iterable, what: str = "output") -> List[str]:
    """check_output_file for a set of artifacts, all before the first one is written."""
    return [check_output_file(path, what) for path in paths]


# -- outputs that would destroy inputs -------------------------------------------------------------------

def _labelled_paths(pairs) -> List[Tuple[str, str]]:
    """(label, path) for each given path; a pair's path may be None (option not given) or a list (ARTIFACTS)."""
    found = []
    for label, value in pairs:
        if value is None or value == "":
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        found.extend((label, os.fspath(item)) for item in values if item is not None and item != "")
    return found


def _real(path: str) -> str:
    # realpath resolves every link on the way, so `link.onnx -> real.onnx` and `real.onnx` meet here
    return os.path.realpath(os.path.abspath(path))


def _inside(path: str, folder: str) -> bool:
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


def _same_file(first: str, second: str) -> bool:
    """One file under two names: one real path, or one inode (a hard link, a bind mount)."""
    if _real(first) == _real(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist yet
        return False


def _named(label: str, path: str) -> str:
    """How a path is named in a message: as the user wrote it, with where a link leads."""
    real = _real(path)
    return "{} {}{}".format(label, path, "" if real == os.path.abspath(path) else " (-> {})".format(real))


def check_not_special(path, what: str = "output") -> None:
    """An output path that holds a FIFO, a socket or a device is refused: writing atomically would replace it
    silently (and a reader at the other end of the FIFO would wait forever)."""
    from .filekind import file_kind
    path = os.fspath(path)
    kind = file_kind(path) if os.path.exists(path) else "missing"
    if kind not in ("missing", "a regular file", "a folder"):
        raise UserError("{} {} is {}, not a regular file, and writing there would replace it; choose another "
                        "output".format(what, path, kind))


def check_outputs_spare_inputs(outputs=(), inputs=(), replaced=()) -> None:
    """The one output guard: refuse, before any work, an output that would destroy or change an input.

    ``outputs``: (label, path) of files and folders the command writes (into); ``replaced``: (label, path) of
    what it replaces whole (a bundle folder); ``inputs``: (label, path or paths) of everything it reads. Paths
    are compared as real paths, through links. An output may not be an input, nor lie inside an input folder;
    a replaced output may not hold an input either. The UserError names the input in danger.
    """
    sources = [(label, path, _real(path)) for label, path in _labelled_paths(inputs)]
    # a model is more than its file: its external data and sidecar are read with it, and are inputs as much
    sources += [("{} {}'s {}".format(label, path, what), extra, _real(extra)) for label, path, _ in list(sources)
                for what, extra in files_read_with(path)]
    written = [(label, path, False) for label, path in _labelled_paths(outputs)]
    written += [(label, path, True) for label, path in _labelled_paths(replaced)]
    for out_label, out_path, replaces in written:
        check_parent_folders(out_path, out_label)
        check_not_special(out_path, out_label)
        real, target = _real(out_path), _named(out_label, out_path)
        for in_label, in_path, in_real in sources:
            folder = os.path.isdir(in_real)
            source = "the input {}{}".format("folder " if folder else "", _named(in_label, in_path))
            if _same_file(out_path, in_path):
                raise UserError("{} {}; choose another output".format(
                    target, "is " + source + ", and writing there would change it" if folder
                    else "would overwrite " + source))
            if folder and _inside(real, in_real):
                raise UserError("{} lies inside {}, and writing there would change it; choose an output "
                                "outside it".format(target, source))
            if replaces and _inside(in_real, real):
                raise UserError("{} would replace the folder that holds {}; choose another output".format(
                    target, source))


# -- memory ----------------------------------------------------------------------------------------------

def available_memory_bytes() -> Optional[int]:
    """Memory the machine can give this process now (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", "r") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed_bytes: int, what: str, hint: str = "") -> None:
    """Refuse work whose estimate exceeds MEMORY_SHARE of the available memory, before it starts."""
    available = available_memory_bytes()
    if available is None or needed_bytes <= available * MEMORY_SHARE:
        return
    raise UserError("{} needs about {:.1f} GiB ({} bytes), but this machine has {:.1f} GiB available{}".format(
        what, needed_bytes / 2.0 ** 30, int(needed_bytes), available / 2.0 ** 30, "; " + hint if hint else ""))


# -- execution providers ---------------------------------------------------------------------------------

# Activation memory of a CNN classifier per image, as a multiple of its input tensor: ONNX Runtime's largest
# single request for batch 100000 of a 32x32 ECA-ResNet was about 21x the input batch, so 24x bounds it.
ACTIVATION_FACTOR = 24


def batch_memory_bytes(batch_size: int, input_size: int, channels: int = 3) -> int:
    """A rough upper estimate of what running one batch of float32 images needs (input plus activations)."""
    return int(batch_size) * channels * int(input_size) ** 2 * 4 * (ACTIVATION_FACTOR + 1)


def check_head_memory(num_classes: int, flag: str = "--num-classes") -> None:
    """The classifier head of ``num_classes`` classes, in every copy an export holds, fits in memory."""
    check_memory(int(num_classes) * HEAD_FEATURES * 4 * EXPORT_COPIES, "a classifier head of {} classes".format(
        num_classes), "use a smaller {}".format(flag))


def check_batch_memory(batch_size: int, input_size: int, flag: str = "--batch-sizes") -> None:
    check_memory(batch_memory_bytes(batch_size, input_size), "a batch of {} images at {}x{}".format(
        batch_size, input_size, input_size), "use a smaller {}".format(flag))
