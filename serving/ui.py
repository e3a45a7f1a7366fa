"""The chat page (Gradio), mounted at /ui. It calls the chat service directly, never the HTTP API.

A domain selector (auto, counselling, math, base), streamed replies, which adapter answered, the AI
disclosure, and a crisis banner with the resources for the configured locale when a message is a crisis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from quantum_adapters.domains import DOMAINS

from .engine import BASE
from .risk import CATEGORIES
from .safety import AI_DISCLOSURE, crisis_resources
from .sampling import SamplingParams
from .service import AUTO, ChatResult, ChatService

__all__ = ["DOMAIN_CHOICES", "UI_DECODING", "build_ui", "model_for_domain"]

DOMAIN_CHOICES = [
    ("Auto (route by topic)", AUTO),
    *((domain.label, domain.name) for domain in DOMAINS.values()),
    ("Base model", BASE),
]
"""The domain selector: (label, value); a domain's value is its canonical name."""


def model_for_domain(service: ChatService, domain: str) -> str:
    """The model name to request for a selector value: auto, base, or the adapter of that domain."""
    if domain in (AUTO, BASE):
        return domain
    if domain in service.engine.adapters:
        return domain
    for name in service.engine.adapters:
        if service.domain_of(name) == domain:
            return name
    return BASE


# The page decodes greedily (the same message gets the same reply) with OpenAI's frequency penalty:
# small models decoding greedily fall into repeating a sentence until max_tokens, which the penalty stops.
UI_DECODING = SamplingParams(max_tokens=256, temperature=0.0, frequency_penalty=0.5)


def _banner(safety: dict[str, Any], locale: str) -> str:
    """The banner for a crisis: the resources of its risk category (and of the others it matched)."""
    found = [safety.get("category"), *safety.get("categories", [])]
    categories = list(dict.fromkeys(c for c in found if c in CATEGORIES)) or ["suicide_self_harm"]
    lines = " ".join(crisis_resources(locale, c) for c in categories)
    return f"**If you are in danger, please reach out now:** {lines}"


def build_ui(get_service: Callable[[], ChatService], locale: str = "US") -> gr.Blocks:
    """The page; ``get_service`` returns the running service (it is created in the app's lifespan)."""

    def respond(message: str, history: list[dict[str, Any]], domain: str) -> Iterator[tuple[Any, ...]]:
        message = (message or "").strip()
        if not message:
            yield history, "", gr.update(), gr.update()
            return
        service = get_service()
        history = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        conversation = [
            {"role": m["role"], "content": m["content"]}
            for m in history[:-1]
            if isinstance(m.get("content"), str)
        ]
        yield history, "", "…", gr.update(visible=False)
        model = model_for_domain(service, domain)
        text = ""
        for part in service.stream(conversation, model, UI_DECODING):
            if isinstance(part, ChatResult):
                routed = " (chosen automatically)" if part.routed else ""
                answered = f"Answered by **{part.adapter}**{routed}."
                banner = gr.update(
                    value=_banner(part.safety, locale), visible=bool(part.safety.get("crisis"))
                )
                yield history, "", answered, banner
            else:
                text += part
                history[-1] = {"role": "assistant", "content": text}
                yield history, "", gr.update(), gr.update()

    with gr.Blocks(title="qtha assistant", analytics_enabled=False) as page:
        gr.Markdown(f"## qtha assistant\n{AI_DISCLOSURE}", elem_id="disclosure")
        banner = gr.Markdown(visible=False, elem_id="crisis-banner")
        domain = gr.Dropdown(DOMAIN_CHOICES, value=AUTO, label="Domain", elem_id="domain")
        chat = gr.Chatbot(label="Conversation", height=380, elem_id="chat", feedback_options=None)
        box = gr.Textbox(placeholder="Type a message and press Enter", label="Message", elem_id="message")
        answered = gr.Markdown("", elem_id="answered-by")
        send = gr.Button("Send", variant="primary", elem_id="send")
        outputs = [chat, box, answered, banner]
        box.submit(respond, [box, chat, domain], outputs)
        send.click(respond, [box, chat, domain], outputs)
    return page
