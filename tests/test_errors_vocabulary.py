"""One vocabulary of errors: every code the code sends is in `errors.CODES`, with the status it is
sent with, and docs/api.md's table is the one generated from it (scripts/error-table)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from quartchat.errors import CODES, HTTP_CODES, with_error_table

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"


@dataclass(frozen=True)
class Raised:
    code: str
    status: int | None  # None when the status is not a literal
    where: str


def raised_codes() -> list[Raised]:
    """Every code given to `APIError(status, code, …)` in quartchat/, read from the syntax tree:
    the literal, or each literal a conditional code argument can take."""
    found = []
    for path in sorted((ROOT / "quartchat").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and _name(node.func) == "APIError"):
                continue
            arguments = dict(enumerate(node.args)) | {k.arg: k.value for k in node.keywords}
            code = arguments.get(1, arguments.get("code"))
            status = arguments.get(0, arguments.get("status_code"))
            literal = status.value if isinstance(status, ast.Constant) else None
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for part in ast.walk(code) if code is not None else ():
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found.append(
                        Raised(part.value, literal if isinstance(literal, int) else None, where)
                    )
    return found


def _name(function: ast.expr) -> str | None:
    if isinstance(function, ast.Name):
        return function.id
    return function.attr if isinstance(function, ast.Attribute) else None


def test_the_syntax_tree_finds_the_codes_raised_directly_and_through_helpers() -> None:
    codes = {r.code for r in raised_codes()}
    # A view's own raise, a helper's (unauthenticated()), and a stream's error event's.
    assert {"STALE", "UNAUTHENTICATED", "TURN_CONFLICT", "SERVER_SHUTTING_DOWN"} <= codes


def test_every_code_the_code_raises_is_in_the_vocabulary() -> None:
    missing = sorted({f"{r.code} ({r.where})" for r in raised_codes() if r.code not in CODES})
    missing += sorted(
        f"{code} (errors.HTTP_CODES)" for code in set(HTTP_CODES.values()) - CODES.keys()
    )
    assert not missing, (
        "codes raised but not in quartchat/errors.py's CODES; add a line for each, then run "
        f"scripts/error-table: {', '.join(missing)}"
    )


def test_every_code_is_raised_with_a_status_the_vocabulary_gives_it() -> None:
    wrong = [
        f"{r.code} with {r.status} at {r.where}, CODES says {CODES[r.code].statuses}"
        for r in raised_codes()
        if r.code in CODES and r.status is not None and r.status not in CODES[r.code].statuses
    ]
    assert not wrong


def test_the_api_doc_s_error_table_is_the_one_generated_from_the_vocabulary() -> None:
    document = API_DOC.read_text()
    assert with_error_table(document) == document, (
        "docs/api.md's error table differs from quartchat/errors.py's CODES: run scripts/error-table"
    )
