"""Export a trained TCDCN to ONNX (float, and int8 by static quantisation) for torch-free inference.

The graph takes the raw grey crop batch ``crops`` (N, 1, S, S) float32 in 0..255, standardises it
inside (as ``models.network.standardise`` does), and returns ``landmarks`` (N, P, 2) in normalised [-1, 1]
crop coordinates and ``attribute_logits`` (N, T). Everything needed to run it (scheme, task names,
input size, config, source, and the test-time defaults the model ran with: ``test_time``) is stored in the ONNX
model's ``metadata_props``, so the .onnx file alone is a complete model for
``tcdcn.inference.backends.onnx.OnnxLandmarkModel``, which runs it as the model it came from.

Quantisation: ``quantize_int8`` uses onnxruntime's static quantisation (QDQ or QOperator format) with
per-channel int8 weights and uint8 activations, calibrated on crops of MTFL *training* faces. The conv
trunk (convolutions, ReLUs, max-pools, flatten) and the shared fully connected layer are quantised; the
in-graph standardisation (one LayerNormalization node) and the two small heads stay float, because
they cost almost nothing and quantising them is what loses the landmark accuracy (the heads map 256
features to sub-pixel coordinates). For QDQ the first layer is first rewritten into the same function
in a shape onnxruntime's int8 convolution runs faster (``space_to_depth_stem``). The bench
(bench/speed.py) reports the measured accuracy and speed of both formats, with and without that stem.

The float graph's first layer is padded with zero channels to a multiple of onnxruntime's channel block
(``pad_first_layer``); quantisation starts from the layer as trained (``unpad_first_layer``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import TcdcnError
from ..evaluation.metrics import normalised_face_errors
from ..io.atomic import atomic_write_bytes
from ..models.denormals import cpu_session_options, flush_onnx_initializers
from ..models.registry import options_record
from .backends.onnx import FORMAT_NAME, FORMAT_VERSION, OnnxLandmarkModel

if TYPE_CHECKING:
    from ..data.annotation import FaceAnnotation
    from ..models.network import TCDCN
    from .backends.torch import LandmarkModel

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = (9, 20)  # what torch's TorchScript exporter writes without warnings
INPUT_NAME = "crops"
OUTPUT_NAMES = ("landmarks", "attribute_logits")
# Faces of the MTFL training list used to calibrate int8 activation ranges (never test faces).
DEFAULT_CALIBRATION_FACES = 500
CALIBRATION_BATCH = 50
CALIBRATION_SEED = 0
# ``load_landmark_model`` runs a checkpoint on an int8 graph it quantises itself only when that graph's landmarks
# stay this close to the float graph's on validation faces (mean distance over the inter-ocular distance):
# the shipped int8 graphs differ from their float twins by 0.35% (mtfl-5pt) and 0.23% (300w-68pt) on 200 of
# their validation faces, which moved their mean errors by at most 0.015 points.
INT8_AGREEMENT_LIMIT = 0.005
INT8_CHECK_FACES = 200
# Operators quantised to int8; the rest (standardisation, heads) stays float. Relu, MaxPool and Flatten
# are listed so that the quantiser keeps the whole conv trunk in uint8: ReLU becomes the clip of the
# convolution's output range, max-pooling and flattening run on the uint8 values, and no
# dequantise/requantise pair sits between layers (fewer nodes per call at batch 1; bench/speed.py
# reports the resulting speed and accuracy).
QUANTISED_OPS = ("Conv", "Gemm", "MatMul", "Relu", "MaxPool", "Flatten", "ReduceMax", "Reshape")
# The space-to-depth stem (``space_to_depth_stem``) splits every input pixel block of this side into
# channels; 2 matches the first max-pool's window and stride.
STEM_BLOCK = 2
# onnxruntime runs a float convolution and max-pool in its blocked channel layout (NCHWc) only when their
# channels are a multiple of its block: 8 on AVX2 cores, 16 on AVX-512 ones. The float graph's first layer is
# padded with zero channels up to a multiple of 8 (``pad_first_layer``): on an AVX2-only core (AMD EPYC family
# 25 model 1) 20 -> 24 channels took mtfl-5pt's default inference from 1.36 to 1.21 ms per face, 32 channels
# to 1.38 (bench/results/first_layer_padding-f25m1.json). On AVX-512 cores 24 is no block multiple either, and
# the padded graph does the 20-channel graph's work plus the zero channels' (a few percent of the network; not
# measured there).
FLOAT_CHANNEL_BLOCK = 8
PADDING_METADATA = "first_layer_padding"


class ExportError(TcdcnError, RuntimeError):
    """An export that cannot be done (missing dependency, unwritable path, bad model)."""


def _as_landmark_model(model: LandmarkModel | TCDCN, scheme: str | None, task_names: Sequence[str] | None) -> Any:
    """Wrap a bare network into a LandmarkModel-like record (network, cfg, scheme, tasks, source)."""
    from ..config import Config
    from ..models.network import TCDCN
    from ..schemes import get_scheme
    from .backends.torch import LandmarkModel

    if isinstance(model, LandmarkModel):
        return model
    if isinstance(model, TCDCN):
        cfg = Config(model=model.config)
        default_scheme = {5: "mtfl-5", 68: "300w-68"}.get(model.num_points)
        scheme_name = scheme or default_scheme
        if scheme_name is None:
            raise ExportError(f"a bare network with {model.num_points} points needs scheme= to export")
        names = tuple(task_names) if task_names is not None else tuple(f"task{i}" for i in range(model.num_tasks))
        if len(names) != model.num_tasks:
            raise ExportError(f"{len(names)} task names for a network with {model.num_tasks} attribute outputs")
        return LandmarkModel(model, cfg, get_scheme(scheme_name), names, source="network")
    raise ExportError(f"cannot export a {type(model).__name__}: expected LandmarkModel or TCDCN")


def export_metadata(model: LandmarkModel) -> dict[str, str]:
    """The metadata_props written into the ONNX file (all values are strings)."""
    from ..config import config_to_dict
    from ..version import __version__

    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tcdcn_version": __version__,
        "scheme": model.scheme.name,
        "tasks": json.dumps(list(model.task_names)),
        "input_size": str(int(model.input_size)),
        "config": json.dumps(config_to_dict(model.cfg)),
        "source": str(model.source),
        # The test-time options the model runs by default, so that the file runs as the model did.
        "test_time": json.dumps(options_record(model)),
        "input": f"{INPUT_NAME}: (N,1,S,S) float32 raw grey 0..255, standardised inside the graph",
        "outputs": "landmarks: (N,P,2) normalised [-1,1] crop coords; attribute_logits: (N,T)",
    }
    shift = getattr(model, "landmark_shift", None)
    if shift is not None:  # what test-time mirroring must restore (see pipeline.CropLandmarkModel)
        metadata["landmark_shift"] = json.dumps(np.asarray(shift, dtype=float).round(8).tolist())
    return metadata


def _set_metadata(onnx_model: Any, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in onnx_model.metadata_props}
    for key, value in metadata.items():
        prop = existing.get(key) or onnx_model.metadata_props.add()
        prop.key, prop.value = key, value


def set_test_time_metadata(path: str | Path, record: dict[str, Any]) -> Path:
    """Rewrite the ``test_time`` record (``models.registry.options_record`` format) of an exported ONNX file in
    place, atomically; the graph and its weights are kept as they are."""
    import onnx

    target = Path(path)
    try:
        graph = onnx.load(str(target))
    except Exception as exc:  # onnx raises DecodeError and others
        raise ExportError(f"{target}: not a readable ONNX file ({type(exc).__name__})") from None
    if not any(p.key == "format" and p.value == FORMAT_NAME for p in graph.metadata_props):
        raise ExportError(f"{target}: not a tcdcn export (no format={FORMAT_NAME!r} metadata)")
    _set_metadata(graph, {"test_time": json.dumps(record)})
    return write_model_file(graph.SerializeToString(), target)


def attach_local_stage(graph_path: str | Path, stage_file: str | Path, use: bool = True) -> Path:
    """Copy a local stage (``tcdcn.inference.local_stage``) beside an exported graph, as ``STEM.local.onnx``,
    and name it with its sha256 in the graph's ``local_stage`` metadata, so that the export runs with it as
    the model it came from does (``use``: whether by default). Returns the stage's new path."""
    import onnx

    from ..models.registry import sha256_of

    graph_file = Path(graph_path)
    target = graph_file.with_name(f"{graph_file.stem}.local.onnx")  # m.onnx -> m.local.onnx
    write_model_file(Path(stage_file).read_bytes(), target)
    graph = onnx.load(str(graph_file))
    _set_metadata(graph, {"local_stage": json.dumps({"file": target.name, "sha256": sha256_of(target), "use": use})})
    write_model_file(graph.SerializeToString(), graph_file)
    return target


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file (reads the graph header only through onnxruntime: no torch)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), cpu_session_options(), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def write_model_file(data: bytes, target: Path) -> Path:
    """Write a serialised graph atomically (its folder created as needed); ``ExportError`` naming ``target``
    when it cannot be written."""
    try:
        return atomic_write_bytes(target, data, mkdir=True)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write ({exc.strerror or exc})") from None


def export_onnx(
    model: LandmarkModel | TCDCN,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    scheme: str | None = None,
    task_names: Sequence[str] | None = None,
    pad_channels: int = FLOAT_CHANNEL_BLOCK,
) -> Path:
    """Write ``model`` as an ONNX graph with its metadata; returns the path written.

    ``scheme`` and ``task_names`` are only used for a bare ``TCDCN`` (a LandmarkModel carries them).
    ``pad_channels``: the first layer's channels are padded with zero filters up to a multiple of this
    (``pad_first_layer``; 0: as trained). The function computed is the same.
    """
    import onnx
    import torch

    lm = _as_landmark_model(model, scheme, task_names)
    network = lm.network.eval()
    size = int(lm.input_size)
    example = torch.zeros(2, 1, size, size, dtype=torch.float32)  # (N, 1, S, S)
    example[:, :, size // 2:] = 128.0  # non-constant so the std in standardise is not zero while tracing
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[0]: {0: "batch"}, OUTPUT_NAMES[1]: {0: "batch"}}
    target = Path(path)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp_file = Path(tmpdir) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter on purpose: the dynamo one needs onnxscript, not a dependency.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                network, (example,), str(tmp_file), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                opset_version=opset, dynamic_axes=dynamic_axes if dynamic_batch else None,
                do_constant_folding=True, dynamo=False,
            )
        graph = onnx.load(str(tmp_file))
    # The checkpoint loader flushes weights already; constant folding can still make new denormals.
    flush_onnx_initializers(graph)
    _set_metadata(graph, export_metadata(lm))
    if pad_channels:
        pad_first_layer(graph, pad_channels)
    onnx.checker.check_model(graph)
    return write_model_file(graph.SerializeToString(), target)


class CropCalibrationReader:
    """onnxruntime CalibrationDataReader over a (N, 1, S, S) float32 crop array, in fixed batches."""

    def __init__(self, crops: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> None:
        self.crops = np.ascontiguousarray(crops, dtype=np.float32)  # (N, 1, S, S)
        self.batch_size = batch_size
        self._batches: Iterator[dict[str, np.ndarray]] = self._iterate()

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.crops), self.batch_size):
            yield {INPUT_NAME: self.crops[start:start + self.batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._iterate()


def calibration_crops(
    train_file: str | Path,
    count: int = DEFAULT_CALIBRATION_FACES,
    input_size: int = 60,
    seed: int = CALIBRATION_SEED,
) -> np.ndarray:
    """(count, 1, S, S) float32 crops of randomly chosen training faces, with the ground-truth box."""
    from ..data.formats import read_annotations

    return face_crops(read_annotations(train_file), count, input_size, seed)


def face_crops(faces: Sequence[FaceAnnotation], count: int, input_size: int,
               seed: int = CALIBRATION_SEED) -> np.ndarray:
    """(min(count, len(faces)), 1, S, S) float32 crops of randomly chosen ``faces``, ground-truth boxes."""
    from ..data.dataset import FaceDataset

    chosen = np.sort(np.random.default_rng(seed).choice(len(faces), size=min(count, len(faces)), replace=False))
    dataset = FaceDataset([faces[i] for i in chosen], input_size=input_size, box_mode="gt")
    return dataset.batch(range(len(dataset)))["images"].numpy()  # (count, 1, S, S)


def int8_disagreement(float_model: OnnxLandmarkModel, int8_model: OnnxLandmarkModel, crops: np.ndarray) -> float:
    """Mean distance between the two graphs' landmarks on ``crops``, per face over the float graph's
    inter-ocular distance (the unit every error figure of the package uses)."""
    reference = float_model.run_network(crops)[0]  # (N, P, 2)
    quantised = int8_model.run_network(crops)[0]  # (N, P, 2)
    distance = float_model.scheme.interocular_distance(reference)  # (N,)
    return float(np.mean(normalised_face_errors(quantised, reference, distance)))


def _float_only_nodes(onnx_model: Any, include_heads: bool = True) -> list[str]:
    """Nodes kept float: everything before the first Conv (standardisation, the stem's space-to-depth),
    the two heads unless ``include_heads`` is False, and what follows them (the landmark head's reshape
    to points: Reshape is a quantised op type for the stem's sake, the graph's outputs stay float)."""
    nodes = list(onnx_model.graph.node)
    keep: list[str] = []
    for node in nodes:
        if node.op_type == "Conv":
            break
        keep.append(node.name)
    # The heads are the Gemm/MatMul nodes that produce (or feed only) the graph outputs' chain: the
    # last two linear layers of the graph.
    linear = [n for n in nodes if n.op_type in ("Gemm", "MatMul")]
    heads = linear[-2:]
    if include_heads:
        keep += [n.name for n in heads]
    if heads:
        keep += [n.name for n in nodes[nodes.index(heads[0]) + 1:] if n not in heads]
    return keep


def _first_layer(graph: Any) -> tuple[Any, list[Any]] | None:
    """The first convolution with its weight and bias initializers, when a ReLU and a max-pool alone read it
    and only plain convolutions read the pool: (conv, the convolutions reading the pool); None otherwise."""
    nodes = list(graph.node)
    conv = next((n for n in nodes if n.op_type == "Conv"), None)
    inits = {t.name for t in graph.initializer}
    if conv is None or len(conv.input) < 3 or conv.input[1] not in inits or conv.input[2] not in inits:
        return None

    def consumers(tensor: str) -> list[Any]:
        return [n for n in nodes if tensor in n.input]

    relu = consumers(conv.output[0])
    if len(relu) != 1 or relu[0].op_type != "Relu":
        return None
    pool = consumers(relu[0].output[0])
    if len(pool) != 1 or pool[0].op_type != "MaxPool" or len(pool[0].output) != 1:
        return None
    readers = consumers(pool[0].output[0])
    plain = all(n.op_type == "Conv" and n.input[0] == pool[0].output[0] and n.input[1] in inits
                and all(a.name != "group" or a.i == 1 for a in n.attribute) for n in readers)
    return (conv, readers) if readers and plain else None


def pad_first_layer(onnx_model: Any, multiple: int = FLOAT_CHANNEL_BLOCK) -> int:
    """Pad the first convolution with zero filters (and zero biases) up to a multiple of ``multiple`` output
    channels, and the convolutions that read it (through its ReLU and max-pool) with zero weights for them,
    in place; returns the channels added (0: nothing to do, or not that pattern).

    The added channels are ReLU(0) = 0 after pooling and meet zero weights, so the function is the same;
    what changes is that onnxruntime can keep the first layer, its pool and the next convolution in its
    blocked layout (``FLOAT_CHANNEL_BLOCK``). The channel count before padding is recorded in the
    ``first_layer_padding`` metadata, which ``unpad_first_layer`` reads.
    """
    from onnx import numpy_helper

    graph = onnx_model.graph
    found = _first_layer(graph)
    if found is None or multiple <= 0:
        return 0
    conv, readers = found
    inits = {t.name: t for t in graph.initializer}
    weight = numpy_helper.to_array(inits[conv.input[1]])  # (C, 1, k, k)
    channels = int(weight.shape[0])
    added = -channels % multiple
    reader_weights = [numpy_helper.to_array(inits[n.input[1]]) for n in readers]  # each (O, C, kh, kw)
    if added == 0 or any(w.shape[1] != channels for w in reader_weights):
        return 0
    bias = numpy_helper.to_array(inits[conv.input[2]])  # (C,)
    replaced = {
        conv.input[1]: np.concatenate([weight, np.zeros((added, *weight.shape[1:]), weight.dtype)]),
        conv.input[2]: np.concatenate([bias, np.zeros(added, bias.dtype)]),
    }
    for node, w in zip(readers, reader_weights):
        replaced[node.input[1]] = np.concatenate([w, np.zeros((w.shape[0], added, *w.shape[2:]), w.dtype)], axis=1)
    for name, value in replaced.items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    del graph.value_info[:]  # shapes inferred for the old width; onnxruntime infers them again
    _set_metadata(onnx_model, {PADDING_METADATA: json.dumps({"channels": channels, "padded_to": channels + added})})
    return added


def unpad_first_layer(onnx_model: Any) -> int:
    """Undo ``pad_first_layer`` in place, by its metadata; returns the channels removed (0: not padded)."""
    from onnx import numpy_helper

    props = {p.key: p for p in onnx_model.metadata_props}
    if PADDING_METADATA not in props:
        return 0
    channels = int(json.loads(props[PADDING_METADATA].value)["channels"])
    graph = onnx_model.graph
    found = _first_layer(graph)
    if found is None:
        raise ExportError(f"{PADDING_METADATA} metadata on a graph without a padded first layer")
    conv, readers = found
    inits = {t.name: t for t in graph.initializer}
    weight = numpy_helper.to_array(inits[conv.input[1]])  # (C', 1, k, k)
    removed = int(weight.shape[0]) - channels
    sliced = {conv.input[1]: weight[:channels], conv.input[2]: numpy_helper.to_array(inits[conv.input[2]])[:channels]}
    for node in readers:
        sliced[node.input[1]] = numpy_helper.to_array(inits[node.input[1]])[:, :channels]
    for name, value in sliced.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
    del graph.value_info[:]
    onnx_model.metadata_props.remove(props[PADDING_METADATA])
    return removed


def space_to_depth_stem(onnx_model: Any) -> bool:
    """Rewrite the first layer for int8 speed, in place; the function it computes is unchanged.

    The first convolution sees one grey channel, and onnxruntime's int8 convolution gathers its input
    patches (im2col) one channel-run at a time: with a single channel that is one byte per copy, and the
    layer with a twelfth of the network's multiply-adds took as long as the second convolution. So

        Conv(1 -> C, k x k) -> Relu -> MaxPool(2x2, stride 2)

    becomes

        SpaceToDepth(2) -> Conv(4 -> 4C, (k//2 + 1)^2) -> Relu -> Reshape(N, C, 4, H, W) -> ReduceMax(axis 2)

    The 2x2 pixel blocks become 4 channels; for each of the 4 positions ("phases") of an output pixel in
    its pooling window, the new convolution holds the old k x k filter at that offset inside a
    (k+1) x (k+1) window of the original image (zeros elsewhere); channel 4c + phase is filter c at that
    phase, and the max over the 4 phases is the 2x2 max-pool (ReLU and max commute). It is the same
    function (float results agree to round-off; tested) with 1.4x the multiply-adds but four times
    the bytes per patch copy.

    Returns False and leaves the graph alone unless the graph has exactly that pattern (single-channel
    input of even side, stride 1, no padding or dilation, one group, a pool of 2 with stride 2).
    """
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    nodes = list(graph.node)
    conv = next((n for n in nodes if n.op_type == "Conv"), None)
    if conv is None or len(conv.input) < 3:
        return False

    def only_consumer(tensor: str, op_type: str) -> Any:
        users = [n for n in nodes if tensor in n.input]
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    relu = only_consumer(conv.output[0], "Relu")
    pool = None if relu is None else only_consumer(relu.output[0], "MaxPool")
    if relu is None or pool is None:
        return False
    inits = {t.name: t for t in graph.initializer}
    if conv.input[1] not in inits or conv.input[2] not in inits:
        return False
    weight = numpy_helper.to_array(inits[conv.input[1]])  # (C, 1, k, k)
    bias = numpy_helper.to_array(inits[conv.input[2]])  # (C,)
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    pool_attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    channels, in_channels, k, k_w = weight.shape
    side = dims[-1] if len(dims) == 4 else 0
    plain = (in_channels == 1 and k == k_w and attrs.get("group", 1) == 1
             and all(v == 1 for v in attrs.get("strides", [1, 1]) + attrs.get("dilations", [1, 1]))
             and not any(attrs.get("pads", [0] * 4)) and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))
    pooled = (list(pool_attrs.get("kernel_shape", [])) == [STEM_BLOCK] * 2
              and list(pool_attrs.get("strides", [])) == [STEM_BLOCK] * 2
              and not any(pool_attrs.get("pads", [0] * 4)) and not pool_attrs.get("ceil_mode", 0)
              and len(pool.output) == 1)
    if not (plain and pooled and side > 0 and dims[-2] == side and side % STEM_BLOCK == 0):
        return False

    b = STEM_BLOCK
    k_s2d = k // b + 1  # the (k+1)-pixel window of a pooling block's k x k filters, in blocks
    out_side = side // b - k_s2d + 1  # == floor((side - k + 1) / 2), the pooled side
    phases = b * b
    stem_weight = np.zeros((channels, phases, phases, k_s2d, k_s2d), dtype=weight.dtype)  # (C, phase, in, kh, kw)
    for a in range(b):  # the output pixel's row offset inside its pooling window
        for c in range(b):  # ... and column offset
            for u in range(k):
                for v in range(k):
                    # Image row 2i + a + u lies in block row i + (a + u) // 2, at row (a + u) % 2 inside
                    # the block; SpaceToDepth puts block-row r, block-column s in channel 2r + s.
                    row, col = a + u, c + v
                    stem_weight[:, b * a + c, b * (row % b) + col % b, row // b, col // b] = weight[:, 0, u, v]
    stem_weight = stem_weight.reshape(channels * phases, phases, k_s2d, k_s2d)  # (4C, 4, k', k')
    stem_bias = np.repeat(bias, phases)  # (4C,): channel 4c + phase

    name = conv.name or "stem"
    s2d_out, conv_out, relu_out, shaped = (f"{name}_s2d", f"{name}_phases", f"{name}_phases_relu",
                                           f"{name}_phases_5d")
    shape_name, weight_name, bias_name = f"{name}_phase_shape", f"{name}_s2d_weight", f"{name}_s2d_bias"
    graph.initializer.extend([
        numpy_helper.from_array(stem_weight, weight_name), numpy_helper.from_array(stem_bias, bias_name),
        numpy_helper.from_array(np.array([0, channels, phases, out_side, out_side], dtype=np.int64), shape_name),
    ])
    new_nodes = [
        helper.make_node("SpaceToDepth", [conv.input[0]], [s2d_out], name=f"{name}_SpaceToDepth", blocksize=b),
        helper.make_node("Conv", [s2d_out, weight_name, bias_name], [conv_out], name=f"{name}_phases",
                         kernel_shape=[k_s2d, k_s2d]),
        helper.make_node("Relu", [conv_out], [relu_out], name=f"{name}_phases_relu"),
        helper.make_node("Reshape", [relu_out, shape_name], [shaped], name=f"{name}_phases_reshape"),
        helper.make_node("ReduceMax", [shaped], [pool.output[0]], name=f"{name}_phase_max", axes=[2],
                         keepdims=0),
    ]
    position = nodes.index(conv)
    for old in (conv, relu, pool):
        graph.node.remove(old)
    for offset, node in enumerate(new_nodes):
        graph.node.insert(position + offset, node)
    for old_name in (conv.input[1], conv.input[2]):
        if not any(old_name in n.input for n in graph.node):
            graph.initializer.remove(inits[old_name])
    del graph.value_info[:]  # shapes inferred before the rewrite; the quantiser's pre-processing redoes them
    return True


def quantize_int8(
    float_onnx: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    per_channel: bool = True,
    quantise_heads: bool = False,
    quant_format: str = "qdq",
    stem: str = "",
) -> Path:
    """Static int8 quantisation of an exported float graph, calibrated on ``calibration`` crops.

    ``calibration``: (N, 1, S, S) float32 raw crops of training faces (``calibration_crops``). A float graph
    with a padded first layer (``pad_first_layer``) is unpadded first: the zero channels would only cost time.
    ``quant_format``: "qdq" (default) or "qoperator". ``stem``: "space_to_depth" rewrites the first layer by
    ``space_to_depth_stem`` before quantising, "plain" keeps the exported graph; by default the former
    for QDQ and the latter for QOperator (whose quantiser has no uint8 ReduceMax, so the phase max would
    run through float). Metadata is carried over, with ``quantization`` added.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if quant_format not in formats:
        raise ExportError(f"quant_format must be one of {sorted(formats)}, got {quant_format!r}")
    source = Path(float_onnx)
    target = Path(out_path)
    stem = stem or ("space_to_depth" if quant_format == "qdq" else "plain")
    if stem not in ("space_to_depth", "plain"):
        raise ExportError(f"stem must be space_to_depth or plain, got {stem!r}")
    float_graph = onnx.load(str(source))
    unpad_first_layer(float_graph)  # the int8 graph's own first layer (the stem) needs no padding
    metadata = {p.key: p.value for p in float_graph.metadata_props}
    rewritten = stem == "space_to_depth" and space_to_depth_stem(float_graph)
    excluded = _float_only_nodes(float_graph, include_heads=not quantise_heads)
    with tempfile.TemporaryDirectory() as tmpdir:
        prepared = Path(tmpdir) / "prepared.onnx"
        quantised = Path(tmpdir) / "int8.onnx"
        rewritten_file = Path(tmpdir) / "stem.onnx"
        onnx.save(float_graph, str(rewritten_file))
        quant_pre_process(str(rewritten_file), str(prepared), skip_symbolic_shape=True)
        # The quantiser logs on the root logger, at INFO, one "Increased scale" line per channel whose weights
        # are all zero (dead units: models.denormals); those channels compute zero whatever their scale.
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))
        try:
            quantize_static(
                str(prepared), str(quantised), CropCalibrationReader(calibration),
                quant_format=formats[quant_format], op_types_to_quantize=list(QUANTISED_OPS),
                per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded,
            )
        finally:
            root.setLevel(level)
        graph = onnx.load(str(quantised))
    flush_onnx_initializers(graph)  # the float heads and the quantisation scales
    _set_metadata(graph, {**metadata, "quantization": json.dumps({
        "format": quant_format, "weights": "int8", "activations": "uint8", "per_channel": per_channel,
        "calibration_faces": int(len(calibration)), "float_nodes": excluded,
        "stem": "space_to_depth" if rewritten else "plain",
    })})
    return write_model_file(graph.SerializeToString(), target)
