"""The chat page's crisis banner carries the resources of the message's risk category, not only 988;
its domain selector lists the domains of `quantum_adapters.domains` and finds their adapters."""

from quantum_adapters.domains import DOMAINS
from serving.service import ChatService
from serving.ui import DOMAIN_CHOICES, _banner, model_for_domain


def test_banner_leads_with_the_category_and_adds_the_others_matched():
    text = _banner(
        {"crisis": True, "category": "danger_from_others", "categories": ["suicide_self_harm"]}, "UK"
    )
    assert "0808 2000 247" in text  # Refuge's domestic-abuse line
    assert "116 123" in text  # Samaritans, for the second category
    assert text.index("0808 2000 247") < text.index("116 123")


def test_banner_without_a_category_falls_back_to_the_suicide_line():
    assert "988" in _banner({"crisis": True}, "US")


class _Engine:
    """Just what the selector reads of an engine: adapter names and their manifests' domains."""

    def __init__(self, domains: dict[str, str]) -> None:
        self.domains, self.adapters = domains, dict.fromkeys(domains)

    def info(self, name: str) -> dict:
        return {"domain": self.domains[name]}


def test_domain_selector_values_are_canonical_and_find_adapters_whatever_their_spelling():
    assert DOMAIN_CHOICES == [
        ("Auto (route by topic)", "auto"),
        *((d.label, d.name) for d in DOMAINS.values()),
        ("Base model", "base"),
    ]
    service = ChatService(_Engine({"care": "counselling", "sums": "gsm8k"}))  # type: ignore[arg-type]
    assert model_for_domain(service, "counseling") == "care"
    assert model_for_domain(service, "math") == "sums"
    assert model_for_domain(ChatService(_Engine({})), "math") == "base"  # type: ignore[arg-type]
    assert model_for_domain(service, "auto") == "auto"
