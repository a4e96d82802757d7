"""Micro-batching: concurrent requests to one model version share one ``predict`` call.

Requests wait at most ``max_latency_ms`` (or until ``max_size`` rows are
queued), then their rows are concatenated, predicted once, and the output
split back in order. Each request is checked against the signature on its
own first, so one bad request fails alone and never poisons a batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Batches requests for one loaded model (an object with ``predict``).

    Requests are DataFrames or 2-D arrays; each is checked on its own first
    (``check_input`` when the model has it, else its signature).
    """

    def __init__(self, model: Any, max_size: int, max_latency_ms: float) -> None:
        self.model = model
        self.max_size = max_size
        self.max_latency = max_latency_ms / 1000.0
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0

    async def predict(self, data: Any) -> Any:
        check = getattr(self.model, "check_input", None)
        if check is not None:
            data = check(data)  # InvalidInput here fails only this request
        else:
            signature = getattr(self.model, "signature", None)
            if signature is not None:
                from keel.models.signature import enforce

                data = enforce(signature.inputs, data)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((data, future))
        self._rows += len(data)
        if self._rows >= self.max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_latency, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._rows = self._pending, [], 0
        if not batch:
            return
        self.batches += 1
        parts = [data for data, _ in batch]
        try:
            if all(isinstance(part, np.ndarray) for part in parts):
                merged: Any = np.concatenate(parts)
            else:
                import pandas as pd

                merged = pd.concat([pd.DataFrame(part) for part in parts], ignore_index=True)
            output = np.asarray(self.model.predict(merged))
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for data, future in batch:
            end = start + len(data)
            if not future.done():
                future.set_result(output[start:end])
            start = end
