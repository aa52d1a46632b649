"""Hostile requests to `zoo serve`: non-finite numbers, huge integers, deep nesting, options out of range, more
samples than allowed and more requests than the server takes. Each gets a 4xx (or 503) naming the field, and the
server keeps answering."""

from __future__ import annotations

import asyncio
import json
import resource
import threading
import time

import httpx
import pytest
import torch
from conftest import ThreadServer

import zoo
from recipes.tools.predictor import Predictor
from recipes.tools.serve import create_app


@pytest.fixture(scope="module")
def regressor_url():
    """A regressor reading (B, 2) float32, served with at most 8 samples per request."""
    torch.manual_seed(0)
    with ThreadServer(create_app(Predictor.from_model(zoo.create_model("mlp_regressor")), max_samples=8)) as url:
        yield url


@pytest.fixture(scope="module")
def text_url():
    torch.manual_seed(0)
    model = zoo.GPT(vocab="\n abcdefgh", block_size=8, n_layer=1, n_head=2, n_embd=16).eval()
    with ThreadServer(create_app(Predictor.from_model(model))) as url:
        yield url


def _post(url: str, path: str = "/predict", **kwargs) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as client:
        return client.post(path, **kwargs)


@pytest.mark.parametrize(
    ("body", "position", "shown"),
    [
        (b'{"inputs": [[0.5, NaN]]}', "(0, 1)", "nan"),
        (b'{"inputs": [[1.0, 2.0], [Infinity, 0.0]]}', "(1, 0)", "inf"),
        (b'{"inputs": [[-Infinity, 0.0]]}', "(0, 0)", "-inf"),
        (b'{"inputs": [[0.0, 1e308]]}', "(0, 1)", "inf"),  # finite in JSON, beyond float32
    ],
)
def test_non_finite_inputs_are_422_naming_the_position(regressor_url, body, position, shown):
    answer = _post(regressor_url, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert f"position {position} is {shown}" in detail and "finite" in detail
    assert _post(regressor_url, json={"inputs": [[0.5, 0.25]]}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        (b'{"inputs": [[' + b"9" * 5000 + b", 1]]}", 400, "malformed JSON"),  # Python refuses > 4300 digits
        (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "malformed JSON"),  # RecursionError
        (b'{"inputs": [[' + b"9" * 30 + b", 1]]}", 422, "rectangular nested list"),  # int beyond int64
        (b'{"inputs": [[1, 2], [3]]}', 422, "rectangular nested list"),
        (b'{"inputs": [[true, false]]}', 422, "booleans"),
    ],
)
def test_malformed_numbers_and_nesting_are_4xx(regressor_url, body, status, named):
    answer = _post(regressor_url, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert named in answer.json()["detail"]
    assert _post(regressor_url, json={"inputs": [[0.5, 0.25]]}).status_code == 200


def test_more_samples_than_allowed_is_413(regressor_url):
    answer = _post(regressor_url, json={"inputs": [[0.0, 0.0]] * 9})
    assert answer.status_code == 413 and "9 samples" in answer.text and "at most 8" in answer.text
    assert len(_post(regressor_url, json={"inputs": [[0.0, 0.0]] * 8}).json()["predictions"]) == 8


@pytest.mark.parametrize("query", ["\u00b2", "0", "-1", "2.5", "9" * 50, "1e3"])
def test_top_k_query_must_be_a_small_positive_integer(regressor_url, query):
    answer = _post(regressor_url, f"/predict?top_k={query}", json={"inputs": [[0.0, 0.0]]})
    assert answer.status_code == 422 and "top_k" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": 1e-300}, "temperature"),
        ({"temperature": 1e300}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"seed": 1e300}, "seed"),
        ({"seed": 2**70}, "seed"),
        ({"seed": -1}, "seed"),
        ({"max_new_tokens": 10.5}, "max_new_tokens"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
    ],
)
def test_text_options_out_of_range_are_422_naming_the_field(text_url, options, field):
    answer = _post(text_url, content=_json({"text": "bad", **options}), headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(f'"{field}" must be')


def test_text_options_at_their_limits_are_answered(text_url):
    for options in ({"temperature": 0}, {"temperature": 1e-3, "top_k": 1}, {"seed": 2**63 - 1, "temperature": 1e3}):
        answer = _post(text_url, json={"text": "bad", "max_new_tokens": 5, **options})
        assert answer.status_code == 200, (options, answer.text)
        assert len(answer.json()["predictions"][0]["continuation"]) == 5


def _json(payload: dict) -> bytes:
    """JSON as Python writes it, NaN included (httpx's encoder refuses NaN)."""
    return json.dumps(payload).encode()


def test_requests_beyond_running_and_waiting_are_503_and_the_rest_are_answered():
    predictor = Predictor.from_model(zoo.create_model("mlp_regressor"))
    started, release = threading.Event(), threading.Event()
    predict = predictor.predict_tensor

    def slow(x, top_k=5, names=None):
        started.set()
        assert release.wait(30)
        return predict(x, top_k, names)

    predictor.predict_tensor = slow
    with ThreadServer(create_app(predictor, max_concurrent=1, max_waiting=1)) as url:
        answers: list[httpx.Response] = []
        first = threading.Thread(target=lambda: answers.append(_post(url, json={"inputs": [[0.0, 0.0]]})))
        first.start()
        assert started.wait(30)  # the first runs
        second = threading.Thread(target=lambda: answers.append(_post(url, json={"inputs": [[1.0, 1.0]]})))
        second.start()
        time.sleep(0.5)  # the second waits for the slot
        busy = _post(url, json={"inputs": [[2.0, 2.0]]})
        assert busy.status_code == 503 and "1 requests running and 1 waiting" in busy.json()["detail"]
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # health answers while predictions run
        release.set()
        first.join(30)
        second.join(30)
        assert [answer.status_code for answer in answers] == [200, 200]
        assert _post(url, json={"inputs": [[3.0, 3.0]]}).status_code == 200  # the slots were given back


def test_two_hundred_concurrent_requests_are_all_answered():
    """A burst of 200 clients at once into a server that lets them all wait: every one gets its own prediction and
    the server stays up (p99 latency and peak RSS are printed for the record)."""
    torch.manual_seed(0)
    predictor = Predictor.from_model(zoo.create_model("mlp_regressor"))
    inputs = torch.rand(200, 2)
    with torch.no_grad():
        expected = predictor.predict_tensor(inputs)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def burst(url: str) -> list[tuple[int, float, dict]]:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=200)) as client:

            async def one(row: list[float]) -> tuple[int, float, dict]:
                start = time.perf_counter()
                answer = await client.post("/predict", json={"inputs": [row]})
                return answer.status_code, time.perf_counter() - start, answer.json()

            return await asyncio.gather(*(one(row) for row in inputs.tolist()))

    with ThreadServer(create_app(predictor, max_concurrent=4, max_waiting=200)) as url:
        results = asyncio.run(burst(url))
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert [status for status, _, _ in results] == [200] * 200
    for (_, _, body), alone in zip(results, expected, strict=True):
        assert body["predictions"][0]["prediction"] == pytest.approx(alone["prediction"], abs=1e-6)
    latencies = sorted(seconds for _, seconds, _ in results)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"200 concurrent requests: all answered, p99 {latencies[197] * 1000:.0f} ms, "
        f"peak RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB"
    )
