#!/usr/bin/env python3
"""Every JSON example of the protocol documents, assigned to its declared client type.

The fenced blocks of ``docs/protocol/*.md`` tagged ``json client-to-server``,
``json server-to-client``, ``json publish``, ``json v2-client`` and ``json v2-server`` are the
protocol's test vectors: ``crates/protocol/tests/doc_vectors.rs`` and ``doc_vectors_v2.rs``
decode each one with the Rust server's own types and re-encode it unchanged. They are therefore
the truth the client types are checked against: this script writes one TypeScript file and one
Python file that assign every vector to the type a client declares for it, e.g.

    // docs/protocol/race-v1.md:112 (server-to-client)
    const race_v1_L112: MessageOfType<race.ServerMessage, "subscribed"> = {...};

    race_v1_L112: race.ServerMessage = {...}

and ``tsc --noEmit`` / ``mypy --strict`` must accept both files (``js/test/types.test.js``,
``python/tests/test_types.py``). A client type that drifts from the protocol (a field renamed, a
required field made optional or missing, a wrong literal) makes a documented example fail.

Which type: the document names the system (``<system>-v1.md``; ``v2.md`` shows messages of every
system), the tag the direction, and the example itself its kind: the ``sb`` of a v2 frame picks
the frame type, and the ``type`` of a system message picks the member of the system's union (in
TypeScript explicitly with ``MessageOfType``; in Python the union's ``Literal`` tags do it). A
laptimes message without ``type`` is a change notice.

What is not a vector is not checked, as in the Rust tests: blocks without a tag (HTTP response
bodies, checked here against the HTTP response types when their section names the endpoint),
``http`` transcripts, and the refused inputs the documents describe in prose and tables (they
never stand in a tagged block: an error case is shown by its error *reply*, which is a valid
server message and is checked as one). A ``json`` block with a tag this script does not know
stops it, so a new kind of block is classified on purpose.

Usage: ``doc_examples.py [--docs DIR] [--ts FILE] [--py FILE]``; prints a summary per document.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "protocol"
CRATES = HERE.parent / "crates"

SYSTEMS = ("laptimes", "afc", "race", "collab", "dcdock")
V1_TAGS = ("client-to-server", "server-to-client", "publish")
V2_TAGS = ("v2-client", "v2-server")
TAGS = V1_TAGS + V2_TAGS

#: The systems with an HTTP publish endpoint (and so a ``PublishBody`` type).
PUBLISHERS = ("afc", "race", "collab", "dcdock")

#: v2 server frame kind -> frame type (same name in both languages); ``True``: generic in the
#: system message it carries.
FRAMES = {
    "session": ("SessionFrame", False),
    "pub": ("PubFrame", True),
    "msg": ("MsgFrame", True),
    "subscribed": ("SubscribedFrame", False),
    "ack": ("AckFrame", False),
    "gap": ("GapFrame", False),
    "error": ("ErrorFrame", False),
}

#: Untagged blocks that are HTTP response bodies: the section heading that names the endpoint ->
#: the response type of that system module.
RESPONSES = {
    "GET /health": "Health",
    "GET /stats": "Stats",
    "GET /api/ws/stats": "Stats",
}

#: The fields ``laptimes.ChangeNotice`` declares in Python. A notice may carry others (relayed
#: untouched), which a ``TypedDict`` cannot declare (mypy has no PEP 728 ``extra_items``): on a
#: notice with such fields, and only there, the Python check lets the unknown keys through with
#: ``# type: ignore[typeddict-unknown-key]`` (wrong types and missing keys still fail; an ignore
#: that is not needed fails too). The TypeScript check (an index signature) sees every field.
#: ``python/tests/test_types.py`` checks this set against the ``TypedDict``.
NOTICE_KEYS = frozenset({"table", "operation", "timestamp"})
PY_OPEN = "  # type: ignore[typeddict-unknown-key]"


class DocError(Exception):
    """A document this script cannot classify."""


@dataclass
class Block:
    """One fenced block of a document."""

    doc: str
    line: int
    info: str
    text: str
    heading: str


@dataclass
class Example:
    """A checked example and the type it is assigned to."""

    doc: str
    system: Optional[str]  # None: v2.md (messages of every system)
    tag: str  # one of TAGS, or "response"
    line: int
    text: str
    value: Any
    ts_type: str = ""
    py_type: str = ""
    py_open: bool = False

    @property
    def name(self) -> str:
        return re.sub(r"\W", "_", Path(self.doc).stem) + f"_L{self.line}"

    @property
    def where(self) -> str:
        return f"docs/protocol/{self.doc}:{self.line}"


@dataclass
class Catalogue:
    """Everything found in the documents."""

    examples: list[Example] = field(default_factory=list)
    skipped: list[Block] = field(default_factory=list)

    def count(self, doc: str, tag: str) -> int:
        return sum(1 for e in self.examples if e.doc == doc and e.tag == tag)


def blocks(doc: str, text: str) -> list[Block]:
    """Every fenced block (also when indented in a list item), with the heading above it."""
    out: list[Block] = []
    heading = ""
    current: Optional[Block] = None
    lines: list[str] = []
    for i, line in enumerate(text.splitlines(), 1):
        trimmed = line.strip()
        if current is None:
            if trimmed.startswith("#"):
                heading = trimmed.lstrip("#").strip()
            elif trimmed.startswith("```"):
                current = Block(doc, i, trimmed[3:].strip(), "", heading)
                lines = []
        elif trimmed == "```":
            current.text = "\n".join(lines).strip()
            out.append(current)
            current = None
        else:
            lines.append(line)
    if current is not None:
        raise DocError(f"{doc}:{current.line}: unterminated code block")
    return out


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key `{k}`")
        obj[k] = v
    return obj


def _parse(block: Block) -> Any:
    try:
        return json.loads(block.text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as e:
        raise DocError(f"{block.doc}:{block.line}: not JSON: {e}") from None


def _type_of(value: Any) -> Optional[str]:
    t = value.get("type") if isinstance(value, dict) else None
    return t if isinstance(t, str) else None


class Types:
    """The type expressions of one language."""

    def __init__(self, ts: bool) -> None:
        self.ts = ts

    def generic(self, name: str, arg: str) -> str:
        return f"{name}<{arg}>" if self.ts else f"{name}[{arg}]"

    def message(self, system: Optional[str], direction: str, value: Any) -> str:
        """The type of one system message: ``direction`` is ``Client`` or ``Server``."""
        union = f"{system}.{direction}Message" if system else f"Any{direction}Message"
        kind = _type_of(value)
        if kind is None:
            # Only a laptimes notice has no `type`.
            return "laptimes.ChangeNotice" if system in ("laptimes", None) else union
        if self.ts:
            return f"MessageOfType<{union}, {json.dumps(kind)}>"
        return union


def classify(doc: str, block: Block, value: Any) -> Example:
    """The example of ``block`` with its types, or :class:`DocError`."""
    system = None if doc == "v2.md" else doc.removesuffix("-v1.md")
    tag = block.info.split(None, 1)[1]
    ex = Example(doc, system, tag, block.line, block.text, value)
    if system is None and tag in V1_TAGS:
        raise DocError(f"{doc}:{block.line}: a v1 block in v2.md")
    for lang in (Types(ts=True), Types(ts=False)):
        if tag == "client-to-server":
            t = lang.message(system, "Client", value)
        elif tag == "server-to-client":
            t = lang.message(system, "Server", value)
        elif tag == "publish":
            if system not in PUBLISHERS:
                raise DocError(f"{doc}:{block.line}: {system} has no publish endpoint")
            t = f"{system}.PublishBody"
        elif tag == "v2-client":
            inner = value.get("msg") if isinstance(value, dict) else None
            t = lang.generic("v2.ClientFrame", lang.message(system, "Client", inner))
        else:  # v2-server
            sb = value.get("sb") if isinstance(value, dict) else None
            frame = FRAMES.get(sb) if isinstance(sb, str) else None
            inner = value.get("msg") if isinstance(value, dict) else None
            if frame is None:
                # Unknown kind: the whole union, so that the type check reports it.
                union = f"{system}.ServerMessage" if system else "AnyServerMessage"
                t = lang.generic("v2.ServerFrame", union)
            elif frame[1]:
                t = lang.generic(f"v2.{frame[0]}", lang.message(system, "Server", inner))
            else:
                t = f"v2.{frame[0]}"
        if lang.ts:
            ex.ts_type = t
        else:
            ex.py_type = t
    ex.py_open = (
        ex.py_type == "laptimes.ChangeNotice"
        and isinstance(value, dict)
        and bool(set(value) - NOTICE_KEYS)
    )
    return ex


def catalogue(docs: Path = DOCS) -> Catalogue:
    """Every example of ``docs/protocol/*.md``."""
    cat = Catalogue()
    names = [f"{s}-v1.md" for s in SYSTEMS] + ["v2.md"]
    others = sorted(p.name for p in docs.glob("*.md") if p.name not in names + ["README.md"])
    if others:
        raise DocError(f"documents of no known system: {others} (add the system to SYSTEMS)")
    for doc in names:
        for block in blocks(doc, (docs / doc).read_text(encoding="utf-8")):
            words = block.info.split()
            if not words or words[0] != "json":
                cat.skipped.append(block)
                continue
            value = _parse(block)
            if len(words) == 1:
                endpoint = next((k for k in RESPONSES if f"`{k}`" in block.heading), None)
                if endpoint is None or doc == "v2.md":
                    cat.skipped.append(block)
                    continue
                system = doc.removesuffix("-v1.md")
                t = f"{system}.{RESPONSES[endpoint]}"
                cat.examples.append(
                    Example(doc, system, "response", block.line, block.text, value, t, t)
                )
                continue
            if len(words) != 2 or words[1] not in TAGS:
                raise DocError(f"{doc}:{block.line}: unknown block tag `{block.info}`")
            cat.examples.append(classify(doc, block, value))
    return cat


#: Types that take any field (a laptimes notice) or any JSON (an AFC publish body): an unknown
#: field is no mistake there.
OPEN_TYPES = ("laptimes.ChangeNotice", "afc.PublishBody")


@dataclass
class Mutant:
    """A documented example made wrong on purpose: the type check must refuse it."""

    of: Example
    why: str
    value: Any

    @property
    def name(self) -> str:
        return f"{self.of.name}_{re.sub(r'[^a-z]+', '_', self.why)}"


def mutants(cat: Catalogue) -> list[Mutant]:
    """For every example, a field no type declares; for every v2 server frame, an unknown ``sb``.
    Each must fail to type-check, so no example's type is vacuous (``any``-like)."""
    out: list[Mutant] = []
    for ex in cat.examples:
        if not isinstance(ex.value, dict):
            continue
        if ex.ts_type not in OPEN_TYPES:
            out.append(Mutant(ex, "unknown field", {"unknownField": 1, **ex.value}))
        if ex.tag == "v2-server":
            out.append(Mutant(ex, "unknown sb", {**ex.value, "sb": "bogus"}))
    return out


def typescript(cat: Catalogue) -> str:
    """The TypeScript check file (imports the package by its own name)."""
    out = [
        "// Generated by clients/doc_examples.py from docs/protocol/*.md: do not edit.",
        "// Every documented example, assigned to the type the client declares for it.",
        "import type { MessageOfType } from 'switchboard-clients';",
        "import type * as v2 from 'switchboard-clients/v2';",
    ]
    out += [f"import type * as {s} from 'switchboard-clients/{s}';" for s in SYSTEMS]
    out += [
        "",
        "type AnyClientMessage = " + " | ".join(f"{s}.ClientMessage" for s in SYSTEMS) + ";",
        "type AnyServerMessage = " + " | ".join(f"{s}.ServerMessage" for s in SYSTEMS) + ";",
        "",
    ]
    for ex in cat.examples:
        body = ex.text.replace("\n", "\n  ")
        out.append(f"// {ex.where} ({ex.tag})")
        out.append(f"export const {ex.name}: {ex.ts_type} = {body};")
        out.append("")
    out.append("// ----- wrong on purpose: each must fail (an unused @ts-expect-error fails)")
    out.append("")
    for m in mutants(cat):
        out.append(f"// {m.of.where} with an {m.why}")
        out.append("// @ts-expect-error")
        value = json.dumps(m.value, ensure_ascii=False)
        out.append(f"export const {m.name}: {m.of.ts_type} = {value};")
        out.append("")
    return "\n".join(out)


def python(cat: Catalogue) -> str:
    """The Python check file."""
    out = [
        "# Generated by clients/doc_examples.py from docs/protocol/*.md: do not edit.",
        "# Every documented example, assigned to the type the client declares for it.",
        "from typing import Union",
        "",
        "from switchboard_clients import " + ", ".join(sorted(SYSTEMS + ("v2",))),
        "",
        "AnyClientMessage = Union[" + ", ".join(f"{s}.ClientMessage" for s in SYSTEMS) + "]",
        "AnyServerMessage = Union[" + ", ".join(f"{s}.ServerMessage" for s in SYSTEMS) + "]",
        "",
    ]
    for ex in cat.examples:
        out.append(f"# {ex.where} ({ex.tag})")
        # One line: a `# type: ignore` applies to the line the error is reported on.
        out.append(f"{ex.name}: {ex.py_type} = {ex.value!r}" + (PY_OPEN if ex.py_open else ""))
        out.append("")
    out.append("# ----- wrong on purpose: each must fail (mypy --strict reports an unused ignore)")
    out.append("")
    for m in mutants(cat):
        out.append(f"# {m.of.where} with an {m.why}")
        out.append(f"{m.name}: {m.of.py_type} = {m.value!r}  # type: ignore")
        out.append("")
    return "\n".join(out)


def summary(cat: Catalogue) -> str:
    """Examples per document and tag, and what was not checked."""
    docs = sorted({e.doc for e in cat.examples}, key=lambda d: (d == "v2.md", d))
    cols = TAGS + ("response",)
    rows: list[tuple[str, ...]] = [("document",) + cols + ("total",)]
    for doc in docs:
        counts = [cat.count(doc, t) for t in cols]
        rows.append((doc,) + tuple(str(c) for c in counts) + (str(sum(counts)),))
    totals = [sum(cat.count(d, t) for d in docs) for t in cols]
    rows.append(("all",) + tuple(str(c) for c in totals) + (str(sum(totals)),))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    open_py = [e.where for e in cat.examples if e.py_open]
    lines.append(f"wrong on purpose (must fail): {len(mutants(cat))}")
    lines.append(f"not examples (untagged or not JSON): {len(cat.skipped)} blocks")
    if open_py:
        lines.append(
            "laptimes notices with extra fields (tsc checks them all; mypy lets the extra keys"
            " through): " + ", ".join(open_py)
        )
    return "\n".join(lines)


def _rust_list(path: Path, name: str) -> list[str]:
    """The strings of ``const NAME: ... = [..];`` (or ``&[..]``) in a Rust file."""
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"const {name}: [^=]*= &?\[(.*?)\];", text, re.S)
    if m is None:
        raise DocError(f"{path}: no `const {name}`")
    return re.findall(r'"([^"]*)"', m.group(1))


def _rust_str(path: Path, name: str) -> Optional[str]:
    m = re.search(rf'const {name}: &str = "([^"]*)";', path.read_text(encoding="utf-8"))
    return m.group(1) if m else None


def rust_constants(crates: Path = CRATES) -> dict[str, Any]:
    """What the Rust server says about message kinds, read from its sources: per system the
    ``type`` tags of ``CLIENT_TYPES``/``SERVER_TYPES`` and the system stream; for v2 the server's
    frame kinds and recovery reasons (``doc_vectors_v2.rs``) and the subprotocol (``wire.rs``).
    The clients' tests compare their types' tags with these."""
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        src = crates / "protocol" / "src" / system / "v1.rs"
        out[system] = {
            "client_types": _rust_list(src, "CLIENT_TYPES"),
            "server_types": _rust_list(src, "SERVER_TYPES"),
            "stream": _rust_str(src, "SYSTEM_STREAM"),
        }
    tests = crates / "protocol" / "tests" / "doc_vectors_v2.rs"
    out["v2"] = {
        "server_kinds": _rust_list(tests, "SERVER_KINDS"),
        "reasons": _rust_list(tests, "REASONS"),
        "subprotocol": _rust_str(crates / "hub" / "src" / "wire.rs", "SUBPROTOCOL"),
    }
    return out


def manifest(cat: Catalogue) -> dict[str, Any]:
    """What the check files hold, and the Rust constants, for the tests."""
    return {
        "examples": [
            {"doc": e.doc, "tag": e.tag, "line": e.line, "ts_type": e.ts_type, "py_type": e.py_type}
            for e in cat.examples
        ],
        "mutants": len(mutants(cat)),
        "skipped": [{"doc": b.doc, "line": b.line, "info": b.info} for b in cat.skipped],
        "rust": rust_constants(),
    }


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=Path, default=DOCS, help="the protocol documents")
    ap.add_argument("--ts", type=Path, help="write the TypeScript check file here")
    ap.add_argument("--py", type=Path, help="write the Python check file here")
    ap.add_argument("--manifest", type=Path, help="write the examples and Rust constants (JSON)")
    args = ap.parse_args(argv)
    try:
        cat = catalogue(args.docs)
    except DocError as e:
        print(f"doc_examples.py: {e}", file=sys.stderr)
        return 1
    try:
        outputs: list[tuple[Optional[Path], Callable[[], str]]] = [
            (args.ts, lambda: typescript(cat)),
            (args.py, lambda: python(cat)),
            (args.manifest, lambda: json.dumps(manifest(cat), indent=1)),
        ]
        for path, text in outputs:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text(), encoding="utf-8")
    except DocError as e:
        print(f"doc_examples.py: {e}", file=sys.stderr)
        return 1
    print(summary(cat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
