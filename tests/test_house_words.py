"""Docs, params and code describe the project, not how it was made: no work-session
narrative, issue numbers, people or paths of one machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROSE_PATTERNS = {
    "session narrative": re.compile(r"\b(this|that|previous|next|last|earlier|first|second) session\b"
                                    r"|\bsession \d+\b|\bin (a|the) session\b|\bpaper at hand\b", re.I),
    "issue number": re.compile(r"\bissues? #?\d+\b|\bitem \d+ of\b|#\d{1,4}\b(?!\w)(?=[\s:;,.)])", re.I),
    "person": re.compile(r"\bhelpers?\b|\bthe lead\b|\bengineers?\b|\bmaintainers?\b", re.I),
    "bare session": re.compile(r"\bsessions?\b", re.I),
}
PATH_PATTERN = re.compile(r"(?<![\w.~])/(tmp|work|home|Users|root)/")
ALLOWED = {
    # HTTP sessions of requests (one per thread) and onnxruntime's session options: code, not narrative.
    "bare session": re.compile(r"requests\.Session|Session (per|each)|sessions are not thread-safe|one Session"
                               r"|_sessions\b|\bsession\(\)|\.session\b|def session\b|\"session\"|start_new_session"
                               r"|\"session\.intra_op\.",
                               re.I),
    # onnx's graph-building module
    "person": re.compile(r"\bonnx\.helper\.", re.I),
}
SCANNED_TEXT = ("README.md", "params.yaml", "dvc.yaml", "Makefile", "pyproject.toml")
SCANNED_TREES = (("docs", "*.md"), ("src/img2spec", "*.py"), ("src/img2spec", "*.yaml"))


def _files() -> list[Path]:
    files = [REPO / name for name in SCANNED_TEXT if (REPO / name).is_file()]
    for tree, glob in SCANNED_TREES:
        files += sorted((REPO / tree).rglob(glob))
    return files


def hits(text: str, patterns: dict[str, re.Pattern], paths: bool = True) -> list[tuple[int, str, str]]:
    """(line number, kind, line) of every forbidden word in `text`, allowlisted uses excepted."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for kind, pattern in patterns.items():
            if pattern.search(line) and not (kind in ALLOWED and ALLOWED[kind].search(line)):
                found.append((n, kind, line.strip()))
        if paths and PATH_PATTERN.search(line):
            found.append((n, "machine path", line.strip()))
    return found


def test_patterns_catch_what_they_should_and_spare_http_sessions():
    bad = ["as in session 2", "this session a rerun", "(issue 18)", "Issue 14 item 3", "helpers editing code",
           "script in /tmp/frozen", "transcribed without the paper at hand", "python x.py --root /work/main", "a screenshot from /home/ann"]
    for line in bad:
        assert hits(line, PROSE_PATTERNS), line
    fine = ["one requests.Session per thread", "s = requests.Session()", "self._sessions = []",
            "GET with retries; one Session per thread", "the issue tracker", "tmp_path / 'work'", "data/raw/truth/",
            "node = onnx.helper.make_node('Concat', inputs, outputs)"]
    for line in fine:
        assert not hits(line, PROSE_PATTERNS), line


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_session_issue_person_or_machine_words(path):
    found = hits(path.read_text(errors="replace"), PROSE_PATTERNS)
    assert not found, "\n".join(f"{path.relative_to(REPO)}:{n}: [{kind}] {line}" for n, kind, line in found)


def test_tests_name_no_issues_or_sessions():
    """Test names and comments say what behaviour they check, not which ticket asked for it (this
    file's own examples excepted)."""
    patterns = {k: PROSE_PATTERNS[k] for k in ("session narrative", "issue number")}  # "helper" functions are fine here
    found = []
    for path in sorted((REPO / "tests").glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        found += [f"{path.name}:{n}: [{kind}] {line}" for n, kind, line in hits(path.read_text(), patterns, paths=False)]
    assert not found, "\n".join(found)
