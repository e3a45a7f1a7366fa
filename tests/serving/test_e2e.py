"""End to end: a real uvicorn server on a loopback port, the OpenAI client library, and a real
headless Chromium driving the chat page (skipped, with the reason, where Chromium is not installed)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from serving.app import create_app
from serving.engine import Engine
from serving.service import ChatService
from serving.settings import Settings
from tests.serving.conftest import live_server

KEY = "e2e-key-abcdef"
SHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"


@pytest.fixture(scope="module")
def live(tiny_chat_model_dir, tiny_artifacts):
    engine = Engine(
        str(tiny_chat_model_dir), {"counseling": tiny_artifacts["counseling"], "math": tiny_artifacts["math"]}
    )
    # Small admission limits, so that the flood test knows exactly how many requests wait and how many
    # are refused.
    settings = Settings(api_keys=(KEY,), max_concurrent=2, max_queue=3)
    app = create_app(settings, service=ChatService(engine), ui=True)
    with live_server(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(live) -> str:
    return live.url


def test_openai_client_gets_answers_streamed_and_not(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["auto", "base", "counseling", "math"]
    done = client.chat.completions.create(
        model="math", messages=[{"role": "user", "content": "2+2?"}], max_tokens=8, temperature=0
    )
    assert done.choices[0].message.role == "assistant" and done.usage.total_tokens > 0
    pieces = client.chat.completions.create(
        model="math", messages=[{"role": "user", "content": "2+2?"}], max_tokens=8, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices)
    assert text == done.choices[0].message.content


def test_openai_client_options(server):
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    ask = {"model": "math", "messages": [{"role": "user", "content": "2+2?"}], "temperature": 0}

    chunks = list(
        client.chat.completions.create(
            **ask, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert (
        chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason in (
        "stop",
        "length",
    )
    plain = list(client.chat.completions.create(**ask, max_tokens=6, stream=True))
    assert all(c.usage is None for c in plain)

    card = client.models.retrieve("math")
    assert card.id == "math" and card.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-17")
    assert err.value.body["code"] == "model_not_found" and "available: auto" in err.value.body["message"]

    short = client.chat.completions.create(**ask, max_completion_tokens=2)
    assert short.usage.completion_tokens <= 2

    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**ask, max_tokens=2, tools=[tool])
    assert err.value.body["param"] == "tools" and "not supported" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**ask, max_tokens=2, response_format={"type": "json_object"})
    assert err.value.body["param"] == "response_format"
    assert client.chat.completions.create(**ask, max_tokens=2, response_format={"type": "text"}).choices


def test_openai_client_text_completions(server):
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    done = client.completions.create(model="math", prompt="2+2?", max_tokens=5, temperature=0)
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    assert done.choices[0].finish_reason in ("stop", "length") and 1 <= done.usage.completion_tokens <= 5
    same = client.completions.create(model="math", prompt=["2+2?"], max_tokens=5, temperature=0)
    assert same.choices[0].text == done.choices[0].text

    events = list(
        client.completions.create(
            model="math",
            prompt="2+2?",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(e.choices[0].text for e in events if e.choices) == done.choices[0].text
    assert events[-1].choices == [] and events[-1].usage.completion_tokens == done.usage.completion_tokens

    crisis = client.completions.create(model="math", prompt="I want to end my life tonight", max_tokens=5)
    assert "988" in crisis.choices[0].text and crisis.usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="math", prompt=["one"] * 9, max_tokens=2)
    assert err.value.body["param"].startswith("prompt")
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="math", prompt="hi", max_tokens=5000)
    assert err.value.body["param"] == "max_tokens"


def test_server_stays_healthy_under_bad_requests_and_a_flood(live):
    server = live.url
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as c:
        assert (
            c.post(
                "/v1/chat/completions", content=b"not json", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert (
            c.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9},
            ).status_code
            == 400
        )

        # Every slot is held (leases taken on the server's own loop), so the flood's outcome does not
        # depend on how fast the tiny model is: max_queue requests wait, the other `refused` are
        # answered 429 (queue_full, Retry-After) at once, then the waiting ones are served.
        queue, settings = live.app.state.queue, live.app.state.settings
        assert (queue.max_concurrent, settings.max_queue) == (2, 3)
        refused = 4
        before = live.queue_stats()
        leases = [live.call(queue.lease()) for _ in range(queue.max_concurrent)]
        answers: list[httpx.Response] = []

        def one() -> None:
            answers.append(
                c.post(
                    "/v1/chat/completions",
                    json={
                        "model": "math",
                        "messages": [{"role": "user", "content": "count"}],
                        "max_tokens": 16,
                    },
                )
            )

        threads = [threading.Thread(target=one) for _ in range(settings.max_queue + refused)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while (
            live.queue_stats()["rejected"] - before["rejected"] < refused
            or live.queue_stats()["waiting"] < settings.max_queue
        ):
            assert time.monotonic() < deadline, (live.queue_stats(), [a.status_code for a in answers])
            time.sleep(0.02)
        assert sorted(a.status_code for a in answers) == [429] * refused  # refused while slots are held
        assert c.get("/health").status_code == 200  # and the server answers meanwhile
        for lease in leases:
            live.loop.call_soon_threadsafe(lease.release)
        for t in threads:
            t.join(timeout=120)
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] * settings.max_queue + [429] * refused, codes
        for busy in (a for a in answers if a.status_code == 429):
            assert _error(busy.content)["code"] == "queue_full" and int(busy.headers["Retry-After"]) >= 1
        stats = c.get("/health").json()["queue"]
        assert stats["in_flight"] == 0 and stats["waiting"] == 0
        ok = c.post(
            "/v1/chat/completions",
            json={"model": "math", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert ok.status_code == 200


def _error(body: bytes) -> dict:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "code", "param"}
    return err


def test_oversized_body_gets_a_readable_413_and_the_connection_survives(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (2 * 1024 * 1024) + b'"}]}'
    with httpx.Client(base_url=server, headers=headers, timeout=60) as c:
        resp = c.post("/v1/chat/completions", content=big)
        assert resp.status_code == 413 and _error(resp.content)["code"] == "body_too_large"
        assert "exceeds the limit of 65536" in resp.json()["error"]["message"]
        after = c.post(
            "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert after.status_code == 404  # the same client, answered normally
        # sent chunked, with no Content-Length: refused once it grows past the limit
        resp = c.post(
            "/v1/chat/completions", content=iter([big[i : i + 16384] for i in range(0, len(big), 16384)])
        )
        assert resp.status_code == 413 and _error(resp.content)["code"] == "body_too_large"
        small = json.dumps({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).encode()
        assert c.post("/v1/chat/completions", content=iter([small[:10], small[10:]])).status_code == 404

    port = int(server.rsplit(":", 1)[1])
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"{head}Content-Length: {len(big)}\r\n\r\n".encode() + big)
        status, body, rest = _read_response(sock)
        assert status == 413 and _error(body)["code"] == "body_too_large"
        sock.sendall(f"{head}Content-Length: {len(small)}\r\n\r\n".encode() + small)
        status, body, _ = _read_response(sock, rest)  # the same connection still works
        assert status == 404 and _error(body)["code"] == "model_not_found"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        # a client that waits for "100 Continue" is answered without sending its body, then closed
        sock.sendall(f"{head}Expect: 100-continue\r\nContent-Length: {len(big)}\r\n\r\n".encode())
        status, body, rest = _read_response(sock)
        assert status == 413 and _error(body)["code"] == "body_too_large"
        assert rest + sock.recv(1024) == b""  # a clean close (FIN), not a reset


def _read_response(sock: socket.socket, buf: bytes = b"") -> tuple[int, bytes, bytes]:
    """(status, body, bytes after it) of one HTTP/1.1 response with a Content-Length."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed before the response headers: {buf!r}"
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length"
    )
    while len(buf) < length:
        data = sock.recv(65536)
        assert data, "connection closed inside the response body"
        buf += data
    return int(lines[0].split()[1]), buf[:length], buf[length:]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason=(
        "Debian's chromium and chromium-driver are not installed (.ci/run installs them; "
        "make test does not: apt-get install chromium chromium-driver)"
    ),
)
def test_chat_page_in_a_real_browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(f"{server}/ui/")
        wait = WebDriverWait(driver, 60)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#message textarea")))
        assert "not a therapist" in driver.find_element(By.ID, "disclosure").text
        box.send_keys("I want to end my life")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: "988" in d.find_element(By.ID, "chat").text)
        wait.until(lambda d: "Answered by" in d.find_element(By.ID, "answered-by").text)
        banner = driver.find_element(By.ID, "crisis-banner")
        assert banner.is_displayed() and "988" in banner.text
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / "chat-crisis.png"))

        box = driver.find_element(By.CSS_SELECTOR, "#message textarea")
        box.send_keys("What is 12 plus 30?")
        box.send_keys(Keys.ENTER)
        wait.until(
            lambda d: (
                "Answered by **" not in d.find_element(By.ID, "answered-by").text
                and "math" in d.find_element(By.ID, "answered-by").text
            )
        )
        driver.save_screenshot(str(SHOTS / "chat-math.png"))
    finally:
        driver.quit()
