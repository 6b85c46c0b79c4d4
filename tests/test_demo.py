"""mvaema-demo: the running page answered over HTTP by a real Gradio client, and in a headless browser."""

import os
import socket
import time
from pathlib import Path

import pytest
from inference_fixtures import CATEGORIES, save_tiny_model, sixteen_bit_tiff, truncated_jpeg

from dataset_builder.images import open_micrograph
from inference import demo as demo_module
from inference.assistant import MicrographAssistant
from inference.demo import main, softmax_top
from inference.loading import ModelSource

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
QUESTION = "Describe the overall shape and morphology of the nanomaterials."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    fake = folder / "fake.jpg"
    fake.write_text("a text file named like a JPEG")
    return {
        "tiff": sixteen_bit_tiff(folder / "deep.tif"),
        "fake": fake,
        "truncated": truncated_jpeg(folder / "cut.jpg"),
        "model": save_tiny_model(folder / "model"),
    }


@pytest.fixture(scope="module")
def assistant(files) -> MicrographAssistant:
    return MicrographAssistant.load(ModelSource(str(files["model"])))


@pytest.fixture(scope="module")
def server_url(assistant):
    """The demo served on 127.0.0.1 in a background thread of this process."""
    pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    demo = demo_module.build_demo(assistant)
    port = free_port()
    demo_module.launch_demo(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(server_url):
    gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")
    return gradio_client.Client(server_url, verbose=False)


def test_the_page_offers_exactly_the_two_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/answer", "/classify"}


def test_answer_endpoint_answers_a_sixteen_bit_tiff_like_the_model(client, assistant, files):
    from gradio_client import handle_file

    image = open_micrograph(files["tiff"])
    answer, caption = client.predict(handle_file(files["tiff"]), QUESTION, None, True, api_name="/answer")
    own = assistant.own_captions(assistant.rank_categories([image]))[0]
    assert answer == assistant.answer([image], [QUESTION], [own])[0] and answer
    assert caption == f"{own} (the model's top category)"
    bare, caption = client.predict(handle_file(files["tiff"]), QUESTION, None, False, api_name="/answer")
    assert bare == assistant.answer([image], [QUESTION], [None])[0] and caption == "(none)"
    with_caption, caption = client.predict(handle_file(files["tiff"]), QUESTION, "This image depicts nanowires.",
                                           True, api_name="/answer")
    assert with_caption == assistant.answer([image], [QUESTION], ["This image depicts nanowires."])[0]
    assert caption == "This image depicts nanowires."


def test_classify_endpoint_gives_five_categories_best_first(client, assistant, files):
    from gradio_client import handle_file

    result = client.predict(handle_file(files["tiff"]), api_name="/classify")
    confidences = [entry["confidence"] for entry in result["confidences"]]
    labels = [entry["label"] for entry in result["confidences"]]
    ranking = assistant.rank_categories([open_micrograph(files["tiff"])])[0]
    assert labels == [entry["label"] for entry in ranking] and set(labels) <= set(CATEGORIES)
    assert result["label"] == labels[0] and len(labels) == 5
    assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 1 + 1e-9


@pytest.mark.parametrize(("name", "reason"), [("fake", "not an image PIL can identify"), ("truncated", "truncated")])
def test_a_bad_upload_gets_a_message_not_a_traceback(client, files, name, reason):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    for arguments, endpoint in [((QUESTION, None, True), "/answer"), ((), "/classify")]:
        with pytest.raises(AppError) as failure:
            client.predict(handle_file(files[name]), *arguments, api_name=endpoint)
        message = str(failure.value)
        assert message.startswith(f"{files[name].name}: ") and reason in message
        assert "Upload a micrograph image" in message and "Traceback" not in message


def test_an_empty_question_is_asked_for(client, files):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Pick a question from the list or type one"):
        client.predict(handle_file(files["tiff"]), "  ", None, True, api_name="/answer")


def test_an_upload_over_the_size_limit_is_refused_and_not_kept(client, tmp_path):
    from gradio_client import handle_file

    uploads = Path(demo_module.upload_folder())
    before = {path for path in uploads.rglob("*") if path.is_file()}
    too_large = tmp_path / "huge.tif"
    with too_large.open("wb") as handle:  # sparse: no disk or memory spent on the test's side
        handle.truncate(demo_module.MAX_UPLOAD_BYTES + 1)
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(too_large), QUESTION, None, True, api_name="/answer")
    kept = {path for path in uploads.rglob("*") if path.is_file()} - before
    assert sum(path.stat().st_size for path in kept) == 0, "part of the refused upload was kept"


def stored_bytes(folder: Path) -> int:
    """What uploads occupy (Gradio may leave an empty temporary file behind, which costs nothing)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_uploads_are_deleted_once_their_lifetime_is_over(assistant, files, tmp_path, monkeypatch):
    """Three 200 MB uploads once stayed in Gradio's temporary folder for good; now each goes after its lifetime."""
    gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    demo = demo_module.build_demo(assistant, upload_lifetime_s=1)
    port = free_port()
    demo_module.launch_demo(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert client.predict(gradio_client.handle_file(files["tiff"]), QUESTION, None, True, api_name="/answer")
        assert stored_bytes(tmp_path / "uploads") > 0, "the upload was never stored"
        deadline = time.monotonic() + 15
        while stored_bytes(tmp_path / "uploads") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert stored_bytes(tmp_path / "uploads") == 0, "the upload was kept"
    finally:
        demo.close()


def test_softmax_top_keeps_the_order_and_the_best_five():
    scores = {"a": -1.0, "b": 3.0, "c": 0.5, "d": 0.0, "e": 2.0, "f": -4.0}
    top = softmax_top(scores)
    assert list(top) == ["b", "e", "c", "d", "a"]
    assert sum(top.values()) < 1 and top["b"] == pytest.approx(1 / sum(2.718281828 ** (s - 3) for s in scores.values()))
    sharper = softmax_top(scores, temperature=0.1)
    assert list(sharper) == list(top) and sharper["b"] > top["b"]
    assert sharper["b"] == pytest.approx(1 / sum(2.718281828 ** ((s - 3) / 0.1) for s in scores.values()))


def test_demo_without_gradio_says_how_to_install_it(monkeypatch):
    def no_gradio(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(demo_module.importlib, "import_module", no_gradio)
    with pytest.raises(SystemExit, match=r"the web demo needs Gradio; install it with: pip install 'mvaema\[demo\]'"):
        main(["--model", "lab/mvaema"])


def test_demo_refuses_unpinned_remote_code(capsys):
    pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    assert main(["--model", "lab/mvaema", "--trust-remote-code", "--revision", "main"]) == 2
    assert "--revision main: with --trust-remote-code a Hub model must be pinned" in capsys.readouterr().err


@pytest.mark.slow
def test_a_headless_browser_uploads_asks_and_reads_the_answer(server_url, assistant, files, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    default_question = demo_module.QUESTION_CHOICES[0][1]  # what the page's question list starts with
    ranking = assistant.rank_categories([open_micrograph(files["tiff"])])
    own = assistant.own_captions(ranking)[0]
    expected = assistant.answer([open_micrograph(files["tiff"])], [default_question], [own])[0]
    best_category = ranking[0][0]["label"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server_url)
        page.locator("#micrograph input[type=file]").set_input_files(str(files["tiff"]))
        page.locator("#micrograph").get_by_text("deep.tif").wait_for(timeout=30_000)
        page.locator("#ask").click()
        answer = page.locator("#answer textarea")
        sync_api.expect(answer).to_have_value(expected, timeout=60_000)
        sync_api.expect(page.locator("#caption-used textarea")).to_have_value(
            f"{own} (the model's top category)", timeout=30_000)
        sync_api.expect(page.locator("#categories")).to_contain_text(best_category, timeout=30_000)
        page.screenshot(path=str(tmp_path / "answer.png"), full_page=True)

        page.locator("#micrograph button[aria-label='Clear']").first.click()
        page.locator("#micrograph input[type=file]").set_input_files(str(files["fake"]))
        page.locator("#ask").click()
        message = page.get_by_text("fake.jpg: not an image PIL can identify").first
        sync_api.expect(message).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "bad_upload.png"))
        assert "Traceback" not in page.content()
        browser.close()
