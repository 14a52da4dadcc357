"""maskdiff serve's JSON API over real loopback sockets: the schema, samples equal to the library's for
every registered sampler (watching a chain changes none of its draws), the stream of reveals, every kind
of bad request answered 4xx with a message, the queue's "busy" answer, and generations stopped when
their client leaves."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack

import httpx  # make test installs the serve and test-serve extras: a missing one fails, never skips
import pytest
import torch

import maskdiff
from helpers import ServerThread, assert_clean_error, run_cli
from maskdiff.sampling import SAMPLERS
from maskdiff.serve import Limits, create_app

TEMPLATE = "to be or [12] to be"


@pytest.fixture(scope="module")
def pipe(served_run):
    return maskdiff.load(served_run)


@pytest.fixture(scope="module")
def server(pipe):
    """One running generation and one waiting at most; steps up to 200,000 so that a chain can be made
    to run long enough to be interrupted."""
    app = create_app(pipe, run="micro", limits=Limits(max_steps=200_000, max_samples=4, max_running=1, max_waiting=1))
    with ServerThread(app) as url:
        yield url


def status(url):
    return httpx.get(f"{url}/status").json()


def events_of(response):
    """The JSON objects of a server-sent event stream, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: "):])


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_model_describes_the_run_and_lists_every_registered_sampler(server, pipe):
    info = httpx.get(f"{server}/model").json()
    assert info["samplers"] == list(SAMPLERS)  # the registry, whatever it holds
    assert info["length"] == pipe.config.data.length == info["limits"]["max_length"] == 32
    assert info["vocab_size"] == 27 and info["objective"] == "masked" and info["default_sampler"] == "cached"
    assert info["parameters"] == sum(p.numel() for _, p in pipe.objective.named_parameters())
    assert info["limits"] == dict(max_length=32, max_steps=200_000, max_samples=4, max_running=1, max_waiting=1)
    assert "L = 32" in info["description"] and "step 8" in info["description"]


def test_openapi_schema_documents_the_api(server):
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/sample", "/sample/stream", "/model", "/status"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["SampleRequest"]
    assert set(request["properties"]) == {"template", "prompt", "length", "sampler", "steps", "temperature", "top_p", "num", "seed"}
    assert request["additionalProperties"] is False
    assert request["properties"]["steps"]["minimum"] == 1 and request["properties"]["top_p"]["maximum"] == 1
    answers = schema["paths"]["/sample"]["post"]["responses"]
    assert {"200", "422", "503"} <= set(answers)
    assert "SampleAnswer" in json.dumps(answers["200"]) and "ErrorAnswer" in json.dumps(answers["503"])
    assert {"texts", "nfe", "seconds", "revealed_at"} <= set(schema["components"]["schemas"]["SampleAnswer"]["properties"])


def test_the_page_is_served(server):
    page = httpx.get(server)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/sample/stream" in page.text and "/model" in page.text


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_samples_equal_the_library_and_keep_the_fixed_words(server, pipe, sampler):
    """The same request through the server and through Pipeline.sample gives bit-identical tokens and NFE:
    the per-step callback that feeds the page does not change the draws."""
    answer = httpx.post(f"{server}/sample", json=dict(template=TEMPLATE, sampler=sampler, steps=16, num=2, seed=3), timeout=60)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    want = pipe.sample(2, template=TEMPLATE, steps=16, sampler=sampler, seed=3)
    assert torch.equal(torch.tensor(got["tokens"]), want.tokens)
    assert got["nfe"] == want.nfe.tolist() and got["texts"] == want.texts
    fixed = pipe.template_ids(TEMPLATE) != pipe.tokenizer.mask_id
    revealed = torch.tensor(got["revealed_at"])
    assert torch.all(revealed[:, fixed] == 0) and torch.all(revealed[:, ~fixed] >= 1)
    assert int(revealed.max()) <= got["steps_taken"]
    for text in got["texts"]:
        assert text.startswith("to be or ") and text.endswith(" to be") and len(text) == len("to be or  to be") + 12


def test_prompt_temperature_and_top_p_reach_the_sampler(server, pipe):
    request = dict(prompt="to be", length=20, sampler="ancestral", steps=24, temperature=0.7, top_p=0.9, num=3, seed=11)
    got = httpx.post(f"{server}/sample", json=request, timeout=60).json()
    want = pipe.sample(3, prompt="to be", length=20, sampler="ancestral", steps=24, temperature=0.7, top_p=0.9, seed=11)
    assert got["texts"] == want.texts and all(t.startswith("to be") and len(t) == 20 for t in got["texts"])


def test_the_stream_reveals_every_masked_position_once_and_ends_as_the_json_answer(server):
    request = dict(template="[6] or not [6]", sampler="first-hitting", num=2, seed=5)
    with httpx.stream("POST", f"{server}/sample/stream", json=request, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = list(events_of(response))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"step"}
    start, done = events[0], events[-1]
    assert start["initial"][6:14] == list(" or not ") and start["initial"][:6] == [None] * 6
    state = [list(start["initial"]) for _ in range(2)]
    steps = [e["step"] for e in events[1:-1]]
    assert steps == sorted(set(steps))  # increasing, one event per step that revealed something
    for e in events[1:-1]:
        for b, p, text in e["reveal"]:
            assert state[b][p] is None, "a position was revealed twice or a fixed one changed"
            state[b][p] = text
    assert ["".join(row) for row in state] == done["texts"]
    assert done["nfe"] == [12, 12]  # first-hitting: exactly one call per masked position (linear schedule)
    answer = httpx.post(f"{server}/sample", json=request, timeout=60).json()
    assert {k: v for k, v in done.items() if k not in ("type", "seconds")} == {k: v for k, v in answer.items() if k != "seconds"}


@pytest.mark.parametrize("body, needle", [
    ({"template": TEMPLATE, "sampler": "anchestral"}, "unknown sampler 'anchestral'; choose one of: " + ", ".join(SAMPLERS)),
    ({"template": TEMPLATE, "steps": -3}, "steps: Input should be greater than or equal to 1"),
    ({"template": TEMPLATE, "steps": 0}, "steps: Input should be greater than or equal to 1"),
    ({"template": TEMPLATE, "steps": 200_001}, "limit of 200000"),
    ({"template": TEMPLATE, "num": 5}, "limit of 4 samples"),
    ({"template": TEMPLATE, "num": 0}, "num: Input should be greater than or equal to 1"),
    ({"length": 33}, "maximum length 32"),
    ({"template": "to be or [30] to be"}, "more than this server's maximum length 32"),
    ({"template": "[99999999999999999999]"}, "spans ask for 99999999999999999999 tokens"),
    ({"template": "to be or not to be"}, "no [N] span"),
    ({"template": "to be [0] or"}, "[0] fills nothing"),
    ({"template": ""}, "the template is empty"),
    ({"template": TEMPLATE, "prompt": "to"}, "either a prompt or a template"),
    ({"template": TEMPLATE, "length": 20}, "leave out length"),
    ({"prompt": "to be or not to be that is the question", "length": 20}, "leaves nothing to generate"),
    ({"template": TEMPLATE, "steps": "16"}, "steps: Input should be a valid integer"),
    ({"template": TEMPLATE, "num": 1.5}, "num: Input should be a valid integer"),
    ({"template": 42}, "template: Input should be a valid string"),
    ({"template": TEMPLATE, "temperature": 0}, "temperature: Input should be greater than 0"),
    ({"template": TEMPLATE, "top_p": 1.5}, "top_p: Input should be less than or equal to 1"),
    ({"template": TEMPLATE, "seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"template": TEMPLATE, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ([1, 2, 3], "Input should be a valid dictionary"),
])
@pytest.mark.parametrize("endpoint", ["/sample", "/sample/stream"])
def test_bad_requests_get_422_with_a_message(server, body, needle, endpoint):
    answer = httpx.post(f"{server}{endpoint}", json=body, timeout=30)
    assert answer.status_code == 422, answer.text
    assert needle in answer.json()["error"]
    assert "Traceback" not in answer.text


@pytest.mark.parametrize("raw, needle", [(b"{not json", "JSON decode error"), (b"", "Field required")])
def test_malformed_json_gets_422(server, raw, needle):
    answer = httpx.post(f"{server}/sample", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and needle in answer.json()["error"]


def test_unknown_paths_and_methods_get_4xx_with_a_message(server):
    assert httpx.get(f"{server}/nowhere").json() == {"error": "Not Found"}
    assert httpx.get(f"{server}/sample").status_code == 405 and "error" in httpx.get(f"{server}/sample").json()


def test_a_full_queue_answers_busy_and_leaving_clients_stop_their_generation(server):
    """One slot, one waiting place: a third request is 'busy' (503); closing a stream stops its chain at
    the next step and hands the slot to the waiting one; a JSON client that gives up stops its chain too."""
    long = dict(sampler="ancestral", steps=200_000, seed=0)  # minutes of work if nothing stopped it
    before = status(server)
    with httpx.Client(timeout=60) as a_client, httpx.Client(timeout=60) as b_client, ExitStack() as b_stack:
        a_stack = ExitStack()
        a_events = events_of(a_stack.enter_context(a_client.stream("POST", f"{server}/sample/stream", json=long)))
        assert next(a_events)["type"] == "start"
        b_events = events_of(b_stack.enter_context(b_client.stream("POST", f"{server}/sample/stream", json=long)))
        assert next(b_events) == {"type": "queued", "position": 1}
        assert wait_for(lambda: status(server)["waiting"] == 1)
        busy = httpx.post(f"{server}/sample", json=dict(template=TEMPLATE))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"].startswith("busy: 1 generation(s) running and 1 waiting")
        assert status(server)["busy"] == before["busy"] + 1
        a_stack.close()  # the client leaves: the server stops its chain and B starts
        assert next(b_events)["type"] == "start"
        assert wait_for(lambda: status(server)["cancelled"] == before["cancelled"] + 1)
    assert wait_for(lambda: status(server)["cancelled"] == before["cancelled"] + 2)
    with pytest.raises(httpx.ReadTimeout):  # a JSON client that gives up after a second
        httpx.post(f"{server}/sample", json=long, timeout=1.0)
    assert wait_for(lambda: status(server)["cancelled"] == before["cancelled"] + 3)
    after = status(server)
    assert after["running"] == 0 and after["waiting"] == 0 and after["served"] == before["served"]


def test_a_run_with_its_own_sampler_is_served_with_it_only(tmp_path_factory, plays):
    """The autoregressive baseline: only its own sampler is offered; a prompt is continued left to right
    (position k after the prompt revealed at step k); templates are refused with the library's reason."""
    from helpers import micro_config
    from maskdiff.train import train

    cfg = micro_config(steps=2, corpus=plays)
    cfg.diffusion.objective = "ar"
    run = tmp_path_factory.mktemp("serve-ar") / "run"
    train(cfg, run, progress=False)
    with ServerThread(create_app(maskdiff.load(run))) as url:
        info = httpx.get(f"{url}/model").json()
        assert info["samplers"] == [info["default_sampler"]] == ["autoregressive"]
        got = httpx.post(f"{url}/sample", json=dict(prompt="to be", length=12, sampler="autoregressive", num=2), timeout=60).json()
        assert got["revealed_at"] == [[0] * 5 + list(range(1, 8))] * 2 and got["nfe"] == [7, 7]
        refused = httpx.post(f"{url}/sample", json=dict(template=TEMPLATE, sampler="autoregressive"), timeout=60)
        assert refused.status_code == 422 and "apply to masked diffusion models" in refused.json()["error"]


def test_image_runs_are_refused_with_a_reason(pipe):
    from copy import deepcopy

    image = deepcopy(pipe)
    image.config = deepcopy(pipe.config)
    image.config.data.modality = "image"
    with pytest.raises(maskdiff.MaskdiffError, match="image run draws its samples with maskdiff sample"):
        create_app(image)


def test_a_huge_span_is_refused_before_it_is_made(pipe):
    """Pipeline.template_ids (maskdiff sample --template too) sums the spans before allocating them."""
    with pytest.raises(maskdiff.MaskdiffError, match="spans ask for 10000000000000 tokens, more than the model's maximum length 32"):
        pipe.template_ids("to be [10000000000000]")


def test_limits_are_checked():
    with pytest.raises(maskdiff.MaskdiffError, match="max_running must be an integer >= 1"):
        create_app(None, limits=Limits(max_running=0))


# --------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_the_command_serves_until_interrupted(served_run):
    proc = subprocess.Popen([sys.executable, "-m", "maskdiff.cli", "serve", str(served_run), "--port", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {served_run} (masked, step 8) at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0].rstrip("/")
        assert httpx.get(f"{url}/model").json()["length"] == 32
        assert httpx.post(f"{url}/sample", json=dict(template=TEMPLATE, steps=8), timeout=60).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.slow
def test_the_command_names_a_taken_port_and_a_missing_run(served_run, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_clean_error(run_cli("serve", served_run, "--port", port), f"cannot listen on 127.0.0.1:{port}", "--port")
    assert_clean_error(run_cli("serve", tmp_path / "nothing", "--port", "0"), "does not exist")
    proc = run_cli("serve", served_run, "--max-running", "0")  # argparse: usage, then one error line
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "maskdiff serve: error: argument --max-running: expected a positive integer, got 0"
