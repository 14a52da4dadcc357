"""maskdiff serve's many-prompts API (POST /generate and /generate/stream) over real loopback sockets: rows
answered in order and equal to the library's, streamed one event per row, and bad rows refused with 422."""
import json

import httpx  # make test installs the serve and test-serve extras: a missing one fails, never skips
import pytest

import maskdiff
from helpers import ServerThread
from maskdiff.sampling.rows import Row, RowsRequest
from maskdiff.serve import Limits, create_app

ROWS = [{"prompt": "to be", "length": 20}, {"template": "the [5] is"}, {"prompt": "or not", "seed": 3}]


@pytest.fixture(scope="module")
def pipe(served_run):
    return maskdiff.load(served_run)


@pytest.fixture(scope="module")
def server(pipe):
    with ServerThread(create_app(pipe, run="micro", limits=Limits(max_samples=3))) as url:
        yield url


def test_generate_answers_every_row_in_order_as_the_library_does(server, pipe):
    answer = httpx.post(f"{server}/generate", json={"rows": ROWS, "steps": 8, "batch_size": 2}, timeout=60)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    want = pipe.run_rows(RowsRequest([Row(**r) for r in ROWS], steps=8))
    assert [r["index"] for r in got["rows"]] == [0, 1, 2] and got["sampler"] == "cached" and got["steps"] == 8
    assert [(r["text"], r["tokens"], r["network_calls"], r["seed"]) for r in got["rows"]] == [
        (w.text, w.tokens, w.network_calls, w.seed) for w in want]
    with httpx.stream("POST", f"{server}/generate/stream", json={"rows": ROWS, "steps": 8}, timeout=60) as streamed:
        events = [json.loads(l[6:]) for l in streamed.iter_lines() if l.startswith("data: ")]
    assert [e["type"] for e in events] == ["start", "row", "row", "row", "done"]
    assert sorted(e["index"] for e in events if e["type"] == "row") == [0, 1, 2]
    assert [r["tokens"] for r in events[-1]["rows"]] == [r["tokens"] for r in got["rows"]]
    assert "/generate" in httpx.get(f"{server}/openapi.json").json()["paths"]


@pytest.mark.parametrize("body, needle", [
    ({"rows": [{"prompt": ""}]}, "row 0: the prompt is empty"),
    ({"rows": [{"template": "no span"}]}, "row 0: the template has no [N] span"),
    ({"rows": [{"prompt": "to be", "length": 64}]}, "above this server's maximum length 32"),
    ({"rows": ROWS + ROWS[:1]}, "4 rows is above this server's limit of 3 rows"),
    ({"rows": []}, "rows: List should have at least 1 item"),
    ({"rows": [{"prompt": "a", "colour": "red"}]}, "colour: Extra inputs are not permitted"),
    ({"rows": [{"prompt": "a"}], "stop_at_eos": True}, "no end-of-text token"),
])
def test_bad_rows_get_422_with_a_message(server, body, needle):
    for endpoint in ("/generate", "/generate/stream"):
        answer = httpx.post(f"{server}{endpoint}", json=body, timeout=30)
        assert answer.status_code == 422 and needle in answer.json()["error"], answer.text
