"""tutor/hints.py: a hint ladder of rungs that never gives the answer away, whatever the model writes."""

import pytest

from tutor.hints import FALLBACKS, RUNGS, cut_leaks, hint_messages, leaks, next_hint

PROBLEM = "If 3x + 7 = 22, what is x?"
HIDDEN = ["5"]


def leaky_model(replies):
    """A stand-in model that answers from a list, recording what it was asked."""
    asked = []

    def generate(messages):
        asked.append(messages)
        return replies[min(len(asked), len(replies)) - 1]

    generate.asked = asked
    return generate


@pytest.mark.parametrize("text, leaked", [
    ("Subtract 7 from both sides first.", False),  # 7 is in the problem
    ("So x = 5.", True), ("The answer is \\boxed{5}.", True), ("Then 3x = 15, so divide by 3 to get 5", True),
    ("Divide both sides by 3.", False), ("Try x = 5.0 in the equation", True),
])
def test_a_hint_leaks_when_it_states_the_answer(text, leaked):
    assert leaks(text, HIDDEN, PROBLEM) is leaked


def test_roots_leak_one_by_one():
    assert leaks("One factor is (x - 3).", ["x = 2, x = 3"], "Solve x^2 - 5x + 6 = 0")
    assert not leaks("Look for two numbers whose product is 6 and sum is 5.", ["x = 2, x = 3"], "Solve x^2 - 5x + 6 = 0")


def test_each_rung_asks_for_its_own_kind_of_hint_with_the_earlier_ones():
    messages = hint_messages(PROBLEM, 2, ["Undo the operations.", "Write 3x + 7 = 22."])
    assert RUNGS[2][1] in messages[0]["content"] and "never state the final answer" in messages[0]["content"].lower()
    assert "Hint 2 already given: Write 3x + 7 = 22." in messages[1]["content"]


def test_a_model_that_tries_to_leak_never_gets_the_answer_through():
    clean = leaky_model(["Undo the +7 first, then the times 3."])
    assert next_hint(PROBLEM, 0, [], HIDDEN, clean) == ("Undo the +7 first, then the times 3.", "")

    once = leaky_model(["x = 5, easy.", "Subtract 7 from both sides."])
    hint, note = next_hint(PROBLEM, 1, [], HIDDEN, once)
    assert hint == "Subtract 7 from both sides." and "written again" in note and len(once.asked) == 2

    twice = leaky_model(["Subtract 7 from both sides. Then x = 5.", "Divide by 3. The answer is 5."])
    hint, note = next_hint(PROBLEM, 2, [], HIDDEN, twice)
    assert hint == "Divide by 3." and "cut" in note and not leaks(hint, HIDDEN, PROBLEM)

    always = leaky_model(["\\boxed{5}"])
    hint, note = next_hint(PROBLEM, 3, [], HIDDEN, always)
    assert hint == FALLBACKS[3] and "ladder's own" in note


def test_the_ladder_stops_at_its_last_rung_and_cuts_sentence_by_sentence():
    model = leaky_model(["A similar one: 2y + 1 = 9 gives 2y = 8."])
    assert next_hint(PROBLEM, 9, [], HIDDEN, model)[0].startswith("A similar one")
    assert RUNGS[3][1] in model.asked[0][0]["content"]
    assert cut_leaks("First subtract 7. You get 15. Then x is 5!", HIDDEN, PROBLEM) == "First subtract 7. You get 15."


@pytest.mark.slow
def test_three_rungs_from_the_embedded_model_without_the_answer(data_root, empty_model_cache):
    import app
    from trainer.models import EMBEDDED
    from tutor.hints import model_generate

    turns = [{"role": "user", "content": PROBLEM}, {"role": "assistant", "content": "So x = \\boxed{5}."}]
    shown, ladder = app.give_hint(turns, {}, {}, EMBEDDED)  # the app's way, rung 1
    assert shown.startswith(f"**Hint 1, {RUNGS[0][0]}:**") and len(ladder["hints"]) == 1
    short = model_generate(EMBEDDED, max_new_tokens=16)  # rungs 2 and 3 shorter: a slow CPU
    hints = ladder["hints"]
    for rung in (1, 2):
        hints.append(next_hint(PROBLEM, rung, hints, ["5"], short)[0])
    assert len(hints) == 3 and all(hints) and not any(leaks(hint, ["5"], PROBLEM) for hint in hints)
    words, sampled = app.verify_by_sampling(turns, {}, EMBEDDED, 0.7, 0.9, 16, "")
    assert "3 samples: fewer on a CPU" in words and (words.startswith("✅") == (PROBLEM in sampled))
