"""Templates: the text always lands in the prompt, or the template is refused in one line that names no flag."""
from __future__ import annotations

import pytest

from eclip.errors import OptionError
from eclip.prompts import IMAGENET, SINGLE, resolve_templates


@pytest.mark.parametrize("template, reason", [
    ("{{}}", "has no {} where the text goes ({{ }} are literal braces)"),  # a literal "{}": every text would give one prompt
    ("a photo of {{}}.", "has no {} where the text goes"),
    ("a photo", "has no {} where the text goes"),
    ("a {} and a {}", "is not a valid template"),
    ("a {x}", "is not a valid template"),
])
def test_a_template_the_text_cannot_go_into_is_refused(template, reason):
    with pytest.raises(OptionError) as caught:
        resolve_templates(template)
    message = str(caught.value)
    assert reason in message and repr(template) in message and "\n" not in message
    assert "--" not in message  # the library names no command-line flag; the CLI and the web page say it their way


@pytest.mark.parametrize("template, prompt", [("a {}.", "a cat."), ("{{ {} }}", "{ cat }"), ("a {0}", "a cat")])
def test_a_template_with_a_slot_puts_the_text_in(template, prompt):
    assert [t.format("cat") for t in resolve_templates(template)] == [prompt]


def test_sets_and_none():
    assert resolve_templates("single") == SINGLE and resolve_templates("imagenet") == IMAGENET
    assert resolve_templates(None) == ("{}",)
