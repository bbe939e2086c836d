"""Downloads from a fake Zenodo on localhost, with wget and with Python's own client (wget off PATH)."""

import hashlib
import shutil

import pytest

from fake_zenodo import FakeZenodo, closed_port_url, no_proxy  # noqa: F401 (autouse fixture)
from utils import zenodo

FILES = {  # like the record: more files than a run needs; bytes that a byte-wise error would change
    "a.pt": bytes(range(256)) * 1200,
    "b.pt": b"weights b" * 5000,
    "unused.pt": b"never fetched" * 100,
}


@pytest.fixture(params=["wget", "urllib"])
def client(request, monkeypatch, tmp_path_factory):
    """Each test runs once with wget and once without it on PATH (Python's HTTP client)."""
    if request.param == "wget":
        if shutil.which("wget") is None:
            pytest.skip("wget is not installed")
    else:
        empty = tmp_path_factory.mktemp("empty_path")
        monkeypatch.setenv("PATH", str(empty))
        assert shutil.which("wget") is None
    return "Wget" if request.param == "wget" else "Python-urllib"


def test_good_download_fetches_only_the_named_files(client, tmp_path):
    with FakeZenodo(FILES, no_link={"b.pt"}) as server:
        paths = zenodo.fetch(["a.pt", "b.pt"], tmp_path, server.url)
    assert [p.read_bytes() for p in paths] == [FILES["a.pt"], FILES["b.pt"]]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["a.pt", "b.pt", zenodo.MANIFEST]
    assert server.fetched("unused.pt") == []
    # a.pt from its links.self, b.pt (no links in the JSON) from the public file URL; by the client under test.
    assert [r[0] for r in server.fetched("a.pt")] == [f"/api/records/{zenodo.RECORD}/files/a.pt/content"]
    assert [r[0] for r in server.fetched("b.pt")] == [f"/records/{zenodo.RECORD}/files/b.pt"]
    assert all(r[2].startswith(client) for r in server.fetched("a.pt") + server.fetched("b.pt"))
    # The manifest is md5sum's format and marks exactly the verified files.
    assert f"{hashlib.md5(FILES['a.pt']).hexdigest()}  a.pt" in (tmp_path / zenodo.MANIFEST).read_text()
    assert zenodo.from_record(paths[0])
    paths[0].write_bytes(b"changed since")
    assert not zenodo.from_record(paths[0])


def test_interrupted_download_resumes_from_the_part_file(client, tmp_path):
    data = FILES["a.pt"]
    (tmp_path / "a.pt.part").write_bytes(data[:100_000])  # what an interrupted run left
    with FakeZenodo(FILES) as server:
        zenodo.fetch(["a.pt"], tmp_path, server.url)
    assert (tmp_path / "a.pt").read_bytes() == data
    assert not (tmp_path / "a.pt.part").exists()
    assert [r[1] for r in server.fetched("a.pt")] == ["bytes=100000-"]


def test_a_connection_cut_off_mid_file_is_resumed_not_restarted(client, tmp_path, capsys):
    # The server announces the whole file, sends 100,000 bytes and closes: Python's HTTP client
    # reports that as a complete body, without an error.
    with FakeZenodo(FILES, cut={"a.pt": [100_000]}) as server:
        zenodo.fetch(["a.pt"], tmp_path, server.url)
    assert (tmp_path / "a.pt").read_bytes() == FILES["a.pt"]
    assert [r[1] for r in server.fetched("a.pt")] == [None, "bytes=100000-"]  # no byte fetched twice
    assert "MD5" not in capsys.readouterr().err  # not taken for a corrupt download


def test_a_download_that_keeps_breaking_off_is_resumed_by_the_rerun(client, tmp_path):
    with FakeZenodo(FILES, cut={"a.pt": [1000, 1000, 1000]}) as server:  # three tries, as wget --tries=3
        with pytest.raises(zenodo.ZenodoUnreachable, match="a rerun resumes it"):
            zenodo.fetch(["a.pt"], tmp_path, server.url)
        assert (tmp_path / "a.pt.part").read_bytes() == FILES["a.pt"][:3000]  # kept for the rerun
        zenodo.fetch(["a.pt"], tmp_path, server.url)  # the rerun
    assert (tmp_path / "a.pt").read_bytes() == FILES["a.pt"]
    assert [r[1] for r in server.fetched("a.pt")] == [None, "bytes=1000-", "bytes=2000-", "bytes=3000-"]


def test_server_that_ignores_range_still_gives_the_whole_file(client, tmp_path, capsys):
    (tmp_path / "a.pt.part").write_bytes(FILES["a.pt"][:1000])
    with FakeZenodo(FILES, ranges=False) as server:
        zenodo.fetch(["a.pt"], tmp_path, server.url)
    assert (tmp_path / "a.pt").read_bytes() == FILES["a.pt"]
    # Its 200 answer replaced the part file in one request: not appended to it, then deleted for its MD5.
    assert [r[1] for r in server.fetched("a.pt")] == ["bytes=1000-"]
    assert "MD5" not in capsys.readouterr().err


def test_md5_mismatch_is_deleted_and_retried_once(client, tmp_path):
    with FakeZenodo(FILES, corrupt={"a.pt": 1}) as server:
        zenodo.fetch(["a.pt"], tmp_path, server.url)
    assert (tmp_path / "a.pt").read_bytes() == FILES["a.pt"]
    assert len(server.fetched("a.pt")) == 2


def test_second_md5_mismatch_stops_with_a_clear_error(client, tmp_path):
    with FakeZenodo(FILES, corrupt={"a.pt": 2}) as server, pytest.raises(zenodo.ZenodoError) as err:
        zenodo.fetch(["a.pt"], tmp_path, server.url)
    assert "a.pt" in str(err.value) and "MD5 check twice" in str(err.value) and "deleted" in str(err.value)
    assert not isinstance(err.value, zenodo.ZenodoUnreachable)
    assert len(server.fetched("a.pt")) == 2
    assert list(tmp_path.iterdir()) == []  # neither the file nor its part is left


def test_a_part_file_longer_than_the_record_says_is_discarded(client, tmp_path):
    (tmp_path / "b.pt.part").write_bytes(b"x" * (len(FILES["b.pt"]) + 1))
    with FakeZenodo(FILES) as server:
        zenodo.fetch(["b.pt"], tmp_path, server.url)
    assert (tmp_path / "b.pt").read_bytes() == FILES["b.pt"]
    assert [r[1] for r in server.fetched("b.pt")] == [None]  # a fresh download, no Range


def test_server_down_is_unreachable(client, tmp_path):
    with pytest.raises(zenodo.ZenodoUnreachable, match="cannot reach Zenodo at http://127.0.0.1:"):
        zenodo.fetch(["a.pt"], tmp_path, closed_port_url())


def test_file_server_down_after_the_record_is_unreachable(client, tmp_path):
    with FakeZenodo(FILES) as server:
        files = zenodo.record_files(server.url)
    entry = files["a.pt"]
    entry.url = f"{closed_port_url()}/records/{zenodo.RECORD}/files/a.pt"
    with pytest.raises(zenodo.ZenodoUnreachable, match="a rerun resumes it"):
        zenodo.download(entry, tmp_path)


def test_missing_file_and_http_errors_are_named(tmp_path):
    with FakeZenodo(FILES) as server:
        with pytest.raises(zenodo.ZenodoError, match="has no file c.pt"):
            zenodo.fetch(["c.pt"], tmp_path, server.url)
        with pytest.raises(zenodo.ZenodoError, match="HTTP 404"):
            zenodo.record_files(server.url, record=1)
