"""``zoo serve``: a checkpoint or an ONNX file over HTTP (FastAPI, uvicorn).

zoo serve --ckpt_path logs/digits_cnn/version_0/checkpoints/last.ckpt --host 127.0.0.1 --port 8000
zoo serve --onnx digits_cnn.onnx --port 8000 --max_bytes 1000000

curl -F file=@digit.png http://127.0.0.1:8000/predict                            # multipart upload
curl --data-binary @digit.png -H "Content-Type: image/png" http://127.0.0.1:8000/predict   # raw image bytes
curl -H "Content-Type: application/json" -d '{"inputs": [[[1.0, 2.0], ...]]}' http://127.0.0.1:8000/predict
curl -H "Content-Type: application/json" -d '{"text": "ROMEO:", "max_new_tokens": 100}' .../predict  # text models

``GET /health`` answers ``{"status": "ok"}``; ``GET /metadata`` names the model, its classes and what it reads.
``POST /predict`` answers ``{"predictions": [...]}``, one per image or sample, as the model's task answers
(``?top_k=N`` classes for classifiers; forecasts with intervals in original units; a denoised image as a base64
PNG in ``image_png``; ...). JSON ``inputs`` are in the data's own units (uint8 pixels for images). A text request
may also give ``max_new_tokens``, ``temperature``, ``top_k`` (sampling) and ``seed``. Bad requests get a 4xx with
``{"detail": "..."}`` naming the field or what is expected: 400 malformed body, 413 body over ``--max_bytes``, more
samples than ``--max_samples`` or an image of more pixels than the predictor decodes, 415 no image or an unknown
content type, 422 input that does not fit the model (its shape and dtype, a non-finite value, the characters, an
option out of range), 503 more requests than ``--max_concurrent`` plus ``--max_waiting``. The server keeps serving
after any of them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from datamodules.base import ImageDecodeError, ImageTooLargeError
from recipes.tools.command import exactly_one, named_errors, parse, tool_parser
from recipes.tools.predictor import InputError, Predictor

#: The largest request body accepted by default (8 MiB).
DEFAULT_MAX_BYTES = 8 << 20
#: The most characters one text request may ask for.
MAX_NEW_TOKENS = 2000
#: The range of a sampling temperature (besides 0): below it the scaled logits overflow.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3
#: The most samples (images, sequences, windows) one request may hold, and requests worked on or waiting at once.
DEFAULT_MAX_SAMPLES = 256
DEFAULT_MAX_CONCURRENT = 4
DEFAULT_MAX_WAITING = 64
#: The status of each error a request can cause: the content does not fit the model (422), is no image at all
#: (415), or is an image too large to decode (413).
STATUS = {InputError: 422, ImageDecodeError: 415, ImageTooLargeError: 413}


class RequestError(Exception):
    """A request answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it outgrows ``max_bytes`` (a declared length first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"the request body has {declared} bytes; this server takes at most {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"the request body is over {max_bytes} bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form_files(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each file of a multipart body."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form()
    except Exception as error:  # python-multipart and Starlette raise several types for broken bodies
        raise RequestError(400, f"malformed multipart body ({error})") from error
    files = []
    for key, value in form.multi_items():
        if hasattr(value, "read"):
            files.append((value.filename or key, await value.read()))
    if not files:
        raise RequestError(400, "the multipart body holds no file: send the image as a file field, e.g. -F file=@x.png")
    return files


def _json_request(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # JSONDecodeError, huge integers, deep nesting
        raise RequestError(400, f"malformed JSON body ({type(error).__name__}: {str(error)[:200]})") from error
    if not isinstance(payload, dict) or not ({"inputs", "text"} & payload.keys()):
        raise RequestError(400, 'the JSON body must be an object with "inputs" (a nested list) or "text"')
    return payload


def _tensor(inputs: Any, predictor: Predictor, max_samples: int) -> torch.Tensor:
    """A nested list as a tensor; ragged or non-numeric lists are a 422 naming the expected shape, more samples than
    ``max_samples`` a 413."""
    try:
        x = torch.tensor(inputs)
    except (TypeError, ValueError, RuntimeError, OverflowError, RecursionError) as error:
        raise InputError(
            f'"inputs" must be a rectangular nested list of numbers of shape {predictor.input_spec()} '
            f"({type(error).__name__}: {str(error)[:200]})"
        ) from error
    if x.dtype == torch.bool:
        raise InputError(f'"inputs" holds booleans; {predictor.model_name} reads {predictor.input_spec()}')
    samples = x.shape[0] if x.ndim == len(predictor.input_shape) else 1
    if samples > max_samples:
        raise RequestError(413, f'"inputs" holds {samples} samples; this server answers at most {max_samples} at once')
    return x


def _png(pixels: Any) -> str:
    """uint8 ``(H, W, C)`` nested lists as a base64 PNG."""
    from PIL import Image

    array = np.asarray(pixels, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _encoded(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answers with each ``image`` as a base64 PNG (``image_png``)."""
    return [
        {**{k: v for k, v in answer.items() if k != "image"}, "image_png": _png(answer["image"])}
        if "image" in answer
        else answer
        for answer in answers
    ]


def _integer(payload: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = payload.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f'"{name}" must be an integer in [{low}, {high}], got {str(value)[:40]}')
    return value


def _generate(predictor: Predictor, payload: dict[str, Any]) -> dict[str, Any]:
    """A text request: each option checked and named when it is out of range (never a 500)."""
    text = payload["text"]
    if not isinstance(text, str):
        raise InputError('"text" must be a string')
    max_new_tokens = _integer(payload, "max_new_tokens", 200, 0, MAX_NEW_TOKENS)
    top_k = _integer(payload, "top_k", None, 1, 1 << 31)
    seed = _integer(payload, "seed", 0, 0, (1 << 63) - 1)
    temperature = payload.get("temperature", 0.8)
    finite = isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and math.isfinite(temperature)
    if not finite or not (temperature == 0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
        raise InputError(
            f'"temperature" must be 0 (the most likely token) or a number in [{MIN_TEMPERATURE:g}, '
            f"{MAX_TEMPERATURE:g}], got {str(temperature)[:40]}"
        )
    return predictor.predict_text(text, max_new_tokens, float(temperature), top_k, seed)


def create_app(
    predictor: Predictor,
    max_bytes: int = DEFAULT_MAX_BYTES,
    top_k: int = 5,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    max_waiting: int = DEFAULT_MAX_WAITING,
) -> FastAPI:
    """The serving app over ``predictor``: ``GET /health``, ``GET /metadata`` and ``POST /predict``.

    Bodies are parsed and models run in worker threads, so ``/health`` answers while predictions run. Work is
    bounded: ``max_concurrent`` predictions run at once and ``max_waiting`` more wait; a request beyond those gets a
    503 naming the limits (retry later), never a growing queue.

    Args:
        predictor: the model and its preprocessing.
        max_bytes: the largest request body; a larger one is answered 413 without reading it all.
        top_k: classes per prediction unless the request asks otherwise (``?top_k=N``).
        max_samples: the most samples one request may hold (413 beyond).
        max_concurrent: predictions running at once.
        max_waiting: requests waiting for a free slot.
    """
    if min(max_bytes, top_k, max_samples, max_concurrent) < 1 or max_waiting < 0:
        raise ValueError("max_bytes, top_k, max_samples and max_concurrent must be >= 1 and max_waiting >= 0")
    app = FastAPI(title=f"lightning-zoo: {predictor.model_name}", version="1")
    metadata = predictor.metadata()
    slots = asyncio.Semaphore(max_concurrent)
    admitted = [0]  # requests running or waiting

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    async def input_error(request: Request, error: Exception) -> JSONResponse:
        status = next(code for kind, code in STATUS.items() if isinstance(error, kind))
        return JSONResponse({"detail": str(error)}, status_code=status)

    for error_type in STATUS:
        app.add_exception_handler(error_type, input_error)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    async def model_metadata() -> dict[str, Any]:
        return metadata

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        query = request.query_params.get("top_k", str(top_k))
        if not (query.isascii() and query.isdigit() and 1 <= int(query) <= 1 << 31):
            raise RequestError(422, f"top_k must be a positive integer, got {query[:40]!r}")
        if admitted[0] >= max_concurrent + max_waiting:
            raise RequestError(
                503, f"busy: {max_concurrent} requests running and {max_waiting} waiting, the most this server takes"
            )
        admitted[0] += 1
        try:
            async with slots:
                return await _answer(request, int(query))
        finally:
            admitted[0] -= 1

    async def _answer(request: Request, k: int) -> dict[str, Any]:
        body = await _read_body(request, max_bytes)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            payload = await run_in_threadpool(_json_request, body)  # a large body must not stall the event loop
            if "text" in payload:
                return {"predictions": [await run_in_threadpool(_generate, predictor, payload)]}
            x = await run_in_threadpool(_tensor, payload["inputs"], predictor, max_samples)
            return {"predictions": _encoded(await run_in_threadpool(predictor.predict_tensor, x, k))}
        if content_type == "multipart/form-data":
            files = await _form_files(request, body)
        elif content_type.startswith("image/") or content_type == "application/octet-stream":
            files = [("the upload", body)]
        else:
            raise RequestError(
                415,
                f"unsupported content type {content_type or 'none'!r}: send multipart/form-data (an image file), "
                "image/* bytes or application/json",
            )
        if len(files) > max_samples:
            raise RequestError(413, f"the request holds {len(files)} images; this server answers at most {max_samples}")
        names, images = [name for name, _ in files], [data for _, data in files]
        return {"predictions": _encoded(await run_in_threadpool(predictor.predict_images, images, k, names))}

    return app


def main(args: Sequence[str] | None = None) -> None:
    """``zoo serve``: parse ``args`` (``None``: ``sys.argv``) and serve until interrupted."""
    import uvicorn

    parser = tool_parser("serve", __doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="a checkpoint of a zoo model")
    parser.add_argument("--onnx", type=str | None, default=None, help="an ONNX file written by `zoo export`")
    parser.add_argument("--host", type=str, default="127.0.0.1", help="0.0.0.0 serves on every interface")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max_bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest request body")
    parser.add_argument("--top_k", type=int, default=5, help="classes per prediction (requests: ?top_k=N)")
    parser.add_argument("--max_samples", type=int, default=DEFAULT_MAX_SAMPLES, help="samples per request")
    parser.add_argument("--max_concurrent", type=int, default=DEFAULT_MAX_CONCURRENT, help="predictions at once")
    parser.add_argument("--max_waiting", type=int, default=DEFAULT_MAX_WAITING, help="requests waiting beyond those")
    parser.add_argument("--log_level", type=str, default="info")
    options = parse(parser, args)
    source = exactly_one(parser, options, "ckpt_path", "onnx")
    with named_errors():
        predictor = (
            Predictor.from_onnx(options.onnx) if source == "onnx" else Predictor.from_checkpoint(options.ckpt_path)
        )
        app = create_app(
            predictor,
            options.max_bytes,
            options.top_k,
            options.max_samples,
            options.max_concurrent,
            options.max_waiting,
        )
    uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level)


if __name__ == "__main__":
    main()
