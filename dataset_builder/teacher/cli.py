"""`mvaema-teacher`: estimate, generate (online) and Batch API runs of the multimodal teacher.

    mvaema-teacher estimate --images data/SEM --cache teacher_cache.jsonl
    mvaema-teacher generate --images data/SEM --cache teacher_cache.jsonl --max-usd 50
    mvaema-teacher batch-submit --images data/SEM --cache teacher_cache.jsonl --batch-dir teacher_batches
    mvaema-teacher batch-status --batch-dir teacher_batches
    mvaema-teacher batch-collect --batch-dir teacher_batches --wait

Keys come from the environment only: OpenAI gets $OPENAI_API_KEY; any other server gets
$MVAEMA_TEACHER_API_KEY, else $OPENAI_API_KEY. A key is sent only over HTTPS or to this machine
(--allow-insecure-key to send it over plain HTTP). URLs are stored without credentials.

--max-usd caps the total a cache has cost, across runs and processes: every paid request is written
to the spend ledger beside the cache (NAME.spend.jsonl beside NAME.jsonl). One process at a time
works on a cache or a batch folder (locks NAME.jsonl.lock and BATCH_DIR/batch-folder.lock); generate
leaves out requests pending in uncollected batches (of --batch-dir, else of the batch folders beside
the cache).

Exit codes: 0 done, 1 some requests failed (rerun to retry them), 2 bad arguments or configuration,
3 stopped by --max-usd, 4 the teacher refused to work (bad key, unknown model, no quota), 5 batches
still running, 6 the cache or batch folder is in use by another process, 130 interrupted (Ctrl-C once:
the answers in flight are saved; twice: the run stops at once).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import openai

from ..images import SkippedImage
from ..question_families import QUESTION_FAMILIES, QuestionFamily, TeacherGenerationSettings, family_by_key
from ..teacher_cache import TeacherCache, TeacherRecord
from .batch import BATCH_MAX_BYTES, BATCH_MAX_REQUESTS, BatchState, batch_collect, batch_status, batch_submit
from .credentials import make_client, public_url, redact_api_key
from .jobs import completed_keys
from .limits import RequestLimits
from .locks import ResourceBusy
from .online import STOP_BUDGET, STOP_FATAL, STOP_INTERRUPTED, OnlineTeacher, RunAbandoned, RunReport, generate
from .pricing import PRICES_AS_OF, ModelPrice, estimate, resolve_price
from .protocol import DEFAULT_MAX_SIDE, DEFAULT_MODEL, LOW_DETAIL_MAX_SIDE, TeacherSettings, resolve_base_url
from .retry import FatalTeacherError, RetryAfterTooLong, RetryPolicy, describe_error
from .spend import SpendLedger, SpendTracker

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_BUDGET = 3
EXIT_FATAL = 4
EXIT_PENDING = 5
EXIT_BUSY = 6
EXIT_INTERRUPTED = 130
SHOWN_PROBLEMS = 20  # failed records and skipped images listed in full; the rest are counted


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("dataset_builder").setLevel(logging.DEBUG)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        _error(str(error))
        return EXIT_CONFIG
    except ResourceBusy as error:
        _error(str(error))
        return EXIT_BUSY
    except RetryAfterTooLong as error:
        _error(str(error))
        return EXIT_FAILED
    except FatalTeacherError as error:
        _error(f"the teacher refused to work: {error}")
        return EXIT_FATAL
    except openai.OpenAIError as error:
        _error(describe_error(error))
        return EXIT_FATAL
    except RunAbandoned as error:
        _error(f"{error}; rerun the same command to continue")
        _exit_now(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        _error("interrupted; rerun the same command to continue")
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvaema-teacher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every retry")
    commands = parser.add_subparsers(dest="command", required=True)
    images, model, network = _images_options(), _model_options(), _network_options()
    _add_online_commands(commands, images, model, network)
    _add_batch_commands(commands, images, model, network)
    return parser


def _add_online_commands(
    commands: argparse._SubParsersAction,
    images: argparse.ArgumentParser,
    model: argparse.ArgumentParser,
    network: argparse.ArgumentParser,
) -> None:
    command = commands.add_parser(
        "estimate", parents=[images, model], help="requests, tokens and cost, before spending anything"
    )
    command.add_argument(
        "--expected-answer-tokens", type=int, default=70, help="expected tokens per answer (default: 70)"
    )
    command.add_argument("--json", action="store_true", help="print the estimate as JSON")
    command.set_defaults(run=run_estimate)

    command = commands.add_parser(
        "generate", parents=[images, model, network], help="ask the teacher online, resumably"
    )
    command.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    command.add_argument(
        "--max-usd",
        type=float,
        help="stop before the cache's total spend (this run plus every earlier run and process on the same cache, "
        "from its spend ledger NAME.spend.jsonl beside NAME.jsonl) could exceed this many dollars",
    )
    command.add_argument(
        "--batch-dir",
        action="append",
        help="leave out requests pending in this batch folder's uncollected batches (repeatable; "
        "default: the batch folders beside the cache that write to it)",
    )
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    command.set_defaults(run=run_generate)


def _add_batch_commands(
    commands: argparse._SubParsersAction,
    images: argparse.ArgumentParser,
    model: argparse.ArgumentParser,
    network: argparse.ArgumentParser,
) -> None:
    command = commands.add_parser(
        "batch-submit", parents=[images, model, network], help="send pending requests to the Batch API (50%% price)"
    )
    command.add_argument("--batch-dir", required=True, help="folder for the request files and the resumable state")
    command.add_argument(
        "--max-usd",
        type=float,
        help="keep the cache's total (its spend ledger, plus the worst case of uncollected batches and of this "
        "submission, at batch prices) within this many dollars",
    )
    command.add_argument(
        "--max-requests-per-batch",
        type=int,
        default=BATCH_MAX_REQUESTS,
        help="split into batches of at most this many requests (default: 50,000, OpenAI's limit; "
        "smaller batches stay under a tier's enqueued-token limit)",
    )
    command.add_argument(
        "--max-batch-mb",
        type=float,
        default=BATCH_MAX_BYTES / 1e6,
        help="input file size limit (default: 200)",
    )
    command.set_defaults(run=run_batch_submit)

    command = commands.add_parser("batch-status", parents=[network], help="show how the submitted batches are doing")
    command.add_argument("--batch-dir", required=True)
    command.add_argument("--base-url", help=BATCH_BASE_URL_HELP)
    command.set_defaults(run=run_batch_status)

    command = commands.add_parser("batch-collect", parents=[network], help="write finished batch results to the cache")
    command.add_argument("--batch-dir", required=True)
    command.add_argument("--cache", help="the cache to write (default: the one given to batch-submit)")
    command.add_argument("--base-url", help=BATCH_BASE_URL_HELP)
    command.add_argument("--wait", action="store_true", help="poll until every batch has finished")
    command.add_argument("--poll-interval", type=float, default=60.0, help="seconds between polls (default: 60)")
    command.set_defaults(run=run_batch_collect)


BATCH_BASE_URL_HELP = (
    "the server the batches were submitted to, when its URL carries credentials (a token parameter) that the "
    "batch folder does not store (default: the URL stored there)"
)


def _images_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--images", required=True, help="folder of category sub-folders: IMAGES/<Category>/<image>")
    options.add_argument(
        "--cache", help="teacher cache (JSONL); cached answers are skipped (required except for estimate)"
    )
    options.add_argument(
        "--families",
        type=_families,
        default=QUESTION_FAMILIES,
        help="comma-separated question-family keys (default: all ten)",
    )
    return options


def _model_options() -> argparse.ArgumentParser:
    defaults = TeacherGenerationSettings()
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"teacher model (default: {DEFAULT_MODEL})"
    )
    options.add_argument(
        "--base-url",
        help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI)",
    )
    options.add_argument(
        "--detail", choices=("low", "high", "auto"), default="high", help="image detail (default: high)"
    )
    options.add_argument(
        "--max-side",
        type=int,
        help=f"shrink images to this longer side in px (default: {DEFAULT_MAX_SIDE}, "
        f"{LOW_DETAIL_MAX_SIDE} with --detail low)",
    )
    paper = f"(default: {defaults.max_output_tokens}, {defaults.temperature}, {defaults.top_p}: the paper's)"
    options.add_argument(
        "--max-output-tokens", type=int, default=defaults.max_output_tokens, help=f"answer limit {paper}"
    )
    options.add_argument("--temperature", type=float, default=defaults.temperature)
    options.add_argument("--top-p", type=float, default=defaults.top_p)
    options.add_argument(
        "--input-usd-per-1m", type=float, help="price of 1M input tokens (default: from the model's known price)"
    )
    options.add_argument(
        "--output-usd-per-1m", type=float, help="price of 1M output tokens (default: from the model's known price)"
    )
    return options


def _network_options() -> argparse.ArgumentParser:
    defaults = RetryPolicy()
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds a request may take in all, connecting and reading the whole reply included (default: 180)",
    )
    options.add_argument(
        "--max-attempts", type=int, default=defaults.max_attempts, help="tries per request (default: 8)"
    )
    options.add_argument(
        "--backoff-base", type=float, default=defaults.backoff_base_s, help="first retry wait in s (doubles)"
    )
    options.add_argument("--backoff-max", type=float, default=defaults.backoff_max_s, help="longest retry wait in s")
    options.add_argument(
        "--allow-insecure-key",
        action="store_true",
        help="send the API key over plain HTTP to another machine (by default a key goes only over HTTPS or to "
        "this machine)",
    )
    return options


def _families(text: str) -> tuple[QuestionFamily, ...]:
    try:
        return tuple(family_by_key(key.strip()) for key in text.split(",") if key.strip())
    except KeyError as error:
        raise argparse.ArgumentTypeError(error.args[0]) from None


def _settings(args: argparse.Namespace) -> TeacherSettings:
    return TeacherSettings(
        model=args.model,
        base_url=resolve_base_url(args.base_url),
        detail=args.detail,
        max_side=args.max_side or (LOW_DETAIL_MAX_SIDE if args.detail == "low" else DEFAULT_MAX_SIDE),
        generation=TeacherGenerationSettings(args.temperature, args.top_p, args.max_output_tokens),
    )


def _price(args: argparse.Namespace) -> ModelPrice:
    return resolve_price(args.model, args.input_usd_per_1m, args.output_usd_per_1m)


def _retry(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(args.max_attempts, args.backoff_base, args.backoff_max)


def _require_cache(args: argparse.Namespace) -> str:
    if not args.cache:
        raise ValueError(f"{args.command} needs --cache PATH (the teacher cache JSONL to read and append to)")
    return args.cache


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def run_estimate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    done = completed_keys(TeacherCache(args.cache)) if args.cache else set()
    result = estimate(args.images, settings, _price(args), args.families, done, args.expected_answer_tokens)
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return EXIT_OK
    price, cost = result.price, result.cost_usd
    rows = {
        "teacher": f"{result.teacher}, detail {result.detail}, images sent at most {result.max_side} px",
        "images": f"{result.images:,} ({len(result.skipped_images):,} files skipped, {result.duplicates:,} duplicates)",
        "requests": f"{result.requests:,} to ask, {result.cached_requests:,} cached ({result.families} families)",
        "input tokens": f"{result.input_tokens:,} = {result.image_tokens:,} image + ~{result.text_tokens:,} text",
        "output tokens": f"~{result.expected_output_tokens:,} expected, {result.max_output_tokens:,} if all are used",
        "prices": f"${price.input_usd_per_1m:g} in / ${price.output_usd_per_1m:g} out per 1M tokens "
        f"(list prices as of {PRICES_AS_OF} unless given)",
        "cost online": f"~${cost():,.2f} expected, ~${cost(worst_case=True):,.2f} if all output tokens are used",
        "cost Batch API": f"~${cost(batch=True):,.2f} expected, ~${cost(worst_case=True, batch=True):,.2f} likewise",
    }
    for label, value in rows.items():
        print(f"{label + ':':<16}{value}")
    _print_skipped(result.skipped_images)
    return EXIT_OK


def run_generate(args: argparse.Namespace) -> int:
    settings, price = _settings(args), _price(args)
    cache = _require_cache(args)
    online = OnlineTeacher(
        make_client(settings.base_url, args.timeout, allow_insecure_key=args.allow_insecure_key),
        settings,
        price,
        _retry(args),
        SpendTracker(args.max_usd, SpendLedger.beside(cache)),
        limits=RequestLimits(total_s=args.timeout),
    )
    report = generate(
        args.images, cache, online, args.families, args.concurrency, not args.no_progress, args.batch_dir
    )
    print(
        f"teacher {settings.teacher_id}: {report.answered:,} answered, {len(report.failed):,} failed, "
        f"{report.cached:,} already cached, {report.not_started:,} not started"
    )
    if report.in_batches:
        print(f"{report.in_batches:,} requests left out: pending in uncollected batches (run batch-collect)")
    _print_spend(report)
    _print_failed(report.failed)
    _print_skipped(report.skipped_images)
    if report.stopped == STOP_FATAL:
        _error(f"the teacher refused to work: {report.fatal_error}")
        return EXIT_FATAL
    if report.stopped == STOP_BUDGET:
        print(f"stopped before exceeding --max-usd {args.max_usd}; rerun with a larger budget to continue")
        return EXIT_BUDGET
    if report.stopped == STOP_INTERRUPTED:
        print("interrupted; rerun the same command to continue")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if report.failed else EXIT_OK


def run_batch_submit(args: argparse.Namespace) -> int:
    settings, price = _settings(args), _price(args)
    report = batch_submit(
        make_client(settings.base_url, args.timeout, allow_insecure_key=args.allow_insecure_key),
        args.batch_dir,
        args.images,
        _require_cache(args),
        settings,
        price,
        args.families,
        max_requests=args.max_requests_per_batch,
        max_bytes=int(args.max_batch_mb * 1e6),
        max_usd=args.max_usd,
        retry=_retry(args),
    )
    print(
        f"submitted {len(report.submitted)} batch(es) with {report.requests:,} new requests "
        f"(at most ${report.worst_case_usd:.2f} at batch prices); {report.cached:,} already cached, "
        f"{report.in_earlier_batches:,} in earlier batches"
    )
    for part in report.submitted:
        print(f"  {part.name}: {part.requests:,} requests, batch {part.batch_id} ({part.status})")
    _print_skipped(report.skipped_images)
    if report.left_for_budget:
        print(f"{report.left_for_budget:,} requests left out by --max-usd {args.max_usd}; submit again later")
        return EXIT_BUDGET
    return EXIT_OK


def _print_spend(report: RunReport) -> None:
    spent = f"spent ${report.spent_usd:.4f} (from the usage the server reported)"
    if report.unconfirmed_usd:
        spent += (
            f" + up to ${report.unconfirmed_usd:.4f} for requests whose cost the server did not report "
            "(no reply, or a reply without usage; counted at their worst case)"
        )
    print(spent)
    if report.earlier_usd:
        print(f"the cache's ledger held ${report.earlier_usd:.4f} from earlier runs")


def _batch_client(args: argparse.Namespace) -> openai.OpenAI:
    """A client for the server the batches were submitted to (recorded, without credentials, in the state file)."""
    state = BatchState.load(Path(args.batch_dir))
    if state is None:
        raise FileNotFoundError(f"{args.batch_dir}: no batch state; run `mvaema-teacher batch-submit` first")
    base_url = args.base_url or state.base_url
    if public_url(base_url) != public_url(state.base_url):
        raise ValueError(
            f"--base-url {public_url(base_url)} is not the server the batches of {args.batch_dir} were submitted to "
            f"({state.base_url}); pass that server's URL"
        )
    return make_client(base_url, args.timeout, allow_insecure_key=args.allow_insecure_key)


def run_batch_status(args: argparse.Namespace) -> int:
    state = batch_status(_batch_client(args), args.batch_dir, _retry(args))
    for part in state.parts:
        counts = part.request_counts
        progress = f"{counts.get('completed', 0):,} done, {counts.get('failed', 0):,} failed of {part.requests:,}"
        collected = "  (collected)" if part.collected else ""
        print(f"{part.name}: {part.status:<11} {progress}  batch {part.batch_id or '-'}{collected}")
        for error in part.errors:
            print(f"    {error}")
    running = sum(1 for part in state.parts if part.running)
    print(f"{len(state.parts)} batch(es), {running} not collected yet")
    return EXIT_PENDING if running else EXIT_OK


def run_batch_collect(args: argparse.Namespace) -> int:
    report = batch_collect(
        _batch_client(args),
        args.batch_dir,
        args.cache,
        wait_for_all=args.wait,
        poll_interval_s=args.poll_interval,
        retry=_retry(args),
    )
    print(f"collected {report.answered:,} answers, {len(report.failed):,} failed; spent ${report.spent_usd:.4f}")
    _print_failed(report.failed)
    if report.unsubmitted:
        print(f"{len(report.unsubmitted)} part(s) were written but never submitted: run batch-submit again")
    if report.running:
        print(f"{len(report.running)} batch(es) still running: run batch-collect again later (or with --wait)")
        return EXIT_PENDING
    return EXIT_FAILED if report.failed else EXIT_OK


def _print_failed(failed: Sequence[TeacherRecord]) -> None:
    if failed:
        print(f"failed (a rerun retries them): {len(failed):,}")
    for record in failed[:SHOWN_PROBLEMS]:
        print(f"  {record.image_path} [{record.family}]: {record.error}")
    if len(failed) > SHOWN_PROBLEMS:
        print(f"  ... and {len(failed) - SHOWN_PROBLEMS:,} more (status 'failed' in the cache)")


def _print_skipped(skipped: Sequence[SkippedImage]) -> None:
    if skipped:
        print(f"skipped images: {len(skipped):,}")
    for image in skipped[:SHOWN_PROBLEMS]:
        print(f"  {image.path}: {image.reason}")
    if len(skipped) > SHOWN_PROBLEMS:
        print(f"  ... and {len(skipped) - SHOWN_PROBLEMS:,} more")


def _exit_now(code: int) -> None:
    """End the process without waiting for worker threads still inside a request (each appended answer is
    already fsynced); a normal exit would wait for them, which a second Ctrl-C must not."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _error(message: str) -> None:
    print(f"mvaema-teacher: error: {redact_api_key(message)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
