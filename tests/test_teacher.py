"""The teacher client end to end: the real `openai` client over real HTTP against a loopback server
that injects faults (tests/openai_test_server.py). Images are tiny JPEGs made in tmp_path."""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import openai
import pytest
from openai_test_server import CHAT_FAULTS, KEY_ECHOES, OpenAITestServer, expected_answer, image_digest
from PIL import Image

from dataset_builder import teacher
from dataset_builder.teacher import make_client
from dataset_builder.question_families import QUESTION_FAMILIES, family_by_key
from dataset_builder.teacher.cli import (
    EXIT_BUDGET,
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PENDING,
    main,
)
from dataset_builder.teacher.pricing import worst_case_usd
from dataset_builder.teacher.retry import RetryAfterTooLong, call_with_retries
from dataset_builder.teacher_cache import STATUS_OK, TeacherCache, image_content_id

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-test-DISTINCTIVE-7f3a9c51e2"
MODEL = "test-teacher"
LIMIT_FAULTS = ("bad_request", "trickle", "endless", "leak_key")  # not retried, or checked by tests of their own


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("MVAEMA_TEACHER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server():
    with OpenAITestServer() as running:
        yield running


def make_images(root: Path, per_category: int = 2, categories=("Nanowires", "Porous_Sponge"), size=(64, 48)) -> Path:
    for category_number, category in enumerate(categories):
        (root / category).mkdir(parents=True, exist_ok=True)
        for number in range(per_category):
            color = (40 * number, 90 + 60 * category_number, 200 - 30 * number)
            Image.new("RGB", size, color).save(root / category / f"L{number}_{category}.jpg", quality=95)
    return root


def teacher_args(command: str, server: OpenAITestServer, images: Path, cache: Path, *extra: str) -> list[str]:
    return [
        command,
        "--images", str(images),
        "--cache", str(cache),
        "--base-url", server.base_url,
        "--model", MODEL,
        "--input-usd-per-1m", "1",
        "--output-usd-per-1m", "4",
        "--backoff-base", "0.01",
        "--backoff-max", "0.05",
        *extra,
    ]  # fmt: skip


def server_key(images: Path, image_path: str, family: str) -> tuple[str, str]:
    """The server's (image digest, family) for a cached record: the digest of the JPEG data URL sent."""
    data_url = teacher.encode_micrograph(images / image_path, teacher.DEFAULT_MAX_SIDE).data_url
    return image_digest(data_url), family


def assert_complete_without_duplicates(cache_path: Path, images: Path, families=QUESTION_FAMILIES) -> list:
    records = [record for record in TeacherCache(cache_path).records() if record.status == STATUS_OK]
    keys = Counter((record.image_path, record.family) for record in records)
    image_paths = {path.relative_to(images).as_posix() for path in images.rglob("*.jpg")}
    assert set(keys) == {(path, family.key) for path in image_paths for family in families}
    assert max(keys.values()) == 1, "an answer was written twice"
    for record in records:  # every answer belongs to its own image and family
        digest, family = server_key(images, record.image_path, record.family)
        fields = [teacher.answer_field(number) for number in range(1, len(record.questions) + 1)]
        assert record.answers == [expected_answer(digest, family, name) for name in fields]
        assert record.questions == list(family_by_key(record.family).questions)
        assert record.teacher == f"127.0.0.1:{MODEL}"
    return records


def test_generate_survives_every_fault(tmp_path, server, capfd):
    images, cache = make_images(tmp_path / "images"), tmp_path / "cache.jsonl"
    faults = [fault for fault in CHAT_FAULTS if fault not in LIMIT_FAULTS for _ in range(3)]
    script = faults + ["ok"] * 20
    random.Random(0).shuffle(script)
    server.script(*script)
    server.echo_key_in_errors = True
    server.slow_s = 2.5

    exit_code = main(
        ["-v", *teacher_args("generate", server, images, cache, "--concurrency", "4", "--timeout", "1.5",
                             "--max-attempts", str(len(faults) + 1))]
    )  # fmt: skip

    assert exit_code == EXIT_OK
    assert server.pending_faults == 0
    assert server.injected == Counter(faults)
    assert_complete_without_duplicates(cache, images)
    assert len(server.answered) == 4 * len(QUESTION_FAMILIES)
    assert set(server.answered.values()) == {1}, "a completed answer was requested again"
    for index, call in enumerate(server.calls):  # Retry-After honoured before the same request came back
        if call.fault in ("rate_limit", "rate_limit_ms"):
            retry = next(later for later in server.calls[index + 1 :] if later.key == call.key)
            assert retry.at - call.at >= server.retry_after_s * 0.99
    assert server.authorizations == {FAKE_KEY}
    output = capfd.readouterr()
    assert FAKE_KEY not in output.out + output.err + cache.read_text()


def test_exhausted_retries_write_a_failed_record_that_a_rerun_retries(tmp_path, server, capsys):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    server.echo_key_in_errors = True
    server.script("server_error", "rate_limit", "server_error")
    args = teacher_args("generate", server, images, cache, "--families", "basics", "--max-attempts", "3")

    assert main(args) == EXIT_FAILED
    (record,) = TeacherCache(cache).records()
    assert record.status == "failed" and record.answers == []
    assert "HTTP 500" in record.error and "attempt 3 of 3" in record.error
    assert "[OPENAI_API_KEY]" in record.error and FAKE_KEY not in cache.read_text()
    assert "Tips/L0_Tips.jpg [basics]" in capsys.readouterr().out

    assert main(args) == EXIT_OK
    latest = TeacherCache(cache).latest_by_key()
    assert [record.status for record in latest.values()] == [STATUS_OK]
    assert sum(server.answered.values()) == 1


def test_a_rejected_request_is_not_retried(tmp_path, server):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    server.script("bad_request")

    assert main(teacher_args("generate", server, images, cache, "--families", "basics")) == EXIT_FAILED
    (record,) = TeacherCache(cache).records()
    assert "HTTP 400 invalid_image" in record.error and "not retryable" in record.error
    assert len(server.calls) == 1


def test_a_wrong_key_stops_the_run_without_leaking_the_key(tmp_path, capfd):
    images, cache = make_images(tmp_path / "images"), tmp_path / "cache.jsonl"
    with OpenAITestServer(required_key="sk-the-right-one") as server:  # echoes the wrong key, as OpenAI half does
        exit_code = main(teacher_args("generate", server, images, cache))
    assert exit_code == EXIT_FATAL
    output = capfd.readouterr()
    assert "HTTP 401 invalid_api_key" in output.err and "[OPENAI_API_KEY]" in output.err
    assert FAKE_KEY not in output.out + output.err
    assert TeacherCache(cache).records() == []
    assert len(server.calls) == 0  # 401 answered before any chat call was counted


def test_kill_minus_nine_and_resume(tmp_path):
    images, cache = make_images(tmp_path / "images", per_category=2), tmp_path / "cache.jsonl"
    concurrency = 2
    with OpenAITestServer(latency_s=0.15) as server:
        args = teacher_args("generate", server, images, cache, "--concurrency", str(concurrency), "--no-progress")
        command = [sys.executable, "-m", "dataset_builder.teacher.cli", *args]
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not cache.exists() or cache.read_text().count("\n") < 6:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run never got going"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
        done_before_kill = {(r.image_path, r.family) for r in TeacherCache(cache).records() if r.status == STATUS_OK}
        with open(cache, "ab") as handle:  # as if the kill had landed in the middle of a write
            handle.write(b'{"image_id": "cut off by the kill')

        server.latency_s = 0.0
        assert main(teacher_args("generate", server, images, cache, "--no-progress")) == EXIT_OK

    assert 6 <= len(done_before_kill) < 4 * len(QUESTION_FAMILIES)
    assert_complete_without_duplicates(cache, images)
    calls = Counter(call.key for call in server.calls)
    assert all(calls[server_key(images, *done)] == 1 for done in done_before_kill), "a saved answer was asked again"
    asked_twice = [key for key, count in calls.items() if count > 1]
    assert len(asked_twice) <= concurrency  # at most the requests in flight at the kill


def test_a_wrongly_typed_cache_line_is_named_and_the_run_goes_on(tmp_path, server, caplog):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    args = teacher_args("generate", server, images, cache, "--families", "basics")
    assert main(args) == EXIT_OK
    answered = json.loads(cache.read_text())
    with open(cache, "a") as handle:  # a hand-edited or foreign line of each wrong kind
        handle.write(json.dumps({**answered, "family": ["basics"]}) + "\n")
        handle.write(json.dumps({**answered, "answers": [5, 6]}) + "\n")

    assert main(args) == EXIT_OK
    assert f"{cache} line 2 ignored" in caplog.text and f"{cache} line 3 ignored" in caplog.text
    assert len(server.calls) == 1  # the good line still counts: nothing asked twice


def test_estimate_counts_tokens_and_cost(tmp_path, capsys):
    images = tmp_path / "images"
    for category, size in (("Fibres", (1024, 768)), ("Particles", (2048, 4096)), ("Tips", (64, 48))):
        (images / category).mkdir(parents=True)
        Image.new("RGB", size, (120, 120, 120)).save(images / category / "a.jpg")
    families = "basics,size_and_distribution"
    prices = ["--model", MODEL, "--input-usd-per-1m", "3", "--output-usd-per-1m", "12", "--families", families]

    def estimate(*extra: str) -> dict:
        assert main(["estimate", "--images", str(images), "--json", *prices, *extra]) == EXIT_OK
        return json.loads(capsys.readouterr().out)

    full = estimate("--max-side", "4096")
    assert full["requests"] == 6 and full["images"] == 3
    assert full["image_tokens"] == 2 * (765 + 1105 + 255)  # OpenAI's published examples: 765 and 1105 tokens
    assert 6 * 200 < full["text_tokens"] < 6 * 600
    assert full["expected_output_tokens"] == 3 * (2 + 3) * (70 + teacher.JSON_TOKENS_PER_ANSWER)
    assert full["max_output_tokens"] == 6 * 3500
    expected_usd = (full["input_tokens"] * 3 + full["expected_output_tokens"] * 12) / 1e6
    assert full["expected_usd"] == pytest.approx(expected_usd)
    assert full["worst_case_usd"] == pytest.approx((full["input_tokens"] * 3 + 6 * 3500 * 12) / 1e6)
    assert full["batch_expected_usd"] == pytest.approx(expected_usd / 2)

    assert estimate()["image_tokens"] == 2 * (765 + 425 + 255)  # sent at 1024 px: 2048x4096 becomes 512x1024
    low_detail = estimate("--detail", "low")
    assert low_detail["image_tokens"] == 6 * 85 and low_detail["max_side"] == 512  # low detail sees 512 px at most

    cache = tmp_path / "cache.jsonl"
    image_id = image_content_id(images / "Tips" / "a.jpg")
    job = teacher.TeacherJob(
        teacher.TeacherImage(images / "Tips" / "a.jpg", "Tips/a.jpg", "Tips", image_id), family_by_key("basics")
    )
    TeacherCache(cache).append(job.record(f"openai:{MODEL}", answers=["a", "b"]))
    assert estimate("--cache", str(cache))["requests"] == 5
    assert estimate("--cache", str(cache))["cached_requests"] == 1


def test_max_usd_stops_before_the_budget_could_be_exceeded(tmp_path):
    images, cache = make_images(tmp_path / "images"), tmp_path / "cache.jsonl"
    # Each answer costs 50 output tokens x $10/1M = $0.0005; the worst case is 3,500 tokens = $0.035.
    # Reserving the worst case, $0.0402 allows 11 answers: after them $0.0055 + $0.035 no longer fits.
    with OpenAITestServer(completion_tokens=50) as server:
        args = teacher_args("generate", server, images, cache, "--concurrency", "4")
        args[args.index("--input-usd-per-1m") + 1], args[args.index("--output-usd-per-1m") + 1] = "0", "10"
        assert main([*args, "--max-usd", "0.0402"]) == EXIT_BUDGET
        assert len(server.calls) == 11
        assert len(TeacherCache(cache).records()) == 11
        assert sum(record.cost_usd for record in TeacherCache(cache).records()) == pytest.approx(0.0055)

        assert main([*args, "--max-usd", "1"]) == EXIT_OK
        assert len(server.calls) == 4 * len(QUESTION_FAMILIES)


def test_bad_images_are_skipped_and_named(tmp_path, server, capsys):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Powder",)), tmp_path / "cache.jsonl"
    (images / "Powder" / "empty.jpg").write_bytes(b"")
    (images / "Powder" / "notes.jpg").write_text("not an image")
    jpeg = (images / "Powder" / "L0_Powder.jpg").read_bytes()
    (images / "Powder" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])

    assert (
        main(teacher_args("generate", server, images, cache, "--families", "basics,surface_characteristics"))
        == EXIT_OK
    )
    output = capsys.readouterr().out
    assert "skipped images: 3" in output
    assert "Powder/empty.jpg: empty file (0 bytes)" in output
    assert "Powder/notes.jpg: not an image PIL can identify" in output
    assert "Powder/truncated.jpg: corrupt or truncated image" in output
    assert {record.image_path for record in TeacherCache(cache).records()} == {"Powder/L0_Powder.jpg"}


def test_a_file_name_that_is_not_utf8_is_named_and_never_paid_for(tmp_path, server, capsys):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    latin1_name = os.fsencode(images / "Tips") + b"/Probe_\xfc.jpg"  # a name written on a Latin-1 system
    with open(latin1_name, "wb") as handle:
        Image.new("RGB", (64, 48), (1, 2, 3)).save(handle, format="JPEG")
    args = teacher_args("generate", server, images, cache, "--families", "basics")

    for _ in range(2):  # a rerun must not pay again either
        assert main(args) == EXIT_OK
        assert "Tips/Probe_\\xfc.jpg: the file name is not valid UTF-8" in capsys.readouterr().out
    assert len(server.calls) == 1  # only the well-named image was asked about, once
    assert [record.image_path for record in TeacherCache(cache).records()] == ["Tips/L0_Tips.jpg"]
    assert len(teacher.SpendLedger.beside(cache).path.read_text().splitlines()) == 1


def test_batch_round_trip(tmp_path, capsys):
    images, cache, batch_dir = (
        make_images(tmp_path / "images", per_category=2),
        tmp_path / "cache.jsonl",
        tmp_path / "batches",
    )
    families = (
        "basics,morphology_and_structure,size_and_distribution,functional_features"  # 4 images x 4 = 16 requests
    )
    with OpenAITestServer(batch_polls_until_done=3, echo_key_in_errors=True) as server:
        server.script_batch_lines("error", "refusal", "ok", "ok", "ok", "schema_violation", *["ok"] * 7, "missing")
        submit = teacher_args(
            "batch-submit", server, images, cache, "--families", families, "--batch-dir", str(batch_dir)
        )
        assert main([*submit, "--max-requests-per-batch", "7"]) == EXIT_OK
        state = teacher.BatchState.load(batch_dir)
        assert [part.requests for part in state.parts] == [7, 7, 2]
        assert len(server.batches) == 3
        first_line = json.loads(teacher.batch_part_file(batch_dir, 0, "requests").read_text().splitlines()[0])
        assert first_line["method"] == "POST" and first_line["url"] == "/v1/chat/completions"
        assert first_line["body"]["model"] == MODEL and first_line["custom_id"].endswith(":basics")

        assert main(["batch-status", "--batch-dir", str(batch_dir)]) == EXIT_PENDING
        assert "in_progress" in capsys.readouterr().out
        assert main(["batch-collect", "--batch-dir", str(batch_dir)]) == EXIT_PENDING
        assert (
            main(["batch-collect", "--batch-dir", str(batch_dir), "--wait", "--poll-interval", "0.01"]) == EXIT_FAILED
        )
        failed = [record for record in TeacherCache(cache).records() if record.status == "failed"]
        assert len(failed) == 4
        assert {record.error.split(":")[0] for record in failed} >= {"HTTP 500", "the teacher refused"}
        assert any("ended 'expired'" in record.error for record in failed)

        assert main(submit) == EXIT_OK  # resubmits exactly the four failed requests
        assert [part.requests for part in teacher.BatchState.load(batch_dir).parts] == [7, 7, 2, 4]
        assert main(["batch-collect", "--batch-dir", str(batch_dir), "--wait", "--poll-interval", "0.01"]) == EXIT_OK

    selected = [family_by_key(key) for key in families.split(",")]
    records = assert_complete_without_duplicates(cache, images, selected)
    assert all(record.cost_usd == pytest.approx((1000 * 1 + 100 * 4) / 1e6 / 2) for record in records)
    assert sorted(server.batch_lines.values()) == [1] * 12 + [2] * 4
    assert server.injected == Counter(batch_error=1, batch_refusal=1, batch_schema_violation=1, batch_missing=1)
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or FAKE_KEY.encode() not in path.read_bytes(), path


def test_batch_submit_adopts_a_batch_whose_reply_was_lost_and_splits_by_size(tmp_path, server):
    images, cache, batch_dir = (
        make_images(tmp_path / "images", per_category=2),
        tmp_path / "cache.jsonl",
        tmp_path / "batches",
    )
    server.drop_next_batch_create_response = True
    submit = teacher_args("batch-submit", server, images, cache, "--families", "basics", "--batch-dir", str(batch_dir))

    assert main([*submit, "--max-batch-mb", "0.006"]) == EXIT_OK
    state = teacher.BatchState.load(batch_dir)
    assert sum(part.requests for part in state.parts) == 4 and len(state.parts) >= 2
    assert all(
        teacher.batch_part_file(batch_dir, part.index, "requests").stat().st_size <= 6000 for part in state.parts
    )
    assert sorted(part.batch_id for part in state.parts) == sorted(server.batches)  # the lost one adopted, not re-sent
    assert main(submit) == EXIT_OK
    assert len(server.batches) == len(state.parts)  # nothing new to send


def test_retry_after_header_forms():
    in_two_seconds = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    assert teacher.retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == pytest.approx(0.25)
    assert teacher.retry_after_seconds({"retry-after": "1.5"}) == pytest.approx(1.5)
    assert 0.5 < teacher.retry_after_seconds({"retry-after": in_two_seconds}) <= 2.0
    assert teacher.retry_after_seconds({"retry-after": "soon"}) is None
    assert teacher.retry_after_seconds({}) is None


def test_prices_resolve_by_model_and_unknown_models_need_prices():
    assert teacher.resolve_price("gpt-4.1-2025-04-14") == teacher.KNOWN_PRICES["gpt-4.1"]
    assert teacher.resolve_price("gpt-4o", output_usd_per_1m=1).output_usd_per_1m == 1
    with pytest.raises(ValueError, match="--input-usd-per-1m"):
        teacher.resolve_price("gpt-4.1-mini")
    assert teacher.resolve_price("qwen2.5-vl", 0, 0).cost_usd(teacher.Usage(10**6, 10**6)) == 0


# ------------------------------------------------------------------------------------------------
# Keys and URLs: a key goes only where it is safe, credentials never reach disk or logs
# ------------------------------------------------------------------------------------------------


def test_the_key_is_not_sent_in_clear_text_to_another_machine(tmp_path, capfd):
    images, cache = make_images(tmp_path / "images", per_category=1), tmp_path / "cache.jsonl"
    args = ["generate", "--images", str(images), "--cache", str(cache), "--base-url", "http://10.255.255.1:9/v1",
            "--model", MODEL, "--input-usd-per-1m", "0", "--output-usd-per-1m", "0",
            "--timeout", "1", "--max-attempts", "1"]  # fmt: skip

    assert main(args) == EXIT_CONFIG
    error = capfd.readouterr().err
    assert "$OPENAI_API_KEY would travel unencrypted" in error and "--allow-insecure-key" in error
    assert "http://10.255.255.1:9/v1" in error and FAKE_KEY not in error
    assert not cache.exists()
    assert make_client("http://10.255.255.1:9/v1", allow_insecure_key=True).api_key == FAKE_KEY  # the opt-in
    assert make_client("https://llm.lab.example/v1").api_key == FAKE_KEY  # HTTPS: fine
    assert make_client("http://localhost:8000/v1").api_key == FAKE_KEY  # this machine: fine


def test_an_encoded_key_is_redacted_and_an_answer_holding_the_key_is_not_stored(tmp_path, server, capfd):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    args = teacher_args("generate", server, images, cache, "--families", "basics", "--max-attempts", "1")
    server.echo_key_in_errors, server.key_echoes = True, tuple(KEY_ECHOES)

    server.script("server_error")
    assert main(args) == EXIT_FAILED
    assert TeacherCache(cache).records()[-1].error.count("[OPENAI_API_KEY]") == len(KEY_ECHOES)
    server.script("leak_key")
    assert main(args) == EXIT_FAILED
    assert "the answer contains the API key ($OPENAI_API_KEY)" in TeacherCache(cache).records()[-1].error

    output = capfd.readouterr()
    written = output.out + output.err + cache.read_text()
    for name, echo in KEY_ECHOES.items():
        assert echo(FAKE_KEY) not in written, f"the key, {name}, was printed or stored"
    assert main(args) == EXIT_OK


def test_a_self_hosted_server_gets_its_own_key_variable(tmp_path, server, monkeypatch, capfd):
    monkeypatch.setenv("MVAEMA_TEACHER_API_KEY", "sk-lab-server-5b1e")
    server.echo_key_in_errors = True
    server.script("server_error")
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"

    assert main(teacher_args("generate", server, images, cache, "--families", "basics")) == EXIT_OK
    assert server.authorizations == {"sk-lab-server-5b1e"}  # OpenAI's key stayed home
    output = capfd.readouterr()
    assert "sk-lab-server-5b1e" not in output.out + output.err + cache.read_text()
    assert make_client("https://api.openai.com/v1").api_key == FAKE_KEY  # OpenAI still gets OPENAI_API_KEY
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("MVAEMA_TEACHER_API_KEY")
    assert make_client("http://10.255.255.1:9/v1").api_key == "no-key-needed"  # no key: nothing to protect


def test_credentials_in_urls_never_reach_state_files_or_logs(tmp_path, server, capsys):
    images, cache, batch_dir = make_images(tmp_path / "images"), tmp_path / "cache.jsonl", tmp_path / "batches"
    secret_url = server.base_url + "?api-version=2024-06&token=pa55-w0rd"
    submit = teacher_args("batch-submit", server, images, cache, "--families", "basics", "--batch-dir", str(batch_dir))
    submit[submit.index("--base-url") + 1] = secret_url

    assert main(submit) == EXIT_OK
    assert teacher.BatchState.load(batch_dir).base_url == server.base_url + "?api-version=2024-06"
    assert main(["batch-collect", "--batch-dir", str(batch_dir), "--wait", "--poll-interval", "0.01",
                 "--base-url", secret_url]) == EXIT_OK  # fmt: skip
    assert main(["batch-status", "--batch-dir", str(batch_dir), "--base-url", "http://127.0.0.1:1/v1"]) == EXIT_CONFIG
    assert "is not the server the batches" in capsys.readouterr().err
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or b"pa55-w0rd" not in path.read_bytes(), path

    stored = teacher.public_url("https://u:p@llm.lab.example:8443/v1?api-version=2024-06&api-key=s3cret&sig=x")
    assert stored == "https://llm.lab.example:8443/v1?api-version=2024-06"
    logged = teacher.redact_api_key("connection to http://u:p@host.example/v1?access_token=s3cret failed")
    assert logged == "connection to http://host.example/v1 failed"


def test_a_base_url_query_is_sent_with_every_request(tmp_path, server):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    args = teacher_args("generate", server, images, cache, "--families", "basics")
    args[args.index("--base-url") + 1] = server.base_url + "?api-version=2024-06&api-key=s3cret"

    assert main(args) == EXIT_OK
    assert server.request_targets == ["/v1/chat/completions?api-version=2024-06&api-key=s3cret"]
    assert server.authorizations == {FAKE_KEY}
    assert b"s3cret" not in cache.read_bytes()


def test_a_base_url_with_a_user_and_password_is_refused_before_anything_is_sent(tmp_path, server, capfd):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    args = teacher_args("generate", server, images, cache, "--families", "basics")
    args[args.index("--base-url") + 1] = server.base_url.replace("http://", "http://labuser:pa55-w0rd@")

    assert main(args) == EXIT_CONFIG
    error = capfd.readouterr().err
    assert f"--base-url {server.base_url} carries a user name and password" in error and "pa55-w0rd" not in error
    assert server.request_targets == [] and not cache.exists()


# ------------------------------------------------------------------------------------------------
# Money: unknown costs count at their worst, the cap covers the cache, waits are capped
# ------------------------------------------------------------------------------------------------


def test_a_reply_without_usage_is_counted_at_its_worst_case(tmp_path, capsys):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    family = family_by_key("basics")
    with OpenAITestServer(report_usage=False) as server:
        server.script("malformed_body")  # a 200 whose body is not JSON, then an answer without usage
        settings = teacher.TeacherSettings(model=MODEL, base_url=server.base_url)
        worst = worst_case_usd(settings, teacher.ModelPrice(1, 4), family, "Tips", (64, 48))
        assert main(teacher_args("generate", server, images, cache, "--families", "basics")) == EXIT_OK

    (record,) = TeacherCache(cache).records()
    assert record.status == STATUS_OK and record.cost_usd == pytest.approx(2 * worst) and worst > 0.01
    assert teacher.SpendLedger.beside(cache).total_usd() == pytest.approx(2 * worst)
    assert f"up to ${2 * worst:.4f} for requests whose cost the server did not report" in capsys.readouterr().out


def test_max_usd_caps_the_cache_total_across_runs(tmp_path, capsys):
    images, cache = make_images(tmp_path / "images"), tmp_path / "cache.jsonl"
    with OpenAITestServer(completion_tokens=50) as server:  # as in the test above: 11 answers fit in $0.0402
        args = teacher_args("generate", server, images, cache, "--concurrency", "4", "--max-usd", "0.0402")
        args[args.index("--input-usd-per-1m") + 1], args[args.index("--output-usd-per-1m") + 1] = "0", "10"
        assert main(args) == EXIT_BUDGET
        assert len(server.calls) == 11
        assert main(args) == EXIT_BUDGET  # the second run sees the first one's spend in the ledger
        assert len(server.calls) == 11
    assert teacher.SpendLedger.beside(cache).total_usd() == pytest.approx(0.0055)
    assert "the cache's ledger held $0.0055 from earlier runs" in capsys.readouterr().out


def run_in_background(args: list[str]) -> tuple[threading.Thread, list[int]]:
    """`main(args)` in a daemon thread, so a test can give up on a run that hangs instead of hanging itself."""
    exit_codes: list[int] = []
    run = threading.Thread(target=lambda: exit_codes.append(main(args)), daemon=True)
    run.start()
    return run, exit_codes


def test_a_trickling_or_endless_reply_fails_the_attempt_within_its_limits(tmp_path, server):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    args = teacher_args("generate", server, images, cache, "--families", "basics", "--max-attempts", "1",
                        "--timeout", "1")  # fmt: skip
    server.trickle_s = 0.05  # every byte well within the 1 s per read; the whole reply takes about 30 s
    for fault, problem in (("trickle", "past its 1 s deadline"), ("endless", "reply exceeded the 4 MiB limit")):
        server.script(fault)
        started = time.monotonic()
        run, exit_codes = run_in_background(args)
        run.join(timeout=15)
        assert exit_codes == [EXIT_FAILED], f"the {fault} reply held the run"
        assert time.monotonic() - started < 5
        assert problem in TeacherCache(cache).records()[-1].error

    ledger = [json.loads(line) for line in teacher.SpendLedger.beside(cache).path.read_text().splitlines()]
    assert [line["confirmed"] for line in ledger] == [False, False]  # cost unknown: counted at the worst case
    assert main(args) == EXIT_OK


def test_a_retry_after_of_a_day_fails_the_attempt_instead_of_parking_the_worker(tmp_path, server):
    images, cache = make_images(tmp_path / "images", per_category=1, categories=("Tips",)), tmp_path / "cache.jsonl"
    server.retry_after_s = 86400
    server.script("rate_limit")
    exit_codes = []
    run = threading.Thread(
        target=lambda: exit_codes.append(main(teacher_args("generate", server, images, cache, "--families", "basics"))),
        daemon=True,
    )
    run.start()
    run.join(timeout=30)

    assert exit_codes == [EXIT_FAILED], "the worker waited for the server's Retry-After"
    (record,) = TeacherCache(cache).records()
    assert "asked to wait 86,400 s before retrying (Retry-After)" in record.error and "rerun" in record.error
    too_long = openai.RateLimitError(
        "rate limited",
        response=httpx.Response(429, headers={"retry-after": "86400"}, request=httpx.Request("GET", "http://x")),
        body=None,
    )

    def always_rate_limited():
        raise too_long

    with pytest.raises(RetryAfterTooLong, match="longer than the 120 s a worker waits"):
        call_with_retries(always_rate_limited, teacher.RetryPolicy())


def ctrl_c_as_in_a_terminal() -> None:
    """A child inherits an ignored or blocked SIGINT (a server or tool started earlier in the test process may have
    left either), and Python then installs no Ctrl-C handler: give the command what a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def read_stderr_until(process: subprocess.Popen, marker: bytes, timeout_s: float) -> bytes:
    """What `process` wrote to stderr up to and including the line holding `marker`."""
    seen, deadline = b"", time.monotonic() + timeout_s
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and process.poll() is None, f"never printed {marker!r}; stderr so far: {seen[-2000:]!r}"
        if select.select([process.stderr], [], [], remaining)[0]:
            seen += process.stderr.readline()
    return seen


def test_a_second_ctrl_c_stops_the_workers_at_once(tmp_path):
    images, cache = make_images(tmp_path / "images"), tmp_path / "cache.jsonl"
    with OpenAITestServer(latency_s=60) as server:
        args = teacher_args("generate", server, images, cache, "--concurrency", "2", "--no-progress")
        command = [sys.executable, "-m", "dataset_builder.teacher.cli", *args]
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   preexec_fn=ctrl_c_as_in_a_terminal)
        deadline = time.monotonic() + 60
        while len(server.calls) < 2:
            assert process.poll() is None and time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        # Two signals that arrive before Python has handled the first are one interrupt to it (the kernel and the
        # interpreter both coalesce them), so the second is sent once the run has said it heard the first.
        first_reply = read_stderr_until(process, b"Ctrl-C again", timeout_s=60)
        time.sleep(0.5)
        assert process.poll() is None, "the first Ctrl-C must wait for the answers in flight"
        process.send_signal(signal.SIGINT)
        try:
            _, error = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("a second Ctrl-C did not stop the run")
    assert process.returncode == EXIT_INTERRUPTED
    assert "stopped at once; 2 answers in flight were dropped" in (first_reply + error).decode()
    assert len(server.calls) == 2


# ------------------------------------------------------------------------------------------------
# One process per cache and per batch folder; online runs leave pending batch requests alone
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def held_by_another_process(lock_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); time.sleep(120)", str(lock_path)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == b"held\n"
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_second_process_on_one_cache_or_batch_folder_stops_before_paying(tmp_path, server, capfd):
    images, cache, batch_dir = make_images(tmp_path / "images"), tmp_path / "cache.jsonl", tmp_path / "batches"
    generate_args = teacher_args("generate", server, images, cache, "--families", "basics")
    submit_args = teacher_args("batch-submit", server, images, cache, "--families", "basics", "--batch-dir", str(batch_dir))

    with held_by_another_process(tmp_path / "cache.jsonl.lock"):
        assert main(generate_args) == EXIT_BUSY
    assert f"the teacher cache {cache} is in use by another mvaema-teacher process" in capfd.readouterr().err
    batch_dir.mkdir()
    with held_by_another_process(batch_dir / "batch-folder.lock"):
        assert main(submit_args) == EXIT_BUSY
    error = capfd.readouterr().err
    assert f"the batch folder {batch_dir} is in use" in error and str(batch_dir / "batch-folder.lock") in error
    assert server.calls == [] and server.batches == {} and not cache.exists()

    assert main(submit_args) == EXIT_OK  # the lock went with the process that held it
    with held_by_another_process(batch_dir / "batch-folder.lock"):
        assert main(["batch-status", "--batch-dir", str(batch_dir)]) == EXIT_BUSY
    with held_by_another_process(tmp_path / "cache.jsonl.lock"):
        assert main(["batch-collect", "--batch-dir", str(batch_dir), "--wait", "--poll-interval", "0.01"]) == EXIT_BUSY
    assert not cache.exists()
    assert main(["batch-collect", "--batch-dir", str(batch_dir), "--wait", "--poll-interval", "0.01"]) == EXIT_OK
    assert main(generate_args) == EXIT_OK
    assert len(server.batches) == 1 and server.calls == []  # every answer came from the one batch


def test_generate_leaves_out_requests_pending_in_uncollected_batches(tmp_path, capsys):
    images, cache, batch_dir = make_images(tmp_path / "images"), tmp_path / "cache.jsonl", tmp_path / "batches"
    with OpenAITestServer(batch_polls_until_done=2) as server:
        submit = teacher_args("batch-submit", server, images, cache, "--families", "basics", "--batch-dir", str(batch_dir))
        assert main(submit) == EXIT_OK
        capsys.readouterr()
        both = teacher_args("generate", server, images, cache, "--families", "basics,surface_characteristics")
        assert main(both) == EXIT_OK
        assert "4 requests left out: pending in uncollected batches" in capsys.readouterr().out
        assert Counter(family for _, family in server.answered) == {"surface_characteristics": 4}
        assert main(["batch-collect", "--batch-dir", str(batch_dir), "--wait", "--poll-interval", "0.01"]) == EXIT_OK
        assert main(both) == EXIT_OK
        assert len(server.calls) == 4  # nothing left to ask online

        elsewhere = teacher_args("generate", server, images, tmp_path / "other" / "cache.jsonl", "--families", "basics",
                                 "--batch-dir", str(batch_dir))  # fmt: skip
        assert main(elsewhere) == EXIT_OK  # its batches are collected: nothing pending, all four asked
        assert len(server.calls) == 8
    assert_complete_without_duplicates(cache, images, [family_by_key("basics"), family_by_key("surface_characteristics")])


# ------------------------------------------------------------------------------------------------
# The folder rule
# ------------------------------------------------------------------------------------------------


def test_the_teacher_follows_the_shared_folder_rule(tmp_path, capsys):
    images = make_images(tmp_path / "images", per_category=1, categories=("Nanowires",))
    outside = make_images(tmp_path / "outside", per_category=1, categories=("Porous_Sponge", "Tips"), size=(60, 40))
    (images / "Porous_Sponge").symlink_to(outside / "Porous_Sponge", target_is_directory=True)  # a linked category
    (images / "Nanowires" / "more").symlink_to(outside / "Tips", target_is_directory=True)  # a linked sub-folder
    (images / "Nanowires" / "loop").symlink_to(images / "Nanowires", target_is_directory=True)  # read once
    make_images(images / ".trash", per_category=1, categories=("Fibres",))  # hidden: never paid for
    make_images(images, per_category=1, categories=(".ipynb_checkpoints",))

    scan = teacher.scan_teacher_images(images)
    assert sorted(image.image_path for image in scan.images) == [
        "Nanowires/L0_Nanowires.jpg", "Nanowires/more/L0_Tips.jpg", "Porous_Sponge/L0_Porous_Sponge.jpg",
    ]  # fmt: skip
    assert [image.category for image in scan.images if image.image_path.startswith("Nanowires/more")] == ["Nanowires"]
    prices = ["--model", MODEL, "--input-usd-per-1m", "1", "--output-usd-per-1m", "1", "--families", "basics"]
    assert main(["estimate", "--images", str(images), "--json", *prices]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["requests"] == 3
