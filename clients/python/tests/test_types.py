"""The message types are checked, not only declared.

- Every JSON example of ``docs/protocol/*.md`` (the test vectors the Rust server's own types
  decode and re-encode, ``crates/protocol/tests/doc_vectors*.rs``) is assigned to the type this
  package declares for it, and ``mypy --strict`` must accept all of them; each example made wrong
  on purpose (an unknown field, an unknown ``sb``) must be refused. ``../doc_examples.py`` writes
  the file; ``mypy`` also checks the package and ``tests/types/usage.py``.
- The ``type`` tags of every system's message unions, the v2 frame kinds and recovery reasons
  and the system streams are the ones the Rust sources list.

No server is needed.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from switchboard_clients import _base, afc, collab, dcdock, laptimes, race, v2

PY = Path(__file__).resolve().parents[1]
CLIENTS = PY.parent
DOCS = CLIENTS.parent / "docs" / "protocol"
GENERATED = PY / "tests" / "types" / "doc_examples_generated.py"

sys.path.insert(0, str(CLIENTS))
import doc_examples  # noqa: E402  (clients/doc_examples.py)

MODULES: dict[str, ModuleType] = {
    "laptimes": laptimes,
    "afc": afc,
    "race": race,
    "collab": collab,
    "dcdock": dcdock,
}


@pytest.fixture(scope="module")
def catalogue() -> doc_examples.Catalogue:
    return doc_examples.catalogue()


def test_every_documented_example_type_checks_with_mypy_strict(
    catalogue: doc_examples.Catalogue,
) -> None:
    GENERATED.write_text(doc_examples.python(catalogue), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"],
        cwd=PY,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(doc_examples.summary(catalogue))
    assert run.returncode == 0, f"mypy --strict failed:\n{run.stdout}{run.stderr}"
    assert "Success: no issues found" in run.stdout, run.stdout


def test_every_tagged_block_of_the_documents_is_an_example(
    catalogue: doc_examples.Catalogue,
) -> None:
    """Counted independently of the script: no tagged block is missed."""
    for doc in sorted(DOCS.glob("*-v1.md")) + [DOCS / "v2.md"]:
        text = doc.read_text(encoding="utf-8")
        for tag in doc_examples.TAGS:
            n = len(re.findall(rf"^\s*```json {tag}\s*$", text, re.M))
            assert catalogue.count(doc.name, tag) == n, (doc.name, tag)
    per_system = {s: {e.tag for e in catalogue.examples if e.system == s} for s in MODULES}
    for system, tags in per_system.items():
        want = {"server-to-client", "v2-client", "v2-server"} | (
            {"publish"} if system in doc_examples.PUBLISHERS else set()
        )
        assert want <= tags, (system, want - tags)
    assert len(catalogue.examples) >= 137
    assert len(doc_examples.mutants(catalogue)) >= len(catalogue.examples)


def _members(union: Any) -> list[Any]:
    args = typing.get_args(union)
    if typing.get_origin(union) is typing.Union:
        return [typing.get_origin(a) or a for a in args]
    return [typing.get_origin(union) or union]


def _tags(members: list[Any], key: str = "type") -> tuple[set[str], bool]:
    """The literal ``key`` tags of the members, and whether one takes any string."""
    literals: set[str] = set()
    open_ = False
    for member in members:
        hint = typing.get_type_hints(member).get(key)
        if hint is None:
            continue
        if hint is str:
            open_ = True
        else:
            assert typing.get_origin(hint) is typing.Literal, (member, hint)
            literals.update(typing.get_args(hint))
    return literals, open_


@pytest.mark.parametrize("system", list(MODULES))
def test_message_tags_are_the_rust_servers(system: str) -> None:
    rust = doc_examples.rust_constants()[system]
    module = MODULES[system]
    for union, listed in (
        (module.ClientMessage, rust["client_types"]),
        (module.ServerMessage, rust["server_types"]),
    ):
        literals, open_ = _tags(_members(union))
        never = literals - set(listed)
        assert not never, f"{system}: tags the server never uses: {never}"
        if not open_:
            untyped = set(listed) - literals
            assert not untyped, f"{system}: tags without a type: {untyped}"
    if rust["stream"] is not None:
        assert module.STREAM == rust["stream"]


def test_v2_frames_are_the_rust_servers() -> None:
    rust = doc_examples.rust_constants()["v2"]
    kinds, open_ = _tags(_members(v2.ServerFrame), "sb")
    assert not open_ and kinds == set(rust["server_kinds"]) == set(v2.SERVER_KINDS)
    assert set(typing.get_args(v2.NotRecoveredReason)) == set(rust["reasons"])
    assert list(v2.NOT_RECOVERED_REASONS) == rust["reasons"]
    assert v2.SUBPROTOCOL == rust["subprotocol"] == _base.SUBPROTOCOL
    assert {k for k, _ in doc_examples.FRAMES.items()} == set(rust["server_kinds"])


def test_the_notice_keys_the_script_knows_are_the_typeddicts() -> None:
    assert set(laptimes.ChangeNotice.__annotations__) == doc_examples.NOTICE_KEYS


def test_client_options_are_the_constructors_keywords() -> None:
    params = inspect.signature(_base.ReconnectingClient.__init__).parameters
    keywords = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(_base.ClientOptions.__annotations__) == keywords


def test_the_package_is_marked_typed() -> None:
    assert (PY / "switchboard_clients" / "py.typed").is_file()
