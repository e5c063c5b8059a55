"""Tests for mlflow_nemo_judge.data: locations, formats, streaming, errors, and hf:// via a loopback hub.

Self-contained: every file is written under tmp_path, or is the package's own demo data."""

from __future__ import annotations

import builtins
import codecs
import csv
import errno
import gc
import hashlib
import json
import re
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import mlflow_nemo_judge
from mlflow_nemo_judge.data import (
    DatasetSource,
    describe,
    file_digest,
    first_row,
    hf_endpoint,
    iter_rows,
    readers,
    resolve_files,
)
from mlflow_nemo_judge.errors import DatasetError

# The package's own seed data: 30 consults (ID, content, summary), shipped inside the package.
DEMO_DATA = Path(mlflow_nemo_judge.__file__).parent / "demo_data" / "doctor_consults.jsonl"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def rows_of(url: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    return list(iter_rows(DatasetSource(str(url), **kwargs)))


def error_of(url: str | Path, **kwargs: Any) -> str:
    with pytest.raises(DatasetError) as info:
        rows_of(url, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "DatasetError messages must be one line"
    return message


# ------------------------------------------------------------------------------------------------ formats


def test_jsonl_rows_keep_original_keys_and_skip_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl", '{"ID": "C1", "Some Key": 1}\n\n   \n{"ID": "C2", "nested": {"x": [1]}}\n\n'
    )
    assert rows_of(path) == [{"ID": "C1", "Some Key": 1}, {"ID": "C2", "nested": {"x": [1]}}]


def test_jsonl_crlf_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", codecs.BOM_UTF8 + '{"é": "ü"}\r\n{"b": 2}\r\n'.encode())
    assert rows_of(path) == [{"é": "ü"}, {"b": 2}]


def test_json_array(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", json.dumps([{"a": 1}, {"a": 2, "b": [1, 2]}], indent=2))
    assert rows_of(path) == [{"a": 1}, {"a": 2, "b": [1, 2]}]


def test_json_with_bom_and_unicode(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", codecs.BOM_UTF8 + '[{"t": "naïve 😀"}]'.encode())
    assert rows_of(path) == [{"t": "naïve 😀"}]


def test_json_object_wrapping_one_list(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '{"version": "1.0", "meta": {"k": [1]}, "data": [{"a": 1}, {"a": 2}]}')
    assert rows_of(path) == [{"a": 1}, {"a": 2}]
    write(tmp_path / "e.json", '{"data": [{"a": 1}], "note": "after"}')
    assert rows_of(tmp_path / "e.json") == [{"a": 1}]


def test_csv_rows_are_strings_with_header_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", '\ufeffID,content,score\nC1,"multi\nline, quoted",3\n\nC2,plain,\n')
    assert rows_of(path) == [
        {"ID": "C1", "content": "multi\nline, quoted", "score": "3"},
        {"ID": "C2", "content": "plain", "score": ""},
    ]


def test_csv_pandas_style_unnamed_index_column_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", ",q\n0,x\n")
    assert rows_of(path) == [{"": "0", "q": "x"}]


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "d.txt", '{"a": 1}\n')
    assert rows_of(path, format="JSONL") == [{"a": 1}]
    assert DatasetSource(str(path), format=".Jsonl").format == "jsonl"
    assert "cannot tell the dataset format" in error_of(path)


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset format 'xml'"):
        DatasetSource("d.xml", format="xml")


# ---------------------------------------------------------------------------------------------- locations


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "cfg" / "data" / "d.jsonl", '{"a": 1}\n')
    assert rows_of("data/d.jsonl", base_dir=tmp_path / "cfg") == [{"a": 1}]
    # str base_dir (e.g. from a config loader) is coerced to Path.
    source = DatasetSource("data/d.jsonl", base_dir=str(tmp_path / "cfg"))  # type: ignore[arg-type]
    assert isinstance(source.base_dir, Path)
    assert list(iter_rows(source)) == [{"a": 1}]


def test_relative_paths_default_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "d.jsonl", '{"a": 1}\n')
    monkeypatch.chdir(tmp_path)
    assert rows_of("d.jsonl") == [{"a": 1}]
    assert rows_of("./d.jsonl") == [{"a": 1}]


def test_file_urls(tmp_path: Path) -> None:
    path = write(tmp_path / "my data" / "d.jsonl", '{"a": 1}\n')
    assert rows_of(f"file://{path}") == [{"a": 1}]  # file:///abs/path (path starts with "/")
    assert rows_of(f"file://{tmp_path}/my%20data/d.jsonl") == [{"a": 1}]
    assert rows_of("file://my data/d.jsonl", base_dir=tmp_path) == [{"a": 1}]  # file://relative/path
    assert rows_of("FILE://my data/", base_dir=tmp_path) == [{"a": 1}]  # NeMo's "file://fiqa/" form
    assert "file:// URL has no path" in error_of("file://")


def test_directory_reads_data_files_in_name_order(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write(root / "b.jsonl", '{"f": "b"}\n')
    write(root / "a.csv", "f\na\n")
    write(root / "c" / "x.json", '[{"f": "c/x"}]')
    write(root / "README.md", "# readme")
    write(root / "readme.json", "not read")
    write(root / ".gitattributes", "*.jsonl lfs")
    write(root / ".cache" / "huggingface" / "meta.json", "not read")
    write(root / "notes.txt", "not data")
    write(root / "empty.jsonl", "\n")  # an empty file among others just contributes no rows
    assert [r["f"] for r in rows_of(root)] == ["a", "b", "c/x"]
    names = [name for name, _ in resolve_files(DatasetSource(str(root)))]
    assert names == [
        str(root / "a.csv"),
        str(root / "b.jsonl"),
        str(root / "c" / "x.json"),
        str(root / "empty.jsonl"),
    ]
    # An explicit format selects only files of that format.
    assert [r["f"] for r in rows_of(root, format="jsonl")] == ["b"]


def test_empty_directory(tmp_path: Path) -> None:
    write(tmp_path / "ds" / "README.md", "nothing here")
    assert "no *.jsonl, *.json or *.csv files in directory" in error_of(tmp_path / "ds")


def test_resolve_files_single_file(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n')
    assert resolve_files(DatasetSource(str(path))) == [(str(path), path)]


def test_missing_paths(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.jsonl") == f"dataset not found: {tmp_path / 'nope.jsonl'}"
    assert error_of(f"file://{tmp_path}/nope/") == f"dataset not found: {tmp_path / 'nope'}"
    # A relative path with a data extension is just a missing file, not an Entity Store reference.
    assert "Entity Store" not in error_of("data/train.jsonl", base_dir=tmp_path)


def test_entity_store_reference_is_explained(tmp_path: Path) -> None:
    message = error_of("my-namespace/my-dataset", base_dir=tmp_path)
    assert "dataset not found" in message
    assert "NeMo Entity Store dataset reference" in message and "nemo backend" in message
    assert "hf://datasets/my-namespace/my-dataset" in message


def test_entity_store_style_name_that_exists_locally_is_a_path(tmp_path: Path) -> None:
    write(tmp_path / "ns" / "name" / "d.jsonl", '{"a": 1}\n')
    assert rows_of("ns/name", base_dir=tmp_path) == [{"a": 1}]


@pytest.mark.parametrize(
    "url",
    ["http://example.com/d.jsonl", "https://example.com/d.jsonl", "s3://bucket/d.jsonl", "gs://b/d.csv"],
)
def test_unsupported_schemes(url: str) -> None:
    message = error_of(url)
    assert message.startswith(f"unsupported dataset location {url!r}")
    assert "hf://datasets/{namespace}/{repo}" in message and "file://" in message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("hf://models/ns/repo", "only hf://datasets/"),
        ("hf://datasets/onlyns", "expected hf://datasets/{namespace}/{repo}"),
        ("hf://datasets/ns/", "expected hf://datasets/{namespace}/{repo}"),
        ("   ", "dataset location is empty"),
    ],
)
def test_malformed_locations(url: str, fragment: str) -> None:
    assert fragment in error_of(url)


# ----------------------------------------------------------------------------------------------- limit


def test_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", "".join(f'{{"i": {i}}}\n' for i in range(5)))
    assert [r["i"] for r in rows_of(path)] == [0, 1, 2, 3, 4]
    assert [r["i"] for r in iter_rows(DatasetSource(str(path)), limit=2)] == [0, 1]
    assert len(list(iter_rows(DatasetSource(str(path)), limit=100))) == 5


def test_limit_spans_files_of_a_directory(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", '{"i": 0}\n{"i": 1}\n')
    write(tmp_path / "b.jsonl", '{"i": 2}\n{"i": 3}\n')
    assert [r["i"] for r in iter_rows(DatasetSource(str(tmp_path)), limit=3)] == [0, 1, 2]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_invalid_limit_raises_value_error_at_call(tmp_path: Path, limit: Any) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n')
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        iter_rows(DatasetSource(str(path)), limit=limit)  # eager: no need to start iterating


def test_location_errors_are_raised_at_call(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        iter_rows(DatasetSource(str(tmp_path / "nope.jsonl")))


def test_first_row(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b\n1,2\n3,4\n")
    assert first_row(DatasetSource(str(path))) == {"a": "1", "b": "2"}
    empty = write(tmp_path / "e.csv", "a,b\n")
    with pytest.raises(DatasetError, match=r"dataset is empty \(no rows\): .*e\.csv"):
        first_row(DatasetSource(str(empty)))


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("e.jsonl", ""),
        ("e.jsonl", "\n\n  \n"),
        ("e.json", ""),
        ("e.json", " [ ] \n"),
        ("e.json", '{"data": []}'),
        ("e.csv", "a,b\n"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path / name, content)
    assert error_of(path) == f"dataset is empty (no rows): {path}"


def test_empty_directory_of_empty_files(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", "")
    write(tmp_path / "b.csv", "x\n")
    assert error_of(tmp_path) == f"dataset is empty (no rows): {tmp_path} (2 files)"


def test_jsonl_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n\n{"a": 2,}\n')
    message = error_of(path)
    assert message.startswith(f"{path}:3: invalid JSON: ")


def test_jsonl_non_object_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n[1, 2]\n')
    assert error_of(path) == f"{path}:2: expected a JSON object per line, got an array"


def test_jsonl_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", b'{"a": 1}\n{"a": "\xff"}\n')
    assert error_of(path).startswith(f"{path}:2: not valid UTF-8")


def test_pretty_printed_json_in_jsonl_file(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '[\n  {"a": 1}\n]\n')
    assert error_of(path).startswith(f"{path}:1: invalid JSON")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[\n{"a": 1},\n{"a": 2,,}\n]', ":3: invalid JSON: "),
        ('[\n{"a": 1},\n5\n]', ":3: element 1 is a number, expected a JSON object"),
        ('[\n{"a": 1}\n{"a": 2}]', ":3: invalid JSON: expected ',' or ']' after an array element, found '{'"),
        ('[{"a": 1},\n', ":2: invalid JSON: expected an array element, found end of file"),
        ('[{"a": 1},]', ":1: invalid JSON: "),
        ('\n"just a string"', ":2: expected a JSON array of objects, got a string"),
        (
            '{"q": "x", "n": 1}',
            ":1: expected a JSON array of objects (or an object with one list of objects)",
        ),
        ('{"a": 1}\n{"a": 2}\n', "JSON Lines?"),
        ('[{"a": 1}]\n[{"a": 2}]', ":2: invalid JSON: extra data after the top-level value"),
        (
            '{"rows": [{"a": 1}],\n "more": [{"a": 2}]}',
            ":2: the top-level object holds several lists ('rows', 'more')",
        ),
        ('{"rows": [1]}', ":1: element 0 of 'rows' is a number"),
        ('{"rows" [1]}', ":1: invalid JSON: expected ':' after a member name"),
        (b'[\n{"a": 1},\n{"a": "\xc3"}]', ":3: not valid UTF-8"),
        ('[{"a": "unterminated}]', ":1: invalid JSON: Unterminated string"),
    ],
)
def test_json_errors_name_file_and_line(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = write(tmp_path / "d.json", content)
    message = error_of(path)
    assert message.startswith(str(path)), message
    assert expected in message, message


def test_json_error_after_rows_still_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '[{"a": 1}, {"a": 2}, oops]')
    rows = iter_rows(DatasetSource(str(path)))
    assert next(rows) == {"a": 1}
    assert next(rows) == {"a": 2}
    with pytest.raises(DatasetError, match=r":1: invalid JSON"):
        next(rows)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", ":1: CSV file has no header row"),
        ("\n\n", "CSV file has no header row"),
        (",,\n1,2,3\n", ":1: CSV file has no header row"),
        ("a,b\n1,2\n1,2,3\n", ":3: CSV row has 3 fields but the header has 2"),
        ("a,b\n1\n", ":2: CSV row has 1 fields but the header has 2"),
        ('\n\na,b\n1,2\n\n"multi\nline",2,3\n', ":6: CSV row has 3 fields but the header has 2"),
        ("\na,a\n", ":2: CSV header repeats the column 'a'"),
        ("a,b,a\n1,2,3\n", ":1: CSV header repeats the column 'a'"),
        (b"a,b\n1,2\n\xff,3\n", ":3: not valid UTF-8"),
        ('a,b\n1,"x"y\n', ":2: invalid CSV: ',' expected after '\"'"),
        ('a,b\n1,"unclosed\n2,3\n', ":2: invalid CSV: unexpected end of data"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = write(tmp_path / "d.csv", content)
    message = error_of(path)
    assert message.startswith(str(path)), message
    assert expected in message, message


def _deny_reading(monkeypatch: pytest.MonkeyPatch, denied: Path) -> list[str]:
    """Make opening ``denied`` fail as the OS does for a mode-000 file; returns the paths refused.

    chmod alone cannot be used: root (CI) bypasses file permissions. Patching ``open`` makes the
    refusal happen at the same call, so the production error handling is what gets exercised.
    """
    real_open = builtins.open
    refused: list[str] = []

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)) and Path(file) == denied:
            refused.append(str(file))
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    return refused


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n')
    refused = _deny_reading(monkeypatch, path)
    # Planning succeeds (the file exists); the refusal surfaces when the rows are read.
    rows = iter_rows(DatasetSource(str(path)))
    with pytest.raises(DatasetError) as info:
        next(rows)
    assert str(info.value) == f"{path}: cannot read: Permission denied"
    with pytest.raises(DatasetError, match=r": cannot read: Permission denied$"):
        file_digest(path)
    assert refused == [str(path), str(path)]


# --------------------------------------------------------------------------------- JSON scanner robustness


def _tricky_documents() -> list[Any]:
    long_text = "x" * 5000 + 'é😀\\"' * 300
    return [
        [{"n": 12345678901234567890, "f": -1.5e-7, "t": True, "f2": False, "z": None}],
        [{"s": long_text, "nested": {"deep": [[1, 2], {"k": "v"}], "e": ""}}, {"a": 1}],
        {"meta": {"a": [1, 2, 3]}, "version": 10, "rows": [{"a": "ü" * 50}, {"b": 1e300}], "tail": "é"},
        [{"unicode": "\u2028\u2029\u0000", "escaped": "\\u00e9\\n"}] * 3,
    ]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_scanner_matches_json_loads_at_any_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, indent: int | None
) -> None:
    # Tiny chunks force values, numbers, literals and multi-byte characters across buffer boundaries.
    monkeypatch.setattr(readers, "_CHUNK", chunk)
    for i, document in enumerate(_tricky_documents()):
        path = tmp_path / f"d{i}.json"
        path.write_bytes(codecs.BOM_UTF8 + json.dumps(document, indent=indent, ensure_ascii=False).encode())
        expected = document if isinstance(document, list) else document["rows"]
        assert rows_of(path) == json.loads(json.dumps(expected)), (chunk, indent, i)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_json_error_lines_are_exact_at_any_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(readers, "_CHUNK", chunk)
    lines = ["["] + [f'  {{"i": {i}, "t": "{"é" * i}"}},' for i in range(30)] + ['  {"i": tru}', "]"]
    path = write(tmp_path / "d.json", "\n".join(lines))
    assert error_of(path).startswith(f"{path}:32: invalid JSON")


# ----------------------------------------------------------------------------------------------- streaming


def _write_big_dataset(path: Path, n: int, kind: str) -> None:
    def row(i: int) -> dict[str, Any]:
        return {
            "ID": f"C{i:06d}",
            "content": f"Patient {i} reports mild symptoms for {i % 30} days.",
            "summary": f"Summary {i}: mild, {i % 7} follow-ups.",
        }

    with open(path, "w", encoding="utf-8", newline="") as fh:
        if kind == "jsonl":
            for i in range(n):
                fh.write(json.dumps(row(i)) + "\n")
        elif kind == "csv":
            writer = csv.DictWriter(fh, fieldnames=["ID", "content", "summary"])
            writer.writeheader()
            for i in range(n):
                writer.writerow(row(i))
        else:
            fh.write('{"version": 1, "data": [\n' if kind == "json-wrapped" else "[\n")
            for i in range(n):
                fh.write(("" if i == 0 else ",\n") + json.dumps(row(i)))
            fh.write("\n]}\n" if kind == "json-wrapped" else "\n]\n")


@pytest.mark.parametrize(
    ("kind", "suffix", "n"),
    # The brief's two cases at 100k rows; the wrapped-JSON and CSV readers at 20k to keep the suite quick.
    [
        ("jsonl", "jsonl", 100_000),
        ("json", "json", 100_000),
        ("json-wrapped", "json", 20_000),
        ("csv", "csv", 20_000),
    ],
)
def test_large_files_stream_without_loading_them(tmp_path: Path, kind: str, suffix: str, n: int) -> None:
    path = tmp_path / f"big.{suffix}"
    _write_big_dataset(path, n, kind)
    size = path.stat().st_size
    gc.collect()
    tracemalloc.start()
    try:
        count = 0
        last: dict[str, Any] = {}
        for row in iter_rows(DatasetSource(str(path))):
            count += 1
            last = row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert last["ID"] == f"C{n - 1:06d}"
    assert peak < size / 5, f"peak traced memory {peak} B vs file size {size} B"


# ------------------------------------------------------------------------------------------ helpers / misc


def test_file_digest(tmp_path: Path) -> None:
    data = b"".join(b'{"i": %d}\n' % i for i in range(200_000))  # > 1 MiB: several read chunks
    path = write(tmp_path / "d.jsonl", data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(DatasetError, match="dataset not found: .*nope"):
        file_digest(tmp_path / "nope")


def test_describe_local(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n')
    assert describe(DatasetSource(str(path))) == f"local file {path}"
    assert describe(DatasetSource(str(tmp_path), format="csv")) == f"local directory {tmp_path} (format csv)"
    assert (
        describe(DatasetSource("nope.jsonl", base_dir=tmp_path))
        == f"missing local path {tmp_path / 'nope.jsonl'}"
    )
    assert describe(DatasetSource("s3://b/k")) == "unsupported dataset location 's3://b/k'"


def test_token_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("NEMO_DATASTORE_URL", raising=False)
    source = DatasetSource("hf://datasets/ns/repo", token="hf_SECRET")
    assert "hf_SECRET" not in repr(source)
    assert "hf_SECRET" not in describe(source)
    assert describe(source) == "hf://datasets/ns/repo via https://huggingface.co (huggingface_hub default)"


def test_hf_endpoint_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("NEMO_DATASTORE_URL", raising=False)
    source = DatasetSource("hf://datasets/ns/repo")
    assert hf_endpoint(source) is None
    monkeypatch.setenv("NEMO_DATASTORE_URL", "http://nds:3000/")
    assert hf_endpoint(source) == "http://nds:3000/v1/hf"
    monkeypatch.setenv("NEMO_DATASTORE_URL", "http://nds:3000/v1/hf/")
    assert hf_endpoint(source) == "http://nds:3000/v1/hf"
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror:8080/")
    assert hf_endpoint(source) == "http://mirror:8080"
    assert hf_endpoint(DatasetSource("hf://datasets/ns/repo", hf_endpoint="http://explicit/v1/hf/")) == (
        "http://explicit/v1/hf"
    )


def test_the_packaged_demo_dataset() -> None:
    source = DatasetSource(str(DEMO_DATA))
    rows = list(iter_rows(source))
    assert len(rows) == 30
    assert all(set(row) == {"ID", "content", "summary", "human_completeness"} for row in rows)
    assert [row["ID"] for row in rows] == [f"D{i:03d}" for i in range(1, 31)]
    assert len(list(iter_rows(source, limit=25))) == 25
    assert first_row(source) == rows[0]
    assert list(iter_rows(DatasetSource(f"file://{DEMO_DATA}"))) == rows  # file:///abs/path, same rows


# ------------------------------------------------------------------------------------ hf:// (loopback hub)


class FakeHub:
    """The slice of the Hugging Face Hub HTTP API that list_repo_files and hf_hub_download use.

    Serves, under an optional path prefix (a NeMo Data Store serves the HF API at ``/v1/hf``):
    ``GET /api/datasets/{ns}/{repo}/tree/{revision}[/{path}]?recursive=..`` (repo listing) and
    ``HEAD``/``GET /datasets/{ns}/{repo}/resolve/{revision}/{file}`` with the headers hf_hub_download
    relies on (``X-Repo-Commit``, ``ETag``, ``Content-Length``), and the Hub's ``X-Error-Code`` 404s.
    """

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, prefix: str = "/v1/hf") -> None:
        self.prefix = prefix
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.omit_commit_header = False  # behave like a plain web server, not a Hub
        self.status_override: int | None = None
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                hub.handle(self, with_body=True)

            def do_HEAD(self) -> None:
                hub.handle(self, with_body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval makes shutdown() (every test's teardown) quick.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def endpoint(self) -> str:
        return self.root + self.prefix

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [p for m, p, _ in self.requests if method is None or m == method]

    @staticmethod
    def blob_oid(content: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    def _send(
        self, req: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str], with_body: bool
    ) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if with_body:
            req.wfile.write(body)

    def _error(self, req: BaseHTTPRequestHandler, status: int, code: str | None, with_body: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Repo-Commit": self.COMMIT}
        if code:
            headers["X-Error-Code"] = code
        self._send(req, status, json.dumps({"error": code or "error"}).encode(), headers, with_body)

    def handle(self, req: BaseHTTPRequestHandler, with_body: bool) -> None:
        split = urlsplit(req.path)
        path = unquote(split.path)
        with self._lock:
            self.requests.append((req.command, path, req.headers.get("Authorization")))
        if self.status_override is not None:
            return self._error(req, self.status_override, None, with_body)
        if not path.startswith(self.prefix + "/"):
            return self._error(req, 404, None, with_body)
        rest = path[len(self.prefix) :]
        tree = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", rest)
        resolve = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", rest)
        match = tree or resolve
        if match is None:
            return self._error(req, 404, None, with_body)
        files = self.repos.get(match.group(1))
        if files is None:
            return self._error(req, 404, "RepoNotFound", with_body)
        if match.group(2) not in ("main", self.COMMIT):
            return self._error(req, 404, "RevisionNotFound", with_body)
        if tree is not None and req.command == "GET":
            recursive = parse_qs(split.query).get("recursive", ["false"])[0].lower() in ("true", "1")
            return self._send(
                req,
                200,
                json.dumps(self._listing(files, tree.group(3) or "", recursive)).encode(),
                {"Content-Type": "application/json"},
                with_body,
            )
        if resolve is not None:
            content = files.get(resolve.group(3))
            if content is None:
                return self._error(req, 404, "EntryNotFound", with_body)
            headers = {"Content-Type": "application/octet-stream", "ETag": f'"{self.blob_oid(content)}"'}
            if not self.omit_commit_header:
                headers["X-Repo-Commit"] = self.COMMIT
            return self._send(req, 200, content, headers, with_body)
        return self._error(req, 405, None, with_body)

    def _listing(self, files: dict[str, bytes], under: str, recursive: bool) -> list[dict[str, Any]]:
        base = f"{under.strip('/')}/" if under.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for name, content in files.items():
            if not name.startswith(base):
                continue
            parts = name[len(base) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = base + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries[folder] = {"type": "directory", "oid": "f" * 40, "path": folder}
            if recursive or len(parts) == 1:
                entries[name] = {
                    "type": "file",
                    "oid": self.blob_oid(content),
                    "size": len(content),
                    "path": name,
                }
        return list(entries.values())

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HF home/cache, no ambient token or endpoint, telemetry off, online mode."""
    hf_home = tmp_path / "hf_home"
    cache = hf_home / "hub"
    for name in ("HF_TOKEN", "HF_ENDPOINT", "NEMO_DATASTORE_URL", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # huggingface_hub reads these env vars once at import; patch its constants too so the cache, the
    # saved-token file and offline mode follow this test whatever was imported earlier.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


@pytest.fixture()
def hub(hf_cache: Path) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.repos["ns/judge-data"] = {
            ".gitattributes": b"*.json filter=lfs\n",
            "README.md": b"# card\n",
            "b.jsonl": b'{"ID": "B1"}\n{"ID": "B2"}\n',
            "a.csv": b"ID,content\nA1,hello\n",
            "data/c.json": b'[{"ID": "C1"}]',
            "data/notes.txt": b"not data",
            "raw/train": b'{"ID": "R1"}\n',
        }
        yield fake


def test_hf_whole_repo_with_and_without_trailing_slash(hub: FakeHub, hf_cache: Path) -> None:
    for url in ("hf://datasets/ns/judge-data", "hf://datasets/ns/judge-data/"):
        source = DatasetSource(url, hf_endpoint=hub.endpoint)
        assert [r["ID"] for r in iter_rows(source)] == ["A1", "B1", "B2", "C1"]
    files = resolve_files(DatasetSource("hf://datasets/ns/judge-data", hf_endpoint=hub.endpoint))
    assert [name for name, _ in files] == [
        "hf://datasets/ns/judge-data/a.csv",
        "hf://datasets/ns/judge-data/b.jsonl",
        "hf://datasets/ns/judge-data/data/c.json",
    ]
    for _, local in files:
        assert local.is_file()
        assert local.resolve().is_relative_to(hf_cache.resolve())  # downloaded into the (temp) HF cache
    assert (hf_cache / "datasets--ns--judge-data" / "snapshots" / FakeHub.COMMIT / "data" / "c.json").exists()
    assert "/v1/hf/api/datasets/ns/judge-data/tree/main" in hub.paths("GET")
    assert not any("README" in p or ".gitattributes" in p for p in hub.paths() if "/resolve/" in p)


def test_hf_single_file_is_downloaded_without_listing(hub: FakeHub) -> None:
    source = DatasetSource("hf://datasets/ns/judge-data/data/c.json", hf_endpoint=hub.endpoint)
    assert list(iter_rows(source)) == [{"ID": "C1"}]
    assert not any("/tree/" in p for p in hub.paths())
    assert "/v1/hf/datasets/ns/judge-data/resolve/main/data/c.json" in hub.paths("HEAD")


def test_hf_folder_in_repo(hub: FakeHub) -> None:
    source = DatasetSource("hf://datasets/ns/judge-data/data/", hf_endpoint=hub.endpoint)
    assert [name for name, _ in resolve_files(source)] == ["hf://datasets/ns/judge-data/data/c.json"]
    no_slash = DatasetSource("hf://datasets/ns/judge-data/data", hf_endpoint=hub.endpoint)
    assert list(iter_rows(no_slash)) == [{"ID": "C1"}]


def test_hf_extensionless_file_needs_a_format(hub: FakeHub) -> None:
    url = "hf://datasets/ns/judge-data/raw/train"
    assert rows_of(url, hf_endpoint=hub.endpoint, format="jsonl") == [{"ID": "R1"}]
    assert "cannot tell the dataset format" in error_of(url, hf_endpoint=hub.endpoint)


def test_hf_explicit_format_filters_repo_files(hub: FakeHub) -> None:
    assert rows_of("hf://datasets/ns/judge-data", hf_endpoint=hub.endpoint, format="csv") == [
        {"ID": "A1", "content": "hello"}
    ]


def test_hf_limit_downloads_only_what_it_reads(hub: FakeHub) -> None:
    source = DatasetSource("hf://datasets/ns/judge-data", hf_endpoint=hub.endpoint)
    assert list(iter_rows(source, limit=1)) == [{"ID": "A1", "content": "hello"}]
    downloaded = [p for p in hub.paths() if "/resolve/" in p]
    assert downloaded and all(p.endswith("/a.csv") for p in downloaded)
    assert first_row(source) == {"ID": "A1", "content": "hello"}


def test_hf_second_read_uses_the_cache(hub: FakeHub) -> None:
    source = DatasetSource("hf://datasets/ns/judge-data/b.jsonl", hf_endpoint=hub.endpoint)
    assert len(list(iter_rows(source))) == 2
    assert len(list(iter_rows(source))) == 2
    assert hub.paths("GET").count("/v1/hf/datasets/ns/judge-data/resolve/main/b.jsonl") == 1


def test_hf_revision_pin(hub: FakeHub) -> None:
    url = f"hf://datasets/ns/judge-data@{FakeHub.COMMIT}/b.jsonl"
    assert [r["ID"] for r in rows_of(url, hf_endpoint=hub.endpoint)] == ["B1", "B2"]
    assert f"/v1/hf/datasets/ns/judge-data/resolve/{FakeHub.COMMIT}/b.jsonl" in hub.paths("HEAD")
    message = error_of("hf://datasets/ns/judge-data@v9", hf_endpoint=hub.endpoint)
    assert message.startswith("dataset not found: hf://datasets/ns/judge-data@v9 at ")
    assert "no such revision" in message


def test_hf_endpoint_from_nemo_datastore_env(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_DATASTORE_URL", hub.root)  # the Data Store serves the HF API at /v1/hf
    assert len(rows_of("hf://datasets/ns/judge-data/b.jsonl")) == 2
    monkeypatch.setenv("NEMO_DATASTORE_URL", "http://127.0.0.1:9")  # HF_ENDPOINT takes precedence
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    assert (
        describe(DatasetSource("hf://datasets/ns/judge-data"))
        == f"hf://datasets/ns/judge-data via {hub.endpoint}"
    )
    assert len(rows_of("hf://datasets/ns/judge-data/data/c.json")) == 1


def test_hf_token_handling(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    rows_of("hf://datasets/ns/judge-data", hf_endpoint=hub.endpoint, token="s3cret")
    assert {auth for _, _, auth in hub.requests} == {"Bearer s3cret"}
    hub.requests.clear()
    # No token: nothing is sent to a non-Hub endpoint, not even a saved huggingface.co login.
    rows_of("hf://datasets/ns/judge-data/b.jsonl", hf_endpoint=hub.endpoint)
    assert {auth for _, _, auth in hub.requests} == {None}
    hub.requests.clear()
    monkeypatch.setenv("HF_TOKEN", "from-env")
    rows_of("hf://datasets/ns/judge-data", hf_endpoint=hub.endpoint)
    assert {auth for _, _, auth in hub.requests} == {"Bearer from-env"}


def test_hf_missing_repo_file_and_folder(hub: FakeHub) -> None:
    missing_repo = error_of("hf://datasets/ns/nope", hf_endpoint=hub.endpoint)
    assert missing_repo == (
        f"dataset not found: hf://datasets/ns/nope at {hub.endpoint}: "
        "the dataset repository does not exist or is not accessible"
    )
    missing_file = error_of("hf://datasets/ns/judge-data/missing.jsonl", hf_endpoint=hub.endpoint)
    assert missing_file == (
        f"dataset not found: hf://datasets/ns/judge-data/missing.jsonl at {hub.endpoint}: no such file in the repository"
    )
    missing_in_repo_download = error_of("hf://datasets/ns/nope/x.jsonl", hf_endpoint=hub.endpoint)
    assert missing_in_repo_download.startswith("dataset not found: hf://datasets/ns/nope/x.jsonl at ")
    missing_folder = error_of("hf://datasets/ns/judge-data/nofolder/", hf_endpoint=hub.endpoint)
    assert missing_folder.startswith(
        "dataset not found: hf://datasets/ns/judge-data/nofolder/ (no such file or folder"
    )


def test_hf_repo_without_data_files(hub: FakeHub) -> None:
    hub.repos["ns/empty"] = {"README.md": b"# nothing", ".gitattributes": b""}
    message = error_of("hf://datasets/ns/empty", hf_endpoint=hub.endpoint)
    assert (
        message
        == f"dataset is empty: no *.jsonl, *.json or *.csv files in hf://datasets/ns/empty at {hub.endpoint}"
    )


def test_hf_parse_errors_name_the_hf_url(hub: FakeHub) -> None:
    hub.repos["ns/bad"] = {"d.jsonl": b'{"a": 1}\n{oops}\n'}
    assert error_of("hf://datasets/ns/bad", hf_endpoint=hub.endpoint).startswith(
        "hf://datasets/ns/bad/d.jsonl:2: invalid JSON: "
    )


def test_hf_access_denied(hub: FakeHub) -> None:
    hub.status_override = 403
    message = error_of("hf://datasets/ns/judge-data", hf_endpoint=hub.endpoint)
    assert message == (
        f"cannot read hf://datasets/ns/judge-data at {hub.endpoint}: access denied (HTTP 403); "
        "set HF_TOKEN or the dataset token"
    )


def test_hf_endpoint_that_is_not_a_hub(hub: FakeHub) -> None:
    hub.omit_commit_header = True
    message = error_of("hf://datasets/ns/judge-data/b.jsonl", hf_endpoint=hub.endpoint)
    assert message.startswith(f"cannot read hf://datasets/ns/judge-data/b.jsonl at {hub.endpoint}: ")
    assert "X-Repo-Commit" in message
