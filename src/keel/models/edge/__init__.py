"""Edge export: a registered version's compiled ONNX form as a self-contained folder.

::

    bundle = keel.models.edge.export_edge("models:/cancer@champion", "cancer-edge")
    # cancer-edge/predict.py needs only onnxruntime and numpy;
    # cancer-edge/web/ runs the model in a browser with onnxruntime-web.

``keel models export NAME@ALIAS --edge DIR`` is the same from the command line.
"""

from __future__ import annotations

from keel.models.edge.export import EDGE_FORMAT, EdgeBundle, export_edge

__all__ = ["EDGE_FORMAT", "EdgeBundle", "export_edge"]
