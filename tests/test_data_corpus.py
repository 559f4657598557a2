"""The stdlib corpus: deterministic, split by file, exclusions and balancing as documented."""

from pathlib import Path

import pytest

from iobs.data.corpus import DEFAULT_FRACTIONS, SPLITS, build_corpus, split_of, stdlib_dir
from iobs.errors import DataError


def _fake_stdlib(root: Path, files: int = 60) -> Path:
    for i in range(files):
        path = root / f"pkg{i % 3}" / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\ndef f_{i}(x):\n    return x + {i}\n")
    (root / "test").mkdir()
    (root / "test" / "test_x.py").write_text("assert True\n")
    (root / "site-packages" / "lib").mkdir(parents=True)
    (root / "site-packages" / "lib" / "installed.py").write_text("INSTALLED = 1\n")
    (root / "pydoc_data").mkdir()
    (root / "pydoc_data" / "topics.py").write_text("topics = 'prose'\n")
    (root / "empty.py").write_text("")
    (root / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    return root


def _files_of(text: str) -> set[str]:
    return {line for line in text.splitlines() if line.startswith("# module ")}


def test_split_is_deterministic_and_disjoint_by_file(tmp_path):
    root = _fake_stdlib(tmp_path / "lib")
    first, second = build_corpus(root), build_corpus(root)
    assert first.texts == second.texts and first.manifest == second.manifest
    per_split = {name: _files_of(first.texts[name]) for name in SPLITS}
    assert sum(len(v) for v in per_split.values()) == 60  # every kept file once ...
    assert len(set().union(*per_split.values())) == 60  # ... and in one split only
    for name in SPLITS:
        assert first.manifest["splits"][name]["files"] == len(per_split[name]) > 0
        assert first.manifest["splits"][name]["bytes"] == len(first.texts[name].encode())
    for i in range(60):
        assert f"# module {i}" in per_split[split_of(f"pkg{i % 3}/mod_{i}.py")]


def test_exclusions_and_skips_are_recorded(tmp_path):
    root = _fake_stdlib(tmp_path / "lib")
    corpus = build_corpus(root)
    everything = "".join(corpus.texts.values())
    assert "assert True" not in everything and "INSTALLED" not in everything and "prose" not in everything
    skipped = corpus.manifest["skipped"]
    assert skipped["excluded"] == 2  # test/ and pydoc_data/; site-packages is never walked
    assert skipped["empty"] == 1 and skipped["undecodable"] == ["latin1.py"]
    with_tests = build_corpus(root, exclude=[])
    assert "assert True" in "".join(with_tests.texts.values())
    assert with_tests.manifest["files_sha256"] != corpus.manifest["files_sha256"]


def test_adding_a_file_moves_no_other_file(tmp_path):
    root = _fake_stdlib(tmp_path / "lib")
    before = {name: _files_of(t) for name, t in build_corpus(root).texts.items()}
    (root / "pkg0" / "new.py").write_text("# module new\n")
    after = {name: _files_of(t) - {"# module new"} for name, t in build_corpus(root).texts.items()}
    assert before == after


def test_oversize_files_go_to_train(tmp_path):
    root = _fake_stdlib(tmp_path / "lib")
    big = [i for i in range(60) if split_of(f"pkg{i % 3}/mod_{i}.py") != "train"][0]
    (root / f"pkg{big % 3}" / f"mod_{big}.py").write_text(f"# module {big}\n" + "x = 1\n" * 200)
    corpus = build_corpus(root, max_eval_file_bytes=500)
    assert f"# module {big}" in _files_of(corpus.texts["train"])
    assert corpus.manifest["skipped"]["moved_to_train_as_oversize"] == [f"pkg{big % 3}/mod_{big}.py"]


def test_split_fractions_are_respected_on_many_paths():
    counts = {name: 0 for name in SPLITS}
    for i in range(20000):
        counts[split_of(f"dir/file_{i}.py")] += 1
    for name in SPLITS:
        assert abs(counts[name] / 20000 - DEFAULT_FRACTIONS[name]) < 0.01


def test_bad_fractions_and_missing_dir_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="sum to 1"):
        build_corpus(_fake_stdlib(tmp_path / "lib"), fractions={"train": 0.9, "valid": 0.2, "test": 0.1})
    with pytest.raises(DataError, match="does not exist"):
        build_corpus(tmp_path / "nowhere")


def test_real_stdlib_corpus_is_code_and_balanced():
    corpus = build_corpus()
    m = corpus.manifest
    assert m["stdlib_dir"] == str(stdlib_dir())
    assert m["splits"]["train"]["bytes"] > 5_000_000  # CPython 3.11.7: 9.0 MB
    for name in ("valid", "test"):
        assert m["splits"][name]["files"] >= 10
        assert 100_000 < m["splits"][name]["bytes"] < 0.2 * m["splits"]["train"]["bytes"]
        assert corpus.texts[name].count("def ") > 100
    everything = "".join(corpus.texts.values())
    assert 'The "assert" statement' not in everything  # pydoc_data/topics.py (prose) excluded
