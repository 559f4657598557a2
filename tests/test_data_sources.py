"""Text sources: local WikiText-2 raw and C4 JSON lines (skipped where the shared data is absent), clear errors."""

import gzip
import hashlib
import json

import pytest

from iobs.data.sources import load_documents, load_text, read_jsonl_documents, wikitext_rows_from_file
from iobs.errors import DataError
from tests.conftest import SHARED_DATA, needs_shared, offline_data_errors

WIKI_RAW = SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw"
C4_SAMPLES = SHARED_DATA / "c4-samples"


@needs_shared("wikitext-2-raw/wiki.test.raw")
def test_local_wikitext2_matches_the_hub_layout():
    # SOURCE.md: the original release file; 4358 lines, 1467 of them blank (" "), the other 2891 non-blank.
    assert hashlib.sha256(WIKI_RAW.read_bytes()).hexdigest().startswith("173c87a5")
    rows = wikitext_rows_from_file(WIKI_RAW)
    assert len(rows) == 4358 and rows.count("") == 1467
    assert all(r.endswith("\n") and r.strip() for r in rows if r)
    text = load_text({"kind": "wikitext2", "split": "test", "path": str(WIKI_RAW.parent)})
    file_chars = len(WIKI_RAW.read_text(encoding="utf-8"))
    assert len(text) == file_chars - 2 * 1467 + 2 * 4357  # blank rows emptied, "\n\n" between 4358 rows
    assert text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English film , television")
    assert text.endswith("Eddie Pelkey . \n\n\n")


@needs_shared("c4-samples")
def test_local_c4_jsonl_documents_and_validation_join():
    documents = load_documents({"kind": "c4", "path": str(C4_SAMPLES)})
    assert len(documents) == 30 and sum(map(len, documents)) == 14597 + 20570 + 18049  # SOURCE.md
    assert documents[0].startswith("The woman who died after falling from a bridge")
    text = load_text({"kind": "c4", "split": "validation", "path": str(C4_SAMPLES), "documents": 12})
    assert text == " ".join(documents[:12])
    one_file = load_documents({"kind": "jsonl", "path": str(C4_SAMPLES / "c4-sample.02.json.gz")})
    assert one_file == documents[10:20]


def test_jsonl_reader_limits_and_rejects_malformed_lines(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps({"text": f"doc {i}", "url": "u"}) for i in range(5)) + "\n\n")
    assert read_jsonl_documents(path) == [f"doc {i}" for i in range(5)]
    assert load_text({"kind": "jsonl", "path": str(path), "documents": 2}) == "doc 0\n\ndoc 1"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 .*'text'"):
        read_jsonl_documents(bad)


def test_text_and_stdlib_sources(tmp_path):
    (tmp_path / "valid.txt").write_text("x = 1\n")
    assert load_text({"kind": "text", "path": str(tmp_path / "valid.txt")}) == "x = 1\n"
    assert load_text({"kind": "stdlib", "split": "valid", "path": str(tmp_path)}) == "x = 1\n"
    with pytest.raises(DataError, match=r"eval\.stdlib\.path: no test\.txt"):
        load_text({"kind": "stdlib", "split": "test", "path": str(tmp_path)}, key="eval.stdlib")


def test_bad_specs_and_missing_paths_name_the_config_key(tmp_path):
    with pytest.raises(DataError, match=r"data\.eval\.wiki\.path: .*does not exist"):
        load_text({"kind": "wikitext2", "path": str(tmp_path / "nope")}, key="data.eval.wiki")
    with pytest.raises(DataError, match=r"data\.eval\.x: .* kind one of"):
        load_text({"kind": "imagenet"}, key="data.eval.x")
    with pytest.raises(DataError, match=r"src\.path is required"):
        load_text("jsonl", key="src")


OFFLINE_SCRIPT = """
from iobs.data.sources import load_text
from iobs.errors import DataError
for spec, key in [({"kind": "wikitext2"}, "data.eval.wikitext2"), ({"kind": "c4"}, "data.eval.c4"),
                  ({"kind": "c4", "split": "train"}, "data.calibration.c4")]:
    try:
        load_text(spec, key=key)
    except DataError as err:
        print("DataError:", err)
"""


def test_hub_sources_offline_give_a_data_error_with_the_config_key(tmp_path):
    lines, output = offline_data_errors(OFFLINE_SCRIPT, tmp_path)
    assert len(lines) == 3, output
    for line, key in zip(lines, ["data.eval.wikitext2", "data.eval.c4", "data.calibration.c4"]):
        assert "offline mode is on" in line and f"set {key}.path to a local copy" in line
    assert "Traceback" not in output
