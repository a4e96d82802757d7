"""gRPC v2 messages to and from the tensors the HTTP v2 route uses.

A ``ModelInferRequest`` becomes the same :class:`~keel.serving.protocols.V2Request`
an HTTP ``/infer`` body becomes, through the same checks
(:func:`~keel.serving.protocols.check_v2_input`, :func:`~keel.serving.protocols.v2_array`):
a tensor sent as ``raw_input_contents`` is decoded exactly like an HTTP binary tensor,
one sent as typed ``contents`` like a JSON ``data`` list. What is left here is only
what the gRPC wire adds: which ``contents`` field holds which datatype, and that raw
buffers come one per input or not at all.

The answer goes back as ``raw_output_contents``, as Triton sends it (tritonclient
reads outputs from there).
"""

from __future__ import annotations

from typing import Any

from keel.errors import InvalidInput
from keel.serving import protocols as p

__all__ = ["CONTENTS_FIELDS", "fill_response", "v2_request"]

#: The ``InferTensorContents`` field that carries each datatype's values. FP16 has none:
#: it travels as raw contents only.
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def v2_request(message: Any, max_elements: int | None) -> p.V2Request:
    """The tensors of a ``ModelInferRequest``, checked as an HTTP v2 request is.

    Args:
        message: the ``inference.ModelInferRequest``.
        max_elements: the most elements its shapes may declare in all (None: no cap).

    Raises:
        InvalidInput: what is wrong with the request, before allocating for it.
    """
    tensors = message.inputs
    if not tensors:
        raise InvalidInput(
            "a ModelInferRequest needs inputs: at least one tensor with name, datatype, "
            "shape and contents (or raw_input_contents)"
        )
    raw = message.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} buffers for {len(tensors)} inputs; send one "
            "per input, in the order of inputs, or none and each input's contents"
        )
    inputs = {}
    declared = 0
    for n, tensor in enumerate(tensors):
        name, shape, datatype, count = p.check_v2_input(
            n, tensor.name, list(tensor.shape), tensor.datatype, declared, max_elements
        )
        declared += count
        if name in inputs:
            raise InvalidInput(f"v2 input names must be unique; {name!r} comes twice")
        if raw:
            if tensor.contents.ListFields():
                raise InvalidInput(
                    f"input {name!r} has contents while the request sends raw_input_contents; "
                    "send each input's values one way"
                )
            inputs[name] = p.v2_array(name, shape, datatype, count, raw=raw[n])
        else:
            values = _contents(tensor, name, datatype)
            inputs[name] = p.v2_array(name, shape, datatype, count, data=values)
    request_id = p.check_request_id(message.id) if message.id else None
    outputs = [o.name for o in message.outputs if o.name] or None
    return p.V2Request(request_id, inputs, outputs, True)


def _contents(tensor: Any, name: str, datatype: str) -> list[Any]:
    """A tensor's typed values, from the ``contents`` field of its datatype."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input {name!r} is {datatype}, which has no contents field; "
            "send it in raw_input_contents"
        )
    contents = tensor.contents
    values = getattr(contents, field)
    if not values:
        others = [f.name for f, _ in contents.ListFields() if f.name != field]
        if others:
            raise InvalidInput(
                f"input {name!r} is {datatype}: its values go in contents.{field}, "
                f"got contents.{others[0]}"
            )
    if datatype == "BYTES":  # as the raw BYTES decoding does: text, bad UTF-8 replaced
        return [v.decode("utf-8", errors="replace") for v in values]
    return list(values)


def fill_response(response: Any, output: Any) -> None:
    """Add a model's output to a ``ModelInferResponse`` as the ``predict`` tensor.

    The tensor's datatype and bytes are the HTTP binary response's
    (:func:`~keel.serving.protocols.v2_output`, :func:`~keel.serving.protocols.v2_raw`).
    """
    array, datatype = p.v2_output(output)
    tensor = response.outputs.add()
    tensor.name = "predict"
    tensor.datatype = datatype
    tensor.shape.extend(array.shape)
    response.raw_output_contents.append(p.v2_raw(array, datatype))
