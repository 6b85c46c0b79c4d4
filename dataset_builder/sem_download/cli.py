"""`mvaema-fetch-sem`: the NFFA-EUROPE SEM dataset, downloaded, verified and unpacked in one command.

    mvaema-fetch-sem --out data/SEM [--api-url https://mirror.example/api] [--record RECORD_ID]

OUT gets one folder per category (`OUT/Biological/`, ..., `OUT/Tips/`), the layout `mvaema-teacher`,
`mvaema-build-dataset` and `predict.py` read. Its hidden `.fetch-sem/` folder holds the verified archives
(`downloads/`), half-finished downloads (`*.part`, resumed on the next run) and one note per unpacked archive
(`done/`), so a rerun downloads and unpacks only what is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import requests

from .archives import install_archive, is_archive
from .errors import FetchError
from .records import DEFAULT_API_URL, SEM_RECORD_ID, RecordFile, list_record_files, make_session
from .transfer import download_verified

logger = logging.getLogger(__name__)

STATE_DIR = ".fetch-sem"


def _done_note(output_dir: Path, file: RecordFile) -> Path:
    return output_dir / STATE_DIR / "done" / f"{file.key}.json"


def _already_installed(output_dir: Path, file: RecordFile) -> bool:
    note = _done_note(output_dir, file)
    if not note.is_file():
        return False
    done = json.loads(note.read_text(encoding="utf-8"))
    return done.get("checksum") == file.checksum and all((output_dir / c).is_dir() for c in done.get("categories", []))


def fetch_sem_dataset(
    output_dir: str | Path,
    api_url: str = DEFAULT_API_URL,
    record_id: str = SEM_RECORD_ID,
    *,
    session: requests.Session | None = None,
    remove_archives: bool = False,
    attempts: int = 5,
    backoff_s: float = 1.0,
) -> list[str]:
    """Download, verify and unpack every file of the record into `output_dir`; returns the categories there."""
    output_dir = Path(output_dir)
    session = session or make_session()
    files = list_record_files(session, api_url, record_id)
    logger.info("%s: %d files, %d bytes in all", record_id, len(files), sum(file.size or 0 for file in files))
    state = output_dir / STATE_DIR
    categories: set[str] = set()
    for file in files:
        if _already_installed(output_dir, file):
            logger.info("%s: already unpacked into %s", file.key, output_dir)
            categories.update(json.loads(_done_note(output_dir, file).read_text(encoding="utf-8"))["categories"])
            continue
        archive = download_verified(
            session, file, state / "downloads" / file.key, attempts=attempts, backoff_s=backoff_s
        )
        if not is_archive(file.key):
            logger.info("%s: not an archive, kept as %s", file.key, archive)
            continue
        installed = install_archive(archive, file.key, file.checksum, output_dir, state / "staging" / file.key)
        note = _done_note(output_dir, file)
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps({"checksum": file.checksum, "categories": installed}), encoding="utf-8")
        categories.update(installed)
        if remove_archives:
            archive.unlink()
    return sorted(categories)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mvaema-fetch-sem",
        description="Download the NFFA-EUROPE SEM dataset (Aversa et al. 2018, CC BY 4.0) from B2SHARE, verify every "
        "archive's checksum and unpack it into OUT/<Category>/. Safe to rerun: finished work is kept.",
    )
    parser.add_argument("--out", type=Path, default=Path("data/SEM"), help="output folder (default: data/SEM)")
    parser.add_argument(
        "--api-url",
        default=DEFAULT_API_URL,
        help=f"records API base address, e.g. a mirror's (default: {DEFAULT_API_URL})",
    )
    parser.add_argument("--record", default=SEM_RECORD_ID, help=f"record id (default: {SEM_RECORD_ID})")
    parser.add_argument(
        "--remove-archives", action="store_true", help="delete each archive once unpacked (saves about half the disk)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        categories = fetch_sem_dataset(args.out, args.api_url, args.record, remove_archives=args.remove_archives)
    except (FetchError, OSError) as error:
        print(f"mvaema-fetch-sem: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(categories)} categories ({', '.join(categories)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
