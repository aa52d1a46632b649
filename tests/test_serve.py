"""`zoo serve` over real HTTP: the server runs in its own process (the `zoo` command) or in a thread (uvicorn),
and a real httpx client checks predictions against the model's own forward, the 4xx answers to bad requests, and
that the server keeps answering after them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from conftest import ThreadServer, free_port, wait_until_healthy
from PIL import Image

import zoo
from datamodules import DigitsDataModule
from datamodules.transforms import normalize_batch
from recipes import digits_cnn
from recipes.tools.export import main as export
from recipes.tools.predictor import Predictor
from recipes.tools.serve import create_app

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]
MAX_BYTES = 100_000
N_IMAGES = 12
#: A multipart body with a text field and no file.
NO_FILE = b'--b\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n--b--\r\n'


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    """A digits CNN trained for two epochs by its recipe, with real test images."""
    tmp = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        torch.manual_seed(0)
        cli = digits_cnn.main(["fit", "--trainer.max_epochs=2", "--test_after_fit=false", *QUIET])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    images, _ = DigitsDataModule().load_arrays(train=False)
    images = images[:N_IMAGES]
    x = normalize_batch(images, torch.tensor(DigitsDataModule.mean), torch.tensor(DigitsDataModule.std))
    with torch.no_grad():
        probabilities = zoo.load_from_checkpoint(ckpt)(x).softmax(-1)
    return {"ckpt": ckpt, "images": images, "x": x, "probabilities": probabilities, "tmp": tmp}


@pytest.fixture(scope="module")
def server(digits) -> Iterator[str]:
    """`zoo serve --ckpt_path ...` in its own process on a free port; stopped at the end."""
    port = free_port()
    command = [sys.executable, "-m", "recipes.console", "serve", "--ckpt_path", digits["ckpt"], "--port", str(port)]
    command += ["--max_bytes", str(MAX_BYTES), "--log_level", "warning"]
    process = subprocess.Popen(command, cwd=digits["tmp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _check_probabilities(predictions: list[dict], expected: torch.Tensor) -> None:
    assert len(predictions) == len(expected)
    for prediction, row in zip(predictions, expected, strict=True):
        indices = [entry["index"] for entry in prediction["top_k"]]
        assert indices == row.topk(len(indices)).indices.tolist()
        got = torch.tensor([entry["probability"] for entry in prediction["top_k"]])
        torch.testing.assert_close(got, row[indices], rtol=1e-5, atol=1e-6)
        assert prediction["class"] == str(prediction["index"])


@pytest.mark.slow  # the module's digits CNN trains for about 8 s and the server process starts in about 5 s
def test_health_and_metadata(server):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    metadata = httpx.get(f"{server}/metadata").json()
    assert metadata["model"] == "CNN" and metadata["task"] == "ImageClassifier" and metadata["source"] == "checkpoint"
    assert metadata["classes"] == [str(digit) for digit in range(10)]
    assert metadata["input"]["shape"] == [None, 1, 8, 8] and metadata["input"]["dtype"] == "uint8"
    assert metadata["input"]["preprocess"]["mean"] == [0.3055] and metadata["input"]["preprocess"]["img_size"] == [8, 8]


@pytest.mark.slow
def test_uploads_and_tensors_give_the_model_outputs(server, digits):
    files = [
        ("file", (f"{index}.png", _png(image[0].numpy()), "image/png")) for index, image in enumerate(digits["images"])
    ]
    with httpx.Client(base_url=server) as client:
        answer = client.post("/predict", files=files)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert [p["input"] for p in predictions] == [f"{index}.png" for index in range(N_IMAGES)]
        _check_probabilities(predictions, digits["probabilities"])
        raw = client.post("/predict?top_k=2", content=files[3][1][1], headers={"Content-Type": "image/png"})
        assert raw.status_code == 200 and len(raw.json()["predictions"][0]["top_k"]) == 2
        _check_probabilities(raw.json()["predictions"], digits["probabilities"][3:4])
        tensors = client.post("/predict", json={"inputs": digits["images"].tolist()})  # uint8 pixels
        assert tensors.status_code == 200, tensors.text
        _check_probabilities(tensors.json()["predictions"], digits["probabilities"])


@pytest.mark.slow
def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(server, digits):
    deep = np.full((8, 8), 40000, dtype=np.uint16)  # a 16-bit grey image
    cases = [
        (400, "malformed JSON", {"content": b'{"inputs": [1, 2', "headers": {"Content-Type": "application/json"}}),
        (400, '"inputs"', {"json": {"values": [1.0]}}),
        (
            422,
            r"\(B, 1, 8, 8\) uint8, got shape \(2, 3, 8, 8\)",
            {"json": {"inputs": torch.zeros(2, 3, 8, 8, dtype=torch.uint8).tolist()}},
        ),
        (422, r"rectangular nested list", {"json": {"inputs": [[[[0.0, 1.0], [2.0]]]]}}),
        (422, r"rectangular nested list", {"json": {"inputs": [[[["a"] * 8] * 8]]}}),
        (422, r"does not read text", {"json": {"text": "hello"}}),
        (413, f"at most {MAX_BYTES}", {"files": {"file": ("big.png", b"\0" * (MAX_BYTES + 1), "image/png")}}),
        (
            413,
            f"over {MAX_BYTES} bytes",
            {"content": iter([b"\0" * 60_000] * 2), "headers": {"Content-Type": "image/png"}},
        ),
        (
            415,
            r"Cannot decode image notes\.png",
            {"files": {"file": ("notes.png", b"not an image", "image/png")}},
        ),
        (
            415,
            r"Cannot decode image the upload",
            {"content": b"GIF89a broken", "headers": {"Content-Type": "image/gif"}},
        ),
        (415, "unsupported content type 'text/plain'", {"content": b"7", "headers": {"Content-Type": "text/plain"}}),
        (400, "no file", {"content": NO_FILE, "headers": {"Content-Type": "multipart/form-data; boundary=b"}}),
        (
            415,
            r"deep\.png: image mode 'I(;16)?' is not read",
            {"files": {"file": ("deep.png", _png(deep), "image/png")}},
        ),
        (422, r"reads pixel values in \[0, 255\]", {"json": {"inputs": [[[[300] * 8] * 8]]}}),
        (
            422,
            "top_k must be a positive integer",
            {"json": {"inputs": digits["images"][:1].tolist()}, "params": {"top_k": "0"}},
        ),
    ]
    good = _png(digits["images"][0, 0].numpy())
    with httpx.Client(base_url=server) as client:
        for status, message, request in cases:
            answer = client.post("/predict", **request)
            assert answer.status_code == status, (message, answer.text)
            assert re.search(message, answer.json()["detail"]), answer.json()
            after = client.post("/predict", files={"file": ("ok.png", good, "image/png")})
            assert after.status_code == 200
            _check_probabilities(after.json()["predictions"], digits["probabilities"][:1])


@pytest.mark.slow
def test_onnx_file_is_served_like_its_checkpoint(digits, tmp_path):
    onnx_path = export(["--ckpt_path", digits["ckpt"], "--output", str(tmp_path / "digits.onnx")])
    with ThreadServer(create_app(Predictor.from_onnx(onnx_path))) as url, httpx.Client(base_url=url) as client:
        metadata = client.get("/metadata").json()
        assert metadata["source"] == "onnx" and metadata["classes"] == [str(digit) for digit in range(10)]
        files = [
            ("file", (f"{i}.png", _png(image[0].numpy()), "image/png")) for i, image in enumerate(digits["images"])
        ]
        answer = client.post("/predict", files=files)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        for prediction, row in zip(predictions, digits["probabilities"], strict=True):
            assert prediction["index"] == row.argmax().item()
            assert prediction["probability"] == pytest.approx(row.max().item(), abs=1e-5)
        wrong = client.post("/predict", json={"inputs": [[0] * 8] * 8})  # (8, 8): neither batch nor channel
        assert wrong.status_code == 422 and "(B, 1, 8, 8) uint8, got shape (8, 8)" in wrong.json()["detail"]


def test_language_model_continues_text(tmp_path):
    torch.manual_seed(0)
    model = zoo.GPT(vocab="\n abcdefgh", block_size=8, n_layer=1, n_head=2, n_embd=16).eval()
    with ThreadServer(create_app(Predictor.from_model(model))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/metadata").json()["input"] == {
            "kind": "text",
            "shape": [None, None],
            "dtype": "int64",
            "preprocess": {
                "input": "text",
                **dict.fromkeys(("in_channels", "img_size", "mean", "std", "classes")),
                "vocab": "\n abcdefgh",
                "block_size": 8,
            },
        }
        answer = client.post("/predict", json={"text": "bad cab", "max_new_tokens": 20, "temperature": 1.0, "seed": 5})
        assert answer.status_code == 200, answer.text
        expected = model.generate("bad cab", 20, 1.0, None, torch.Generator().manual_seed(5))
        assert answer.json()["predictions"] == [{"input": "bad cab", "output": expected, "continuation": expected[7:]}]
        unknown = client.post("/predict", json={"text": "xyz"})
        assert unknown.status_code == 422 and "['x', 'y', 'z'] are not in the model's vocabulary" in unknown.text
        too_long = client.post("/predict", json={"text": "a", "max_new_tokens": 10**6})
        assert too_long.status_code == 422 and "max_new_tokens" in too_long.text
        ids = client.post("/predict?top_k=3", json={"inputs": [[1, 2, 3]]})
        assert ids.status_code == 200 and len(ids.json()["predictions"][0]["next"]) == 3  # the 3 likeliest next
        assert client.post("/predict", json={"inputs": [[0.5, 2.0]]}).status_code == 422  # floats for token ids
        assert client.get("/health").json() == {"status": "ok"}
