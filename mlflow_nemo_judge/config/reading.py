"""Reading config and target files without letting a bad or hostile file hang or crash the process.

Every failure is a one-line :class:`ConfigError` naming the file (and line or byte offset where known):
special files are refused by ``stat`` before opening (a FIFO would block ``open``), files are capped at
:data:`MAX_FILE_BYTES`, text must be UTF-8, duplicate keys are errors in YAML and JSON (both formats
would otherwise keep the last one and silently drop a task or metric), nesting is bounded by
:data:`MAX_DEPTH`, YAML alias expansion by :data:`MAX_ALIAS_NODES`, and non-finite numbers are refused.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from mlflow_nemo_judge.errors import ConfigError

# Bounds on what a config or target file may make this process do before anything is validated.
MAX_FILE_BYTES = 10 * 1024 * 1024  # 10 MiB: far above any real config, even a target with inline rows
MAX_DEPTH = 100  # nesting levels of mappings/lists (deeper input would end in a RecursionError)
# Nodes a YAML document may gain through aliases (``*name`` repeats the anchored subtree): legitimate
# configs share a judge model or a template a few times; a "billion laughs" document gains 10**9.
MAX_ALIAS_NODES = 100_000


class _Malformed(ValueError):
    """A parse failure at a known character offset of the text (JSON) or line/column (YAML)."""

    def __init__(self, message: str, pos: int | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.pos, self.line = pos, line


def read_text(path: Path, what: str) -> str:
    # stat() before open(): opening a FIFO blocks until a writer appears, and a device can be endless.
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError("", f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError("", f"{path}: is a directory, not a {what} file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("", f"{path}: not a regular file (a FIFO, socket or device); give a {what} file")
    limit = f"{what} files are limited to {MAX_FILE_BYTES // (1024 * 1024)} MiB"
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigError("", f"{path}: file is {st.st_size} bytes; {limit}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError("", f"{path}: file is larger than {MAX_FILE_BYTES} bytes; {limit}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            "", f"{path}: not valid UTF-8 at byte offset {exc.start} (line {line}): {exc.reason}"
        ) from None


def parse(text: str, is_json: bool) -> Any:
    if is_json:
        return _parse_json(text)
    return _parse_yaml(text)


def parse_error(exc: Exception, text: str) -> str:
    """One line for any parse failure, with the line where it is known."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, _Malformed):
        line = exc.line if exc.line is not None else text.count("\n", 0, exc.pos or 0) + 1
        return f"{exc} (line {line})"
    if isinstance(exc, RecursionError):
        return f"nested deeper than {MAX_DEPTH} levels"
    msg = str(exc)
    if "integer string conversion" in msg:  # Python's int-str limit (sys.get_int_max_str_digits)
        return f"an integer has more than {sys.get_int_max_str_digits()} digits"
    mark = getattr(exc, "problem_mark", None)  # yaml.MarkedYAMLError
    if mark is not None:
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or "invalid YAML"
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(msg.split()) or type(exc).__name__


def _parse_json(text: str) -> Any:
    """``json.loads`` that refuses duplicate keys (naming the key and line) and nesting beyond MAX_DEPTH.

    The pure-Python scanner is used because its object/array hooks see positions; configs are small.
    """
    # The pure-Python parts of the json module (untyped in typeshed): the member/array parsers and scanner.
    jd: Any = json.decoder
    JSONArray, JSONObject, scanstring = jd.JSONArray, jd.JSONObject, jd.scanstring
    py_make_scanner: Any = getattr(json.scanner, "py_make_scanner")  # noqa: B009

    decoder: Any = json.JSONDecoder()
    depth = 0

    def enter(pos: int) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise _Malformed(f"nested deeper than {MAX_DEPTH} levels", pos)

    def parse_object(s_and_end: tuple[str, int], strict: bool, scan_once: Any, *_: Any) -> Any:
        enter(s_and_end[1])
        try:
            pairs, end = JSONObject(s_and_end, strict, scan_once, None, list)
        finally:
            depth_exit()
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise _Malformed(f"duplicate key {key!r}", _second_key(s_and_end, key, scan_once))
            out[key] = value
        return out, end

    def parse_array(s_and_end: tuple[str, int], scan_once: Any) -> Any:
        enter(s_and_end[1])
        try:
            return JSONArray(s_and_end, scan_once)
        finally:
            depth_exit()

    def depth_exit() -> None:
        nonlocal depth
        depth -= 1

    def _second_key(s_and_end: tuple[str, int], key: str, scan_once: Any) -> int:
        # Only on error: walk the object's members again to find where the key is written the 2nd time.
        s, pos = s_and_end
        seen = 0
        while True:
            pos = _skip_ws(s, pos)
            at = pos
            name, pos = scanstring(s, pos + 1)
            if name == key:
                seen += 1
                if seen == 2:
                    return at
            pos = _skip_ws(s, _skip_ws(s, pos) + 1)  # past ':'
            _, pos = scan_once(s, pos)
            pos = _skip_ws(s, pos) + 1  # past ',' (the object has at least one more member)

    decoder.parse_object = parse_object
    decoder.parse_array = parse_array
    decoder.scan_once = py_make_scanner(decoder)
    return decoder.decode(text)


def _skip_ws(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in " \t\n\r":
        pos += 1
    return pos


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys, nesting beyond MAX_DEPTH and alias bombs.

    Every bound is checked on the composed node graph, before a single Python object is constructed:
    an alias shares its anchor's node, so expanded sizes are computed per node once (no blow-up here),
    and a document that would expand beyond MAX_ALIAS_NODES extra nodes is refused.
    """
    import yaml  # lazy so --help stays fast

    class Loader(yaml.SafeLoader):  # the pure-Python composer, whose node hooks can be overridden
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    mark = cast(Any, self).peek_event().start_mark
                    raise _Malformed(f"nested deeper than {MAX_DEPTH} levels", line=mark.line + 1)
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _check_expansion(node)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # ``<<: *defaults`` may be overridden by explicit keys, as YAML intends
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeConstructor reports it
                if first is not None:
                    raise _Malformed(f"duplicate key {key!r} (first on line {first})", line=line)
                seen[key] = line
            return super().construct_mapping(node, deep)

        def construct_yaml_int(self, node: Any) -> Any:
            try:
                return super().construct_yaml_int(node)
            except ValueError as exc:
                raise _Malformed(parse_error(exc, ""), line=node.start_mark.line + 1) from None

    cls: Any = Loader
    cls.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check_expansion(root: Any) -> None:
    """Refuse a composed YAML graph deeper than MAX_DEPTH or gaining more than MAX_ALIAS_NODES via aliases."""
    import yaml

    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded node count, height)

    def visit(node: Any, depth: int) -> tuple[int, int]:
        got = memo.get(id(node))
        if got is None:
            if depth > MAX_DEPTH:  # also ends a recursive alias (``&a [*a]``), which is infinitely deep
                raise _Malformed(f"nested deeper than {MAX_DEPTH} levels", line=node.start_mark.line + 1)
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            size, height = 1, 1
            for child in children:
                s, h = visit(child, depth + 1)
                size, height = size + s, max(height, h + 1)
            got = memo[id(node)] = (size, height)
        elif depth + got[1] - 1 > MAX_DEPTH:
            raise _Malformed(
                f"nested deeper than {MAX_DEPTH} levels (through aliases)", line=node.start_mark.line + 1
            )
        return got

    total, _ = visit(root, 1)
    if total - len(memo) > MAX_ALIAS_NODES:
        raise _Malformed(
            f"YAML aliases expand the document by {total - len(memo)} nodes, more than the "
            f"{MAX_ALIAS_NODES} allowed (an alias bomb?)",
            line=1,
        )


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def check_values(obj: Any, path: str, depth: int = 1) -> None:
    """Reject what no later stage can handle: non-finite numbers (``NaN`` is no temperature, and not
    JSON a server accepts) and nesting deeper than MAX_DEPTH (dicts given directly are unchecked)."""
    if depth > MAX_DEPTH:
        raise ConfigError(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(path, f"must be a finite number, got {obj!r}")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            check_values(v, _join(path, k), depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_values(v, f"{path}[{i}]", depth + 1)
