"""The authors' published weights on Zenodo: the record's file list, verified and resumable downloads.

A file is fetched into NAME.part beside its final place (wget --continue, or Python's own HTTP
client with a Range header where wget is not installed, so an interrupted download resumes: a
connection that breaks off is resumed at once, three connections in all, then by a rerun),
checked against the MD5 in the record's JSON, and only then renamed to NAME. A mismatch deletes
the part file and downloads once more from scratch; a second mismatch is an error. Every verified
download is listed in md5sum format in MANIFEST beside it, so a figure can say which weights came
from the record (and `md5sum -c zenodo_7784039.md5` rechecks them).
"""

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from .files import file_digest, write_text_atomic
from .progress import progress

ZENODO_URL = "https://zenodo.org"  # base address; the ZENODO_URL environment variable overrides it
RECORD = 7784039  # the authors' record: the U-net checkpoints of the paper
MANIFEST = f"zenodo_{RECORD}.md5"  # verified downloads, "md5  name" a line
TIMEOUT = 60  # seconds without an answer before a connection counts as down
CHUNK = 1 << 20  # bytes read at a time
TRIES = 3  # connections per download before a broken-off one is left for a rerun (as wget --tries=3)


class ZenodoError(RuntimeError):
    """A download that failed; the message is one sentence naming the file and the problem."""


class ZenodoUnreachable(ZenodoError):
    """The server did not answer, or the connection broke off (a rerun resumes)."""


class ZenodoAnswered(ZenodoError):
    """The server answered with an HTTP error, or a record without the file: a wrong address or record."""


@dataclass
class RecordFile:
    name: str
    size: int
    md5: str
    url: str


def record_files(base_url=ZENODO_URL, record=RECORD):
    """The record's files, name -> RecordFile, from its JSON at {base_url}/api/records/{record}."""
    base_url = base_url.rstrip("/")
    url = f"{base_url}/api/records/{record}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body = json.load(response)
        files = {}
        for entry in body["files"]:
            algorithm, _, digest = entry["checksum"].partition(":")
            if algorithm != "md5":
                raise ValueError(f"checksum {entry['checksum']!r} is not an MD5")
            # links.self is the download address; the public file page serves the same bytes.
            link = entry.get("links", {}).get("self") or f"{base_url}/records/{record}/files/{entry['key']}"
            files[entry["key"]] = RecordFile(entry["key"], int(entry["size"]), digest, link)
        return files
    except urllib.error.HTTPError as err:
        raise ZenodoAnswered(f"Zenodo answered {url} with HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, HTTPException, OSError) as err:
        raise ZenodoUnreachable(f"cannot reach Zenodo at {base_url} ({_reason(err)})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ZenodoError(f"the record's JSON at {url} is not in Zenodo's format ({err!r})") from None


def fetch(names, dest_dir, base_url=ZENODO_URL):
    """Download the named files of the record into dest_dir, each verified; returns their paths."""
    files = record_files(base_url)
    absent = [name for name in names if name not in files]
    if absent:
        raise ZenodoAnswered(f"Zenodo record {RECORD} at {base_url} has no file {absent[0]}")
    return [download(files[name], dest_dir) for name in names]


def download(entry, dest_dir):
    """Fetch one RecordFile into dest_dir / entry.name via a resumable part file; MD5 checked, retried once."""
    dest_dir = Path(dest_dir)
    part = dest_dir / f"{entry.name}.part"
    for attempt in (1, 2):
        if part.exists() and part.stat().st_size > entry.size:
            part.unlink()  # longer than the file: not a prefix of it, nothing to resume
        if not part.exists() or part.stat().st_size < entry.size:
            wget = shutil.which("wget")
            if wget:
                _download_wget(wget, entry, part)
            else:
                _download_urllib(entry, part)
        digest = md5sum(part)
        if digest == entry.md5:
            os.replace(part, dest_dir / entry.name)
            _add_to_manifest(dest_dir, entry.name, digest)
            return dest_dir / entry.name
        part.unlink()
        if attempt == 1:
            print(
                f"{entry.name}: MD5 {digest} is not the record's {entry.md5}; deleted, downloading once more",
                file=sys.stderr,
            )
    raise ZenodoError(
        f"{entry.name} from {entry.url} failed its MD5 check twice (got {digest}, the record says {entry.md5}) "
        f"and was deleted; try again later, or download it by hand into {dest_dir}"
    )


def _download_wget(wget, entry, part):
    """wget --continue appends to the part file; its own progress display goes to stderr."""
    display = "bar" if sys.stderr.isatty() else "dot:giga"  # a log gets one line per 32 MB, not a redraw
    command = [
        wget,
        "--continue",
        "--tries=3",
        f"--timeout={TIMEOUT}",
        f"--progress={display}",
        "-O",
        str(part),
        entry.url,
    ]
    result = subprocess.run(command)
    if result.returncode != 0:
        reasons = {4: "network failure", 5: "TLS failure", 8: "the server answered with an error"}
        reason = reasons.get(result.returncode, f"wget exit status {result.returncode}")
        error = ZenodoAnswered if result.returncode == 8 else ZenodoUnreachable
        raise error(f"downloading {entry.url} failed ({reason}); a rerun resumes it")


def _download_urllib(entry, part):
    """Python's HTTP client, resuming with a Range header, at once where a connection broke off mid-file."""
    for attempt in range(1, TRIES + 1):
        announced, received, size = _urllib_connection(entry, part)
        if received >= announced:
            return
        message = f"the connection broke off after {size:,} of {entry.size:,} bytes"
        if attempt < TRIES:
            print(f"{entry.name}: {message}; resuming", file=sys.stderr)
    raise ZenodoUnreachable(f"downloading {entry.url} failed ({message}, {TRIES} times); a rerun resumes it")


def _urllib_connection(entry, part):
    """One request, appended to the part file (or replacing it where the server ignores the Range header).

    Returns the bytes the server announced (Content-Length), those received, and the part file's size.
    http.client ends a body that stops short of its Content-Length like a complete one, without an
    error, so the two counts are what tells a broken-off connection from a finished one. (A chunked
    body that breaks off raises IncompleteRead instead: unreachable, and a rerun resumes.)
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(entry.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            if response.status != 206:
                have = 0  # the server ignored the Range header and sends the whole file
            length = response.headers.get("Content-Length", "")
            announced = int(length) if length.isdigit() else entry.size - have
            received = 0
            with open(part, "ab" if have else "wb") as out, progress(
                total=entry.size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.name
            ) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise ZenodoAnswered(f"downloading {entry.url} failed (HTTP {err.code} {err.reason})") from None
    except (urllib.error.URLError, HTTPException, OSError) as err:
        raise ZenodoUnreachable(f"downloading {entry.url} failed ({_reason(err)}); a rerun resumes it") from None
    return announced, received, have + received


def md5sum(path):
    """The hex MD5 of a file, as Zenodo lists it."""
    return file_digest(path, "md5")


def _add_to_manifest(dest_dir, name, digest):
    listed = _read_manifest(dest_dir)
    listed[name] = digest
    write_text_atomic(dest_dir / MANIFEST, "".join(f"{md5}  {file}\n" for file, md5 in sorted(listed.items())))


def _read_manifest(dest_dir):
    path = Path(dest_dir) / MANIFEST
    lines = path.read_text().splitlines() if path.is_file() else []
    return {name: md5 for md5, _, name in (line.partition("  ") for line in lines) if name}


def from_record(path):
    """Whether path is a file this module downloaded and verified, unchanged since (its MD5 is rechecked)."""
    path = Path(path)
    listed = _read_manifest(path.parent).get(path.name)
    return listed is not None and path.is_file() and md5sum(path) == listed


def _reason(err):
    """The useful part of a network exception, e.g. 'Connection refused'."""
    reason = getattr(err, "reason", None) or err
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
