"""``container_file_citation`` spans: the link, else the path, else the name; never a different file's name."""

from __future__ import annotations

import pytest

from cellbox.services.citations import Cited, cite


def _span(text: str, path: str) -> tuple[int, int]:
    [cited] = cite(text, [("file_1", path)])
    assert (cited.file_id, cited.path) == ("file_1", path)
    return cited.start, cited.end


def _covered(text: str, path: str) -> str:
    start, end = _span(text, path)
    return text[start:end]


@pytest.mark.parametrize(
    ("text", "covered"),
    [
        ("Here is the [chart](sandbox:/mnt/data/chart.png) you asked for.", "[chart](sandbox:/mnt/data/chart.png)"),
        ("Download [the chart](/mnt/data/chart.png)", "[the chart](/mnt/data/chart.png)"),
        ("![plot](sandbox:/mnt/data/chart.png)\nDone", "![plot](sandbox:/mnt/data/chart.png)"),
        ("[chart.png]( sandbox:/mnt/data/chart.png )", "[chart.png]( sandbox:/mnt/data/chart.png )"),
    ],
)
def test_a_markdown_link_is_covered_whole(text: str, covered: str) -> None:
    start, end = _span(text, "/mnt/data/chart.png")
    assert text[start] in "[!"
    assert text[end - 1] == ")"
    assert text[start:end] == covered


def test_link_span_indices() -> None:
    text = "Here: [chart](sandbox:/mnt/data/chart.png)."
    assert _span(text, "/mnt/data/chart.png") == (6, 42)


def test_an_image_link_starts_at_the_bang() -> None:
    text = "See ![img](/mnt/data/x.png)"
    assert _span(text, "/mnt/data/x.png") == (4, len(text))


def test_a_link_is_preferred_over_an_earlier_bare_mention() -> None:
    text = "I saved /mnt/data/x.csv; get it here: [x](sandbox:/mnt/data/x.csv)"
    assert _covered(text, "/mnt/data/x.csv") == "[x](sandbox:/mnt/data/x.csv)"


@pytest.mark.parametrize(
    ("text", "covered"),
    [
        ("The table is at /mnt/data/x.csv now", "/mnt/data/x.csv"),
        ("The table is at sandbox:/mnt/data/x.csv now", "sandbox:/mnt/data/x.csv"),
        ("`/mnt/data/x.csv`", "/mnt/data/x.csv"),
        ("/mnt/data/x.csv, then /mnt/data/y.csv", "/mnt/data/x.csv"),
    ],
)
def test_a_bare_path_is_covered(text: str, covered: str) -> None:
    assert _covered(text, "/mnt/data/x.csv") == covered


def test_a_path_is_preferred_over_an_earlier_bare_name() -> None:
    text = "x.csv is saved as /mnt/data/x.csv"
    assert _span(text, "/mnt/data/x.csv") == (18, len(text))


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("I wrote x.csv for you", 8),
        ("x.csv", 0),
        ("Open `x.csv` in a spreadsheet", 6),
        ("(x.csv)", 1),
        ("files: x.csv, y.csv", 7),
    ],
)
def test_a_bare_filename_is_covered(text: str, start: int) -> None:
    assert _span(text, "/mnt/data/x.csv") == (start, start + len("x.csv"))


def test_a_file_in_a_subfolder_is_named_by_its_relative_path() -> None:
    text = "Results are in out/x.csv"
    assert _covered(text, "/mnt/data/out/x.csv") == "out/x.csv"


@pytest.mark.parametrize(
    "text",
    ["Nothing to see here.", "", "The file x.csvx is different", "Saved /tmp/x.csv", "see /mnt/data/other/x.csv"],
)
def test_an_unmentioned_file_is_cited_at_zero(text: str) -> None:
    assert _span(text, "/mnt/data/x.csv") == (0, 0)


@pytest.mark.parametrize(
    "text",
    [
        "Backup: a.csv.bak",
        "Backup: /mnt/data/a.csv.bak",
        "Backup: sandbox:/mnt/data/a.csv.bak",
        "Backup: [backup](sandbox:/mnt/data/a.csv.bak)",
        "Variant: a.csv-old",
        "Other: ba.csv",
        "Other: /mnt/data/b/a.csv",
    ],
)
def test_a_longer_name_is_not_a_mention(text: str) -> None:
    assert _span(text, "/mnt/data/a.csv") == (0, 0)


def test_prefix_names_each_find_their_own_mention() -> None:
    text = "Wrote mydata.csv and data.csv; also a.csv.bak and a.csv"
    by_path = {c.path: c for c in cite(text, [
        ("f1", "/mnt/data/data.csv"), ("f2", "/mnt/data/mydata.csv"),
        ("f3", "/mnt/data/a.csv"), ("f4", "/mnt/data/a.csv.bak"),
    ])}
    assert {path: text[c.start:c.end] for path, c in by_path.items()} == {
        "/mnt/data/data.csv": "data.csv", "/mnt/data/mydata.csv": "mydata.csv",
        "/mnt/data/a.csv": "a.csv", "/mnt/data/a.csv.bak": "a.csv.bak",
    }
    assert by_path["/mnt/data/data.csv"].start == text.index(" data.csv") + 1
    assert by_path["/mnt/data/a.csv"].start == text.rindex("a.csv")


def test_citations_are_sorted_by_start_with_unmentioned_first() -> None:
    text = "First [b](sandbox:/mnt/data/b.png), then a.csv ok"
    files = [("fa", "/mnt/data/a.csv"), ("fz", "/mnt/data/z.txt"), ("fb", "/mnt/data/b.png")]
    assert [(c.file_id, c.start) for c in cite(text, files)] == [("fz", 0), ("fb", 6), ("fa", text.index("a.csv"))]


def test_unmentioned_files_keep_their_given_order() -> None:
    files = [("f3", "/mnt/data/c.txt"), ("f1", "/mnt/data/a.txt"), ("f2", "/mnt/data/b.txt")]
    assert [c.file_id for c in cite("no names here", files)] == ["f3", "f1", "f2"]


def test_no_files_no_citations() -> None:
    assert cite("see /mnt/data/x.csv", []) == []


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/mnt/data/chart.png", "chart.png"),
        ("/mnt/data/out/deep/report.pdf", "report.pdf"),
        ("/mnt/data/a b.txt", "a b.txt"),
    ],
)
def test_filename_is_the_basename(path: str, name: str) -> None:
    assert Cited("file_1", path, 0, 0).filename == name


def test_regex_characters_in_names_are_literal() -> None:
    text = "see results (1).csv and [plot+1](sandbox:/mnt/data/plot+1.png)"
    assert _covered(text, "/mnt/data/results (1).csv") == "results (1).csv"
    assert _covered(text, "/mnt/data/plot+1.png") == "[plot+1](sandbox:/mnt/data/plot+1.png)"
    assert _span("resultsX(1)Xcsv", "/mnt/data/results (1).csv") == (0, 0)


@pytest.mark.parametrize(
    ("text", "covered"),
    [("I saved the table to data.csv.", "data.csv"), ("It is at /mnt/data/data.csv.", "/mnt/data/data.csv")],
)
def test_a_mention_at_the_end_of_a_sentence_is_cited(text: str, covered: str) -> None:
    assert _covered(text, "/mnt/data/data.csv") == covered
