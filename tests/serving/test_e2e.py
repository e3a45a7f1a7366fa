"""End to end: a real uvicorn server on a loopback port, the OpenAI client library, and a real
headless Chromium driving the chat page (skipped, with the reason, where Chromium is not installed)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from serving.app import create_app
from serving.engine import Engine
from serving.service import ChatService
from serving.settings import Settings

KEY = "e2e-key-abcdef"
SHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_chat_model_dir, tiny_artifacts):
    engine = Engine(
        str(tiny_chat_model_dir), {"counseling": tiny_artifacts["counseling"], "math": tiny_artifacts["math"]}
    )
    app = create_app(Settings(api_keys=(KEY,)), service=ChatService(engine), ui=True)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


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


def test_server_stays_healthy_under_bad_requests_and_a_flood(server):
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

        codes: list[int] = []

        def one() -> None:
            r = c.post(
                "/v1/chat/completions",
                json={"model": "math", "messages": [{"role": "user", "content": "count"}], "max_tokens": 16},
            )
            codes.append(r.status_code)

        threads = [threading.Thread(target=one) for _ in range(14)]  # bounded: 14 requests, then stop
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert set(codes) <= {200, 429} and 200 in codes
        assert c.get("/health").status_code == 200
        ok = c.post(
            "/v1/chat/completions",
            json={"model": "math", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert ok.status_code == 200


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
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
