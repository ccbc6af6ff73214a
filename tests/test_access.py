"""Who may do what, against the real app with an instructor password: every public API endpoint but /chat refuses
a caller without the password; the UI-only endpoints are off the API and still check on the server; students see no
jobs; and neither a question nor a model's reply can run script in a student's page."""

import json
import uuid

import httpx
import pytest

from tests.browser import app_env, app_server, chromium
from trainer.store import write_json
from tutor.render import normalize_latex, reply_messages

PASSWORD = "teach-math-42"
HIDDEN_JOB = "20250101-120000-job-ab12"
HIDDEN_NAME = "hidden-from-students"
REPLY = "<img src onerror=xss()>"  # what the echo model always answers: an image whose onerror would run xss()
QUESTION = "<img src onerror=xss()> and <script>xss()</script> What is 2 + 2?"
INSTRUCTOR = {"/preview_data", "/launch_job", "/job_action", "/job_action_1", "/job_action_2", "/evaluate",
              "/evaluation", "/cancel_evaluation", "/publish_jobs", "/publish_card", "/publish_merge", "/publish_push"}
UI_ONLY = {"/respond", "/refresh_jobs", "/picked_view", "/check_answer", "/preset_values", "/new_practice"}


def echo_model(folder, tokenizer_dir, reply: str) -> None:
    """A 1-layer Llama that answers `reply` to any question, whatever the sampling: every layer adds nothing, so the
    logits depend on the current token alone, and each token of the reply points at the next, then at the end."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "?"}], tokenize=False,
                                           add_generation_prompt=True)
    start = tokenizer(prompt, add_special_tokens=False)["input_ids"][-1]  # "\n" after "assistant"
    chain = [start, *tokenizer(reply, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain), "each token of the reply must be a different one"
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for norm in [model.model.norm, *[m for layer in model.model.layers
                                         for m in (layer.input_layernorm, layer.post_attention_layernorm)]]:
            norm.weight.fill_(1.0)
        for i, (token, following) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[token, i] = 1.0
            model.lm_head.weight[following, i] = 50.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / "merge.json", {"job_id": "none", "base_model": "echo"})


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedded_dir):
    base = tmp_path_factory.mktemp("access")
    root = base / "studio"
    (root / "models" / "embedded").mkdir(parents=True)
    (root / "models" / "embedded" / embedded_dir.name).symlink_to(embedded_dir)
    echo_model(root / "models" / "merged" / "echo", embedded_dir, REPLY)
    job = root / "jobs" / HIDDEN_JOB
    job.mkdir(parents=True)
    write_json(job / "status.json", {"id": HIDDEN_JOB, "name": HIDDEN_NAME, "state": "failed",
                                     "created": "2025-01-01T12:00:00+00:00", "reason": "a reason", "step": 3})
    (job / "train.log").write_text(f"the log of {HIDDEN_NAME}\n")
    env = app_env(MATH_STUDIO_HOME=str(root), INSTRUCTOR_PASSWORD=PASSWORD)
    with app_server(env, base / "app.log") as url:
        yield url


def call_by_index(url: str, api_name: str, data: list) -> dict:
    """Call an event handler as the page does (by its index, through the queue), even one kept off the API.
    Returns the final message: {"success": ..., "output": {"data": [...]} or {"error": ...}}."""
    config = httpx.get(f"{url}/config", timeout=60).json()
    (index,) = [d["id"] for d in config["dependencies"] if d.get("api_name") == api_name.strip("/")]
    session = uuid.uuid4().hex
    joined = httpx.post(f"{url}/gradio_api/queue/join", timeout=60,
                        json={"data": data, "fn_index": index, "session_hash": session, "event_data": None,
                              "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=120) as events:
        for line in events.iter_lines():
            message = json.loads(line[len("data:"):]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                return message
    raise AssertionError("the event never completed")


@pytest.mark.slow
def test_every_public_endpoint_but_chat_needs_the_instructor_password(server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == INSTRUCTOR | {"/chat", "/find_mistake"}  # a new public endpoint: add it here, and check it
    assert not UI_ONLY & set(endpoints)
    for name, endpoint in endpoints.items():
        if name in ("/chat", "/find_mistake"):  # the students' own
            continue
        first, *rest = endpoint["parameters"]
        assert first["label"] == "Instructor password", name
        others = [p["parameter_default"] if p["parameter_has_default"] else None for p in rest]
        for wrong in ["", "not-the-password", PASSWORD.upper()]:
            with pytest.raises(AppError, match="Instructor login needed"):
                client.predict(wrong, *others, api_name=name)
    assert client.predict(PASSWORD, None, api_name="/publish_jobs")["choices"] == []  # the password opens it
    # A student may chat, through the API too, with what the picker lists.
    assert client.predict("What is 2 + 2?", [], "merged:echo", api_name="/chat") == REPLY
    with pytest.raises(AppError, match="not one of this class's models"):
        client.predict("What is 2 + 2?", [], "HuggingFaceTB/SmolLM2-1.7B-Instruct", api_name="/chat")


@pytest.mark.slow
def test_students_see_no_jobs_even_calling_the_hidden_endpoints(server):
    page_config = httpx.get(f"{server}/config", timeout=60).text
    assert HIDDEN_NAME not in page_config and HIDDEN_JOB not in page_config  # not in the page as first sent
    student = call_by_index(server, "/refresh_jobs", ["", None])
    assert student["success"] and "Instructor login needed" in json.dumps(student["output"])
    assert HIDDEN_NAME not in json.dumps(student)
    for password in ["", "wrong"]:  # naming the job: refused, by Gradio (not a listed choice) or by the handler
        view = call_by_index(server, "/picked_view", [password, HIDDEN_JOB])
        assert HIDDEN_NAME not in json.dumps(view) and "the log of" not in json.dumps(view)
    instructor = call_by_index(server, "/refresh_jobs", [PASSWORD, None])
    assert instructor["success"] and HIDDEN_NAME in json.dumps(instructor["output"])  # the instructor sees it


def test_questions_and_replies_cannot_carry_markup():
    for text in [QUESTION, REPLY, "<script>xss()</script>", "<think><img src=x onerror=xss()></think><b onclick=x>",
                 "$<img src=x onerror=xss()>$ and \\(<script>\\)", "```\n<script>xss()</script>\n```"]:
        shown = [normalize_latex(text)] + [m["content"] for m in reply_messages(text)]
        assert not [s for s in shown if "<" in s or ">" in s], shown


@pytest.mark.slow
@pytest.mark.browser
def test_no_script_runs_from_a_question_or_a_reply(server):
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.new_page()
        page.add_init_script("window.__xss = 0; window.xss = () => { window.__xss += 1; };")
        page.goto(server)
        page.get_by_label("Model").first.click()
        page.get_by_role("option", name="echo", exact=False).click()
        page.locator("#tutor-input textarea").fill(QUESTION)
        page.get_by_role("button", name="Send").click()
        bot = page.locator("#tutor-chat [data-testid='bot']").first
        expect(bot).to_contain_text(REPLY, timeout=120_000)  # the reply, shown as text
        expect(page.locator("#tutor-chat [data-testid='user']").first).to_contain_text("<script>xss()</script>")
        assert page.locator("#tutor-chat img[onerror], #tutor-chat script").count() == 0
        assert page.evaluate("window.__xss") == 0  # nothing ran

        page.get_by_role("tab", name="Train").click()
        expect(page.locator("#job-facts")).to_contain_text("Instructor login needed", timeout=60_000)  # ticks ran
        assert HIDDEN_NAME not in page.content()
        page.locator("#instructor-password input").fill(PASSWORD)
        expect(page.locator("body")).to_contain_text(HIDDEN_NAME, timeout=60_000)  # in the jobs table

        page.evaluate(f"document.body.insertAdjacentHTML('beforeend', {json.dumps(REPLY)})")  # the detector works:
        page.wait_for_function("window.__xss > 0", timeout=30_000)  # the same markup, injected, does run
