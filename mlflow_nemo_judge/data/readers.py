"""Stream a dataset's rows: JSONL, JSON and CSV readers that name the file and line of every error.

Everything streams: JSONL and CSV line by line, JSON arrays through an incremental parser that holds
one buffer chunk plus the current row, so a 100k-row file is never materialised. Rows are dicts with
the file's original keys; CSV values stay strings.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from mlflow_nemo_judge.data.locations import plan_files
from mlflow_nemo_judge.data.source import DataFile, DatasetSource
from mlflow_nemo_judge.errors import DatasetError

__all__ = ["MAX_ROW_DEPTH", "file_digest", "first_row", "iter_located_rows", "iter_rows"]

# Read size of the JSON scanner; a module global so tests can force values across chunk boundaries.
_CHUNK = 1 << 16
# Nesting levels a row may have: deeper rows would end in a RecursionError in a later stage (rendering,
# hashing, logging) instead of an error naming the row.
MAX_ROW_DEPTH = 100
Located = tuple[str, int, dict[str, Any]]  # (file name, line the row starts on, row)


def iter_rows(source: DatasetSource, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Stream the dataset's rows one at a time, stopping after ``limit`` rows.

    The location is checked (and an ``hf://`` repo listed) immediately, so a bad URL fails at the call;
    files are opened — and ``hf://`` files downloaded — only as iteration reaches them. Raises
    ``DatasetError`` at the end of iteration if the dataset held no rows at all.
    """
    _check_limit(limit)
    return _values(_stream(source, plan_files(source), limit))


def iter_located_rows(source: DatasetSource, limit: int | None = None) -> Iterator[Located]:
    """Like :func:`iter_rows`, with each row's file and the (1-based) line it starts on, for messages."""
    _check_limit(limit)
    return _stream(source, plan_files(source), limit)


def _values(located: Generator[Located, None, None]) -> Generator[dict[str, Any], None, None]:
    with closing(located):  # an early stop closes the file now
        for _, _, row in located:
            yield row


def first_row(source: DatasetSource) -> dict[str, Any]:
    """The first row, for validating templates against the data; ``DatasetError`` if there are no rows."""
    # closing(): stop reading (and release the file handle) right after the first row.
    with closing(_stream(source, plan_files(source), 1)) as rows:
        return next(rows)[2]  # an empty dataset raises DatasetError here, never StopIteration


def file_digest(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large datasets are hashed without loading them."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise DatasetError(f"dataset not found: {path}") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _check_limit(limit: int | None) -> None:
    # bool is an int subclass; `limit=True` is a caller bug, not "one row".
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def _stream(
    source: DatasetSource, files: list[DataFile], limit: int | None
) -> Generator[Located, None, None]:
    count = 0
    for data_file in files:
        # closing(): an early stop (limit reached) closes the file now rather than at garbage collection.
        with closing(_read_file(data_file.fetch(), data_file.name, data_file.format)) as rows:
            for line, row in rows:
                yield data_file.name, line, row
                count += 1
                if limit is not None and count >= limit:
                    return
    if count == 0:
        where = files[0].name if len(files) == 1 else f"{source.url.strip()} ({len(files)} files)"
        raise DatasetError(f"dataset is empty (no rows): {where}")


def _read_file(path: Path, name: str, fmt: str) -> Generator[tuple[int, dict[str, Any]], None, None]:
    readers = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows}
    try:
        # stat() before open(): opening a FIFO blocks until a writer appears, and a device never ends.
        if not stat.S_ISREG(os.stat(path).st_mode):
            kind = "a directory" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
            raise DatasetError(f"{name}: {kind}; a dataset file must be a regular file")
        with open(path, "rb") as fh:
            yield from readers[fmt](fh, name)
    except FileNotFoundError:
        raise DatasetError(f"dataset not found: {name}") from None
    except OSError as exc:  # permissions, a directory where a file was expected, I/O errors mid-read
        raise DatasetError(f"{name}: cannot read: {exc.strerror or exc}") from None


def _decoded_lines(fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) per physical line; decoding per line makes UTF-8 errors name the exact line."""
    for lineno, raw in enumerate(fh, start=1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{name}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start + 1} of the line)"
            ) from None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _unreadable(exc: ValueError | RecursionError) -> str:
    """Why a syntactically valid JSON value cannot be read: too deep, or an integer beyond Python's limit."""
    if isinstance(exc, RecursionError):
        return f"nested deeper than {MAX_ROW_DEPTH} levels"
    return f"an integer has more than {sys.get_int_max_str_digits()} digits"


def _check_depth(value: Any, text: str, where: str) -> None:
    """DatasetError if ``value`` nests deeper than MAX_ROW_DEPTH (``text``, its source, rules most rows out)."""
    if text.count("{") + text.count("[") <= MAX_ROW_DEPTH:
        return
    stack = [(value, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > MAX_ROW_DEPTH:
            raise DatasetError(f"{where}: row nested deeper than {MAX_ROW_DEPTH} levels")
        for child in obj.values() if isinstance(obj, dict) else obj:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def _jsonl_rows(fh: IO[bytes], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, text in _decoded_lines(fh, name):
        if not text.strip():
            continue  # blank lines (often a trailing one) carry no row
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise DatasetError(f"{name}:{lineno}: cannot read the row: {_unreadable(exc)}") from None
        if not isinstance(value, dict):
            raise DatasetError(f"{name}:{lineno}: expected a JSON object per line, got {_kind(value)}")
        _check_depth(value, text, f"{name}:{lineno}")
        yield lineno, value


def _csv_records(fh: IO[bytes], name: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) per non-blank CSV record; a quoted field may span several lines."""
    # csv.reader over our own decoded lines (instead of DictReader over a text file) gives exact line
    # numbers for UTF-8 errors and lets short/long rows be errors rather than None keys or missing values.
    # strict: a broken quoted field (e.g. an unclosed quote swallowing the rest of the file) is an error.
    reader = csv.reader((text for _, text in _decoded_lines(fh, name)), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(f"{name}:{start}: invalid CSV: {exc}") from None
        if record:  # csv yields [] for a blank line
            yield start, record


def _csv_rows(fh: IO[bytes], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    records = _csv_records(fh, name)
    line, header = next(records, (1, []))
    if not any(column.strip() for column in header):
        raise DatasetError(f"{name}:{line}: CSV file has no header row naming the columns")
    if len(set(header)) != len(header):
        repeated = next(column for i, column in enumerate(header) if column in header[:i])
        raise DatasetError(f"{name}:{line}: CSV header repeats the column {repeated!r}")
    for line, record in records:
        if len(record) != len(header):
            raise DatasetError(
                f"{name}:{line}: CSV row has {len(record)} fields but the header has {len(header)}"
            )
        yield line, dict(zip(header, record, strict=True))


class _JsonScanner:
    """Pull parser over a JSON text read in chunks: holds one chunk plus the value being decoded.

    ``json.JSONDecoder.raw_decode`` decodes one value at an offset; the scanner walks the top-level
    punctuation itself and asks the decoder only for array elements (or object members), refilling the
    buffer when a value runs past its end.
    """

    _WS = re.compile(r"[ \t\n\r]*")

    def __init__(self, fh: IO[bytes], name: str) -> None:
        self._fh = fh
        self._name = name
        # utf-8-sig drops a leading BOM; incremental so multi-byte characters may straddle chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._lines_before = 0  # newlines in text already dropped from the buffer, for line numbers
        # Newlines in buf[:_counted_to]: line() is asked once per row, so it counts on from the last
        # position instead of rescanning the buffer from its start (which made parsing quadratic per chunk).
        self._counted_to = 0
        self._counted_lines = 0
        self._eof = False

    def line(self, pos: int | None = None) -> int:
        at = self._pos if pos is None else pos
        if at < self._counted_to:
            self._counted_to = self._counted_lines = 0
        self._counted_lines += self._buf.count("\n", self._counted_to, at)
        self._counted_to = at
        return self._lines_before + self._counted_lines + 1

    def _fill(self) -> bool:
        """Drop consumed text and append more; False once the file is exhausted."""
        if self._eof:
            return False
        if self._pos:
            self._lines_before = self.line(self._pos) - 1
            self._buf = self._buf[self._pos :]
            self._pos = 0
            self._counted_to = self._counted_lines = 0
        # Read at least as much as is buffered: a huge single row then costs O(log n) re-parses, not O(n).
        data = self._fh.read(max(_CHUNK, len(self._buf)))
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self.line(len(self._buf)) + data[: max(exc.start, 0)].count(b"\n")
            raise DatasetError(f"{self._name}:{line}: not valid UTF-8 ({exc.reason})") from None
        if not data:
            self._eof = True
        self._buf += text
        return bool(data)

    def peek(self) -> str:
        """Skip whitespace; the next character, or '' at end of file."""
        while True:
            match = self._WS.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def advance(self) -> None:
        self._pos += 1

    def value(self) -> tuple[Any, int]:
        """Decode the JSON value at the cursor; returns it with the line it starts on."""
        self.peek()
        while True:
            start = self._pos
            try:
                value, end = self._json.raw_decode(self._buf, start)
            except json.JSONDecodeError as exc:
                # An error near the buffer end (or an open string) may only mean the value continues in the
                # next chunk; anything else is a real syntax error and is reported without reading further.
                truncated = exc.pos >= len(self._buf) - 16 or exc.msg.startswith("Unterminated string")
                offset = exc.pos - start  # _fill() shifts the buffer, so keep the position value-relative
                if truncated and self._fill():
                    continue
                line = self.line(self._pos + offset)
                raise DatasetError(f"{self._name}:{line}: invalid JSON: {exc.msg}") from None
            except (ValueError, RecursionError) as exc:
                raise DatasetError(
                    f"{self._name}:{self.line(start)}: cannot read: {_unreadable(exc)}"
                ) from None
            if end >= len(self._buf) and self._fill():
                continue  # a number or literal ending exactly at the buffer end may continue
            self._pos = end
            line = self.line(start)
            if isinstance(value, (dict, list)):
                _check_depth(value, self._buf[start:end], f"{self._name}:{line}")
            return value, line

    def fail(self, expected: str) -> DatasetError:
        found = self.peek()
        got = "end of file" if found == "" else repr(found)
        return DatasetError(f"{self._name}:{self.line()}: invalid JSON: expected {expected}, found {got}")


def _json_rows(fh: IO[bytes], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    scanner = _JsonScanner(fh, name)
    first = scanner.peek()
    if first == "":
        return  # an empty file has no rows; the caller reports an empty dataset
    if first == "[":
        yield from _json_array(scanner, name, "")
    elif first == "{":
        yield from _json_wrapped_array(scanner, name)
    else:
        value, line = scanner.value()
        raise DatasetError(f"{name}:{line}: expected a JSON array of objects, got {_kind(value)}")
    if scanner.peek() != "":
        raise DatasetError(
            f"{name}:{scanner.line()}: invalid JSON: extra data after the top-level value "
            f"(JSON Lines? name the file .jsonl or set the dataset format to jsonl)"
        )


def _json_array(scanner: _JsonScanner, name: str, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    scanner.advance()  # "["
    if scanner.peek() == "]":
        scanner.advance()
        return
    index = 0
    while True:
        if scanner.peek() == "":
            raise scanner.fail("an array element")
        value, line = scanner.value()
        if not isinstance(value, dict):
            raise DatasetError(
                f"{name}:{line}: element {index}{where} is {_kind(value)}, expected a JSON object"
            )
        yield line, value
        index += 1
        following = scanner.peek()
        if following == ",":
            scanner.advance()
        elif following == "]":
            scanner.advance()
            return
        else:
            raise scanner.fail("',' or ']' after an array element")


def _json_wrapped_array(scanner: _JsonScanner, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of an object wrapping them in its single list member, e.g. ``{"data": [...]}``.

    Other (non-list) members such as ``"version"`` are skipped; the list is streamed like a top-level array.
    """
    start_line = scanner.line()
    scanner.advance()  # "{"
    list_key: str | None = None
    if scanner.peek() == "}":
        scanner.advance()
    else:
        while True:
            if scanner.peek() != '"':
                raise scanner.fail("a member name")
            key, key_line = scanner.value()
            if scanner.peek() != ":":
                raise scanner.fail("':' after a member name")
            scanner.advance()
            if scanner.peek() == "[":
                if list_key is not None:
                    raise DatasetError(
                        f"{name}:{key_line}: the top-level object holds several lists ({list_key!r}, {key!r}); "
                        f"expected an array of objects or an object with exactly one list of objects"
                    )
                list_key = key
                yield from _json_array(scanner, name, f" of {key!r}")
            else:
                scanner.value()
            following = scanner.peek()
            if following == ",":
                scanner.advance()
            elif following == "}":
                scanner.advance()
                break
            else:
                raise scanner.fail("',' or '}' after an object member")
    if list_key is None:
        # A second value after the object means JSON Lines content in a .json file: say so.
        hint = (
            " (JSON Lines? name the file .jsonl or set the dataset format to jsonl)"
            if scanner.peek() != ""
            else ""
        )
        raise DatasetError(
            f"{name}:{start_line}: expected a JSON array of objects (or an object with one list of objects), "
            f"got an object without a list{hint}"
        )
