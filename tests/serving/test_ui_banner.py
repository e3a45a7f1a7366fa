"""The chat page's crisis banner carries the resources of the message's risk category, not only 988."""

from serving.ui import _banner


def test_banner_leads_with_the_category_and_adds_the_others_matched():
    text = _banner(
        {"crisis": True, "category": "danger_from_others", "categories": ["suicide_self_harm"]}, "UK"
    )
    assert "0808 2000 247" in text  # Refuge's domestic-abuse line
    assert "116 123" in text  # Samaritans, for the second category
    assert text.index("0808 2000 247") < text.index("116 123")


def test_banner_without_a_category_falls_back_to_the_suicide_line():
    assert "988" in _banner({"crisis": True}, "US")
