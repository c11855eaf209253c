"""OutputLayout names every path in OUT, and nothing else in the package does (bids/outputs.py)."""

import ast
import re
from pathlib import Path

import pytest

from bids_harmonize.bids.outputs import BIDSIGNORE, OutputLayout, output_path
from bids_harmonize.bids.records import ImageRecord


def test_the_layout_names_every_path_in_out():
    out = Path("/out")
    layout = OutputLayout(out)
    assert (layout.description, layout.bidsignore) == (out / "dataset_description.json", out / ".bidsignore")
    assert (layout.sites_table, layout.sites_dictionary) == (out / "sites.tsv", out / "sites.json")
    assert (layout.models, layout.model("T2w")) == (out / "models", out / "models/T2w")
    assert layout.run_config("20250101-000000_ab") == out / "logs/config-20250101-000000_ab.json"
    assert layout.crash_report("r1") == out / "logs/crash-r1.txt"
    assert layout.training_log("T1w", "r1") == out / "logs/training-T1w-r1.jsonl"
    assert (layout.citation(".md"), layout.citation(".bib")) == (out / "logs/CITATION.md", out / "logs/CITATION.bib")
    assert (layout.participant_report("01"), layout.group_report) == (out / "sub-01.html", out / "group.html")
    assert layout.locks == out / ".locks"
    record = ImageRecord(Path("/raw/sub-01/anat/sub-01_T1w.nii.gz"), "sub-01/anat/sub-01_T1w.nii.gz", "01", None, "T1w")
    assert layout.output(record, "native_harmonized") == out / "sub-01/anat/sub-01_desc-harmonized_T1w.nii.gz"
    assert layout.output(record, "template_preproc", "MNI152NLin2009cSym", 2) == output_path(
        out, record, "template_preproc", "MNI152NLin2009cSym", 2
    )


def test_a_template_grid_output_without_its_template_is_refused():
    record = ImageRecord(Path("/raw/sub-01/anat/sub-01_T1w.nii.gz"), "sub-01/anat/sub-01_T1w.nii.gz", "01", None, "T1w")
    with pytest.raises(ValueError, match="template grid"):
        OutputLayout(Path("/out")).output(record, "template_harmonized")


def test_the_layout_finds_what_runs_left_in_logs(tmp_path):
    layout = OutputLayout(tmp_path)
    assert layout.crash_files() == [] and layout.training_logs("T1w") == [] and layout.run_configs() == []
    for name in (
        "crash-r2.txt",
        "crash-20250101-node.txt",
        "training-T1w-r1.jsonl",
        "training-T2w-r1.jsonl",
        "config-b.json",
        "config-a.json",
        "CITATION.md",
    ):
        (tmp_path / "logs").mkdir(exist_ok=True)
        (tmp_path / "logs" / name).write_text("")
    assert [p.name for p in layout.crash_files()] == ["crash-20250101-node.txt", "crash-r2.txt"]
    assert [p.name for p in layout.training_logs("T1w")] == ["training-T1w-r1.jsonl"]
    assert [p.name for p in layout.run_configs()] == ["config-a.json", "config-b.json"]


def test_bidsignore_patterns_are_the_layouts_names():
    assert BIDSIGNORE[:8] == ("sites.tsv", "sites.json", "/models", "/logs", "/figures", "*.html", "/*.png", "*_xfm.*")
    assert BIDSIGNORE[8:] == ("*_volumes.tsv", "*_volumes.json", "/group_volume*.tsv")


# Literals that name something in OUT, and the places where the same string names something
# else: the simulated raw dataset's own site table, deepbet's weights folder, the raw dataset's
# top-level folders that discovery skips.
OUT_NAMES = {"sites.tsv", "sites.json", "models", "logs", ".locks", "group.html", "CITATION.md", "CITATION.bib"}
OUT_PATTERNS = re.compile(r"^(training-|config-|crash-)|^sub-.*\.html$|(^|/)logs/")
NOT_OUT = {
    ("simulate/bids_io.py", "sites.tsv"),
    ("simulate/bids_io.py", "sites.json"),
    ("preproc/brainmask.py", "models"),
    ("bids/layout.py", "models"),
}


def _string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    skip = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # an f-string as its template: f"sub-{x}.html" -> "sub-{}.html"
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            found.append((node.lineno, "".join(parts)))
            skip.update(id(v) for v in node.values)  # its parts are checked as the whole
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found.append((node.lineno, node.value))
    return found


def test_no_path_in_out_is_named_outside_the_layout():
    package = Path(__file__).resolve().parents[2] / "bids_harmonize"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        if where == "bids/outputs.py":
            continue
        for line, text in _string_literals(ast.parse(path.read_text(encoding="utf-8"))):
            if (text in OUT_NAMES and (where, text) not in NOT_OUT) or OUT_PATTERNS.search(text):
                offenders.append(f"{where}:{line}: {text!r}")
    assert not offenders, "OUT paths named outside bids/outputs.py (use OutputLayout):\n" + "\n".join(offenders)
