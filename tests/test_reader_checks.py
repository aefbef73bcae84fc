"""The CSV and path checks of ``fh_utils.data.reader``, pinned down function by function.

Each test writes a tiny CSV (and, where sizes matter, a few 10 x 8 px PNGs) in ``tmp_path`` and asserts exactly
what a user sees: every problem as (file, CSV line or None, whole message), the order they come in, the error's
text, and the frame a clean read returns (its columns in order, their dtypes, index, values and ``attrs``). The
defaults of ``read_csv``/``read_split`` are exercised by calls that leave them out.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fh_utils.data.reader import (
    BOX_COLUMNS,
    DataProblem,
    DataValidationError,
    class_counts,
    csv_path,
    find_data_dir,
    images_dir,
    read_csv,
    read_split,
    validate_root,
)
from fh_utils.tasks import Head, Task, get_task

ST1, ST2 = get_task("st1"), get_task("st2")
LABELS = ["Daily", "Gender", "Embellishment"]
COLUMNS = ["image_name", *BOX_COLUMNS, *LABELS]
HEADER = ",".join(COLUMNS)
TEST_HEADER = ",".join(["image_name", *BOX_COLUMNS])
ST2_HEADER = TEST_HEADER + ",Color"
ADDED = ["line", "width", "height", "path"]  # what read_csv adds after the CSV's own columns
SKIP_HINT = "\nFix the data, or pass on_error='skip' to drop the bad rows (they are reported)."
NO_CSV = (
    "no Fashion-How24_sub{1,2}_{train,val}.csv here or in Dataset/; unpack the FASHION-HOW archive here, "
    "or run `python -m fh_utils demo-data DIR` for the synthetic demo data"
)


def png(path: Path, size: tuple[int, int] = (10, 8)) -> Path:
    """A solid PNG of ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 30, 200)).save(path)
    return path


def write(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def problems(call, *args, **kwargs) -> list[tuple[str, int | None, str]]:
    """The problems ``call`` raises, as (file, row, message)."""
    with pytest.raises(DataValidationError) as info:
        call(*args, **kwargs)
    return [(p.file, p.row, p.message) for p in info.value.problems]


def reader_logs(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "fh_utils.data.reader"]


# ------------------------------------------------------------------------------------ DataProblem and the error
def test_a_problem_prints_as_file_line_message_or_file_message():
    assert str(DataProblem("a.csv", 7, "bad")) == "a.csv:7: bad"
    assert str(DataProblem("a.csv", 0, "bad")) == "a.csv:0: bad"  # a line number is shown even when falsy
    assert str(DataProblem("a.csv", None, "bad")) == "a.csv: bad"


def test_error_text_counts_lists_and_hints_at_skip_only_for_row_problems():
    given = [DataProblem("a.csv", 3, "x"), DataProblem("b.json", None, "y")]
    err = DataValidationError(given)
    assert isinstance(err, ValueError)
    assert str(err) == "2 data problem(s):\na.csv:3: x\nb.json: y" + SKIP_HINT
    given.append(DataProblem("c.csv", 4, "z"))
    assert err.problems == given[:2]  # its own copy of the list
    assert str(DataValidationError([DataProblem("b.json", None, "y")])) == "1 data problem(s):\nb.json: y"


def test_error_text_shows_30_problems_then_counts_the_rest():
    many = [DataProblem("a.csv", line, "bad") for line in range(2, 33)]  # 31 problems
    assert str(DataValidationError(many[:30])).splitlines() == [
        "30 data problem(s):", *map(str, many[:30]), SKIP_HINT.strip()
    ]  # fmt: skip
    err = DataValidationError(many)
    assert err.problems == many
    assert str(err).splitlines() == [
        "31 data problem(s):", *map(str, many[:30]), "... and 1 more problems", SKIP_HINT.strip()
    ]  # fmt: skip
    assert str(DataValidationError(many[:5], max_lines=2)) == (
        "5 data problem(s):\na.csv:2: bad\na.csv:3: bad\n... and 3 more problems" + SKIP_HINT
    )


# ---------------------------------------------------------------------------------------- finding the files
def test_data_dir_is_the_root_or_its_dataset_folder(tmp_path):
    flat = write(tmp_path / "flat" / "Fashion-How24_sub2_val.csv", []).parent
    assert find_data_dir(flat) == flat
    assert find_data_dir(str(flat)) == flat
    nested = tmp_path / "nested"
    write(nested / "Dataset" / "Fashion-How24_sub1_train.csv", [])
    (nested / "notes.csv").write_text("a CSV, but not a FASHION-HOW one")
    assert find_data_dir(nested) == nested / "Dataset"
    assert csv_path(nested, "st2", "val") == nested / "Dataset" / "Fashion-How24_sub2_val.csv"
    assert csv_path(str(nested), ST1, "test") == nested / "Dataset" / "Fashion-How24_sub1_test.csv"
    assert images_dir(nested, "val") == nested / "Dataset" / "val"


def test_data_dir_errors_name_the_root(tmp_path):
    assert problems(find_data_dir, tmp_path / "nope") == [(str(tmp_path / "nope"), None, "data root does not exist")]
    (tmp_path / "Dataset").mkdir()
    (tmp_path / "Fashion-How24_sub1.csv").write_text("no split in the name")
    (tmp_path / "train").mkdir()
    assert problems(find_data_dir, tmp_path) == [(str(tmp_path), None, NO_CSV)]
    a_file = tmp_path / "Fashion-How24_sub1.csv"
    assert problems(images_dir, a_file, "train") == [(str(a_file), None, NO_CSV)]


# ---------------------------------------------------------------------------------------- the CSV as text
@pytest.mark.parametrize(
    "raw, message",
    [
        (b"PK\x03\x04" + HEADER.encode(),
         "a zip file (an Excel .xlsx?), not CSV text; export it from the spreadsheet as 'CSV UTF-8'"),
        (b"\xff\xfe" + HEADER.encode("utf-16-le"),
         "not valid utf-8 text (byte 0xff at offset 0); the file is UTF-16: re-save it as UTF-8 or pass "
         "encoding='utf-16'"),
        (b"\xfe\xff" + HEADER.encode("utf-16-be"),
         "not valid utf-8 text (byte 0xfe at offset 0); the file is UTF-16: re-save it as UTF-8 or pass "
         "encoding='utf-16'"),
        ((HEADER + "\n가.png,0,0,4,4,0,0,0\n").encode("cp949"),
         f"not valid utf-8 text (byte 0xb0 at offset {len(HEADER) + 1}); re-save the file as UTF-8 "
         "(e.g. `iconv -f cp949 -t utf-8`) or pass encoding='cp949'"),
        (b"", "empty CSV (no header, no rows)"),
        (b" \r\n\t\n", "empty CSV (no header, no rows)"),
        (b"\xef\xbb\xbf \n", "empty CSV (no header, no rows)"),
        ((HEADER + "\n\n  \n").encode(), "CSV has a header but no data rows"),
    ],
    ids=["xlsx", "utf16_le", "utf16_be", "cp949", "empty", "whitespace", "bom_only", "header_only"],
)  # fmt: skip
def test_unreadable_csv_text_is_one_problem_of_the_whole_file(tmp_path, raw, message):
    path = tmp_path / "x.csv"
    path.write_bytes(raw)
    with pytest.raises(DataValidationError) as info:
        read_csv(path, ST1, tmp_path)  # default encoding: utf-8, named so in the message
    assert [(p.file, p.row, p.message) for p in info.value.problems] == [(str(path), None, message)]
    assert str(info.value) == f"1 data problem(s):\n{path}: {message}"  # no skip hint: no row to drop


def test_encoding_argument_decodes_the_csv_and_is_named_when_wrong(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes((HEADER + "\nété.png,0,0,4,4,0,0,0\n").encode("latin-1"))
    offset = len(HEADER) + 1
    assert problems(read_csv, path, ST1, tmp_path, encoding="ascii", check_images=False) == [
        (str(path), None, f"not valid ascii text (byte 0xe9 at offset {offset}); re-save the file as UTF-8 "
                          "(e.g. `iconv -f cp949 -t utf-8`) or pass encoding='cp949'")
    ]  # fmt: skip
    df = read_csv(path, ST1, tmp_path, encoding="latin-1", check_images=False)
    assert df["image_name"].tolist() == ["été.png"]


def test_a_utf8_bom_is_not_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\na.png,0,0,4,4,0,0,0\r\n").encode())
    df = read_csv(path, ST1, tmp_path, check_images=False)
    assert list(df.columns) == COLUMNS + ADDED
    assert df["image_name"].tolist() == ["a.png"]


def test_line_numbers_count_blank_lines_and_records_spanning_lines(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(
        (HEADER + "\n"
         "a.png,0,0,4,4,0,0,0\n"       # line 2
         "\n"                          # 3: blank
         "   \n"                       # 4: only spaces, blank too
         '"x\r\ny.png",0,0,4,4,1,1,1\n'  # 5-6: a quoted cell over two lines, read verbatim
         "c.png,0,0,4,4,2,2,2\n").encode()  # 7
    )  # fmt: skip
    df = read_csv(path, ST1, tmp_path, check_images=False)
    assert df["line"].tolist() == [2, 5, 7]
    assert df["image_name"].tolist() == ["a.png", "x\r\ny.png", "c.png"]


def test_old_mac_line_endings_are_line_breaks_too(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes((HEADER + "\ra.png,0,0,4,4,0,0,0\r\rb.png,0,0,4,4,1,1,1\r").encode())  # CR only
    df = read_csv(path, ST1, tmp_path, check_images=False)
    assert df[["image_name", "line"]].values.tolist() == [["a.png", 2], ["b.png", 4]]


def test_malformed_lines_are_reported_by_line_sorted_with_the_row_problems(tmp_path, caplog):
    path = write(tmp_path / "x.csv", [
        "a.png,0,0,4,4,0,0,0",    # 2 ok
        ",",                      # 3 two empty fields: not a blank line
        "b.png,0,0,4,4,6,0,0",    # 4 a row problem between the line problems
        "junk",                   # 5 one field
        "c.png,0,0,4,4,0,0,0,9",  # 6 one field too many
        "d.png,0,0,4,4,1,1,1",    # 7 ok
        '"e.png,0,0,4,4,0,0,0',   # 8 an unclosed quote swallows line 9
        "f.png,0,0,4,4,0,0,0",
    ])  # fmt: skip
    expected = [
        (str(path), 3, "expected 8 fields (as in the header), found 2"),
        (str(path), 4, "Daily=6 out of range 0..5 (6 classes)"),
        (str(path), 5, "expected 8 fields (as in the header), found 1"),
        (str(path), 6, "expected 8 fields (as in the header), found 9"),
        (str(path), 8, "expected 8 fields (as in the header), found 1 (the record runs on to line 9: an unclosed "
                       "quote?)"),
    ]  # fmt: skip
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == expected
    with caplog.at_level(logging.WARNING, logger="fh_utils.data.reader"):
        df = read_csv(path, ST1, tmp_path, on_error="skip", check_images=False)
    assert df["line"].tolist() == [2, 7]
    skipped = [f"{f}:{row}: {m}" for f, row, m in expected]
    assert df.attrs["skipped"] == skipped
    assert reader_logs(caplog) == [(logging.WARNING, f"skipped 5 bad row(s) of {path}:\n" + "\n".join(skipped))]


def test_every_line_malformed_raises_and_skip_leaves_no_valid_rows(tmp_path):
    path = write(tmp_path / "x.csv", ["a.png,0,0"])
    bad = (str(path), 2, "expected 8 fields (as in the header), found 3")
    assert problems(read_csv, path, ST1, tmp_path) == [bad]
    assert problems(read_csv, path, ST1, tmp_path, on_error="skip") == [bad, (str(path), None, "no valid rows left")]


def test_duplicate_header_columns_are_each_reported_in_header_order(tmp_path):
    header = HEADER + ",BBox_xmin,image_name,BBox_xmin"
    path = write(tmp_path / "x.csv", ["a.png,0,0,4,4,0,0,0,0,b.png,0"], header=header)
    assert problems(read_csv, path, ST1, tmp_path) == [
        (str(path), None, "column 'image_name' appears 2 times in the header"),
        (str(path), None, "column 'BBox_xmin' appears 3 times in the header"),
    ]


def test_a_line_the_csv_module_cannot_read_is_named_by_its_line(tmp_path):
    path = write(tmp_path / "x.csv", ["a.png,0,0,4,4,0,0,0", "", "b" * 140_000 + ".png,0,0,4,4,0,0,0"])
    expected = [(str(path), 4, "unreadable CSV line (field larger than field limit (131072))")]
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == expected
    assert problems(read_csv, path, ST1, tmp_path, on_error="skip", check_images=False) == expected
    path.write_text("x" * 140_000 + "\n")  # even the header: line 1
    assert problems(read_csv, path, ST1, tmp_path) == [(str(path), 1, expected[0][2])]


def test_spaces_after_commas_are_skipped_so_quoted_cells_parse_in_any_column_order(tmp_path):
    header = ",".join([*BOX_COLUMNS, *LABELS, "image_name"])
    path = write(tmp_path / "x.csv", ['0, 0, 4, 4, "5", 1, 0, "b,c.png"'], header=header)
    df = read_csv(path, ST1, tmp_path, check_images=False)
    assert list(df.columns) == header.split(",") + ADDED
    assert df.drop(columns="path").to_dict("records") == [
        {"BBox_xmin": 0, "BBox_ymin": 0, "BBox_xmax": 4, "BBox_ymax": 4, "Daily": 5, "Gender": 1,
         "Embellishment": 0, "image_name": "b,c.png", "line": 2, "width": -1, "height": -1}
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------- columns
def test_missing_columns_are_listed_in_order_with_renaming_hints(tmp_path):
    # xmin: a close spelling; DAILY: same name in other case; GENDER beats the closer spelling Gendr.
    header = "image_name,xmin,BBox_ymin,BBox_xmax,BBox_ymax,DAILY,Gendr,GENDER"
    path = write(tmp_path / "x.csv", ["a.png,0,0,4,4,0,0,0"], header=header)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unknown columns are not warned about: the file is refused
        found = problems(read_csv, path, ST1, tmp_path)
    assert found == [
        (str(path), None, f"missing column 'BBox_xmin' (found 'xmin': renamed?); expected {COLUMNS}"),
        (str(path), None, f"missing column 'Daily' (found 'DAILY': renamed?); expected {COLUMNS}"),
        (str(path), None, f"missing column 'Gender' (found 'GENDER': renamed?); expected {COLUMNS}"),
        (str(path), None, f"missing column 'Embellishment'; expected {COLUMNS}"),
    ]


def test_an_extra_column_is_kept_as_text_with_one_warning_and_one_log_line(tmp_path, caplog):
    path = write(tmp_path / "x.csv", ["a.png,0,0,4,4,0,0,0,3,hello"], header=HEADER + ",fold,note")
    message = f"{path}: extra column(s) ['fold', 'note'] kept but not used"
    with caplog.at_level(logging.WARNING, logger="fh_utils.data.reader"), pytest.warns(UserWarning) as record:
        df = read_csv(path, ST1, tmp_path, check_images=False)
    assert [str(w.message) for w in record] == [message]
    assert reader_logs(caplog) == [(logging.WARNING, message)]
    assert list(df.columns) == [*COLUMNS, "fold", "note", *ADDED]
    assert df[["fold", "note"]].values.tolist() == [["3", "hello"]]
    assert pd.api.types.is_string_dtype(df["fold"])


def test_a_test_csv_may_lack_every_label_column_but_a_train_csv_may_not(tmp_path):
    path = write(tmp_path / "t.csv", ["t.png,0,0,4,4", "u.png,1,1,4,4"], header=TEST_HEADER)
    df = read_csv(path, ST1, tmp_path, labels_optional=True, check_images=False)
    assert list(df.columns) == ["image_name", *BOX_COLUMNS, *ADDED]
    assert df.attrs == {"has_labels": False, "csv": str(path), "skipped": []}
    assert df[BOX_COLUMNS].values.tolist() == [[0, 0, 4, 4], [1, 1, 4, 4]]
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == [
        (str(path), None, f"missing column {c!r}; expected {COLUMNS}") for c in LABELS
    ]  # labels_optional defaults to False
    # A test CSV with its labels has them checked like any other.
    labelled = write(tmp_path / "l.csv", ["t.png,0,0,4,4,6,0,0"])
    assert problems(read_csv, labelled, ST1, tmp_path, labels_optional=True, check_images=False) == [
        (str(labelled), 2, "Daily=6 out of range 0..5 (6 classes)")
    ]
    # Without labels, rows are repeats when name and box repeat.
    repeats = write(tmp_path / "r.csv", ["t.png,0,0,4,4", "t.png,0,0,4,4", "t.png,0,0,4,5"], header=TEST_HEADER)
    assert problems(read_csv, repeats, ST1, tmp_path, labels_optional=True, check_images=False) == [
        (str(repeats), 3, "duplicate of line 2"),
        (str(repeats), 4, "image 't.png' already listed on line 2 with other values"),
    ]


# --------------------------------------------------------------------------------------------------- cells
def test_missing_cells_are_called_missing_whatever_the_spelling(tmp_path):
    tokens = ["", "  ", "nan", "NaN", "NA", "n/a", "N/A", "null", "NULL", "none", "None"]
    path = write(tmp_path / "x.csv", [f"i{k}.png,0,0,4,4,{t},0,0" for k, t in enumerate(tokens)]
                 + ["z.png,0,0,4,nan,0,0,0"])  # fmt: skip
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == [
        *((str(path), k + 2, "Daily is missing") for k in range(len(tokens))),
        (str(path), len(tokens) + 2, "BBox_ymax is missing"),
    ]


def test_an_empty_image_name_is_reported_and_never_looked_up(tmp_path):
    names = ["", "nan", "NaN", "NA", "n/a", "NULL", "none", " None "]  # all different as written
    path = write(tmp_path / "x.csv", [f"{n},0,0,4,4,0,0,0" for n in names])
    assert problems(read_csv, path, ST1, tmp_path / "img") == [
        (str(path), k + 2, "image_name is empty") for k in range(len(names))
    ]


def test_a_cell_that_is_not_an_integer_is_quoted_with_a_hint_for_integral_floats(tmp_path):
    cells = {  # Daily cell -> message
        "2.0": "Daily must be an integer class id, got '2.0' (a float: write 2)",
        "1e3": "Daily must be an integer class id, got '1e3' (a float: write 1000)",
        "1.5": "Daily must be an integer class id, got '1.5'",
        "inf": "Daily must be an integer class id, got 'inf'",
        "Office": "Daily must be an integer class id, got 'Office'",
        "1 2": "Daily must be an integer class id, got '1 2'",
    }
    lines = [f"i{k}.png,0,0,4,4,{cell},0,0" for k, cell in enumerate(cells)]
    lines += ["p.png,0.5,3.0,4,4,0,0,0", "q.png,0,0,4,4,+1,-0,0"]  # boxes are pixel coordinates; signs are fine
    path = write(tmp_path / "x.csv", lines)
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == [
        *((str(path), k + 2, message) for k, message in enumerate(cells.values())),
        (str(path), len(cells) + 2, "BBox_xmin must be an integer pixel coordinate, got '0.5'; "
                                    "BBox_ymin must be an integer pixel coordinate, got '3.0' (a float: write 3)"),
    ]  # fmt: skip
    df = read_csv(path, ST1, tmp_path, on_error="skip", check_images=False)
    assert df[["image_name", "Daily", "Gender"]].values.tolist() == [["q.png", 1, 0]]


def test_labels_must_lie_in_0_to_n_minus_1_for_each_head(tmp_path):
    path = write(tmp_path / "x.csv", [
        "a.png,0,0,4,4,0,0,0",   # 2 lowest classes
        "b.png,0,0,4,4,5,4,2",   # 3 highest classes
        "c.png,0,0,4,4,6,0,0",
        "d.png,0,0,4,4,0,5,0",
        "e.png,0,0,4,4,0,0,3",
        "f.png,0,0,4,4,-1,0,0",
    ])  # fmt: skip
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == [
        (str(path), 4, "Daily=6 out of range 0..5 (6 classes)"),
        (str(path), 5, "Gender=5 out of range 0..4 (5 classes)"),
        (str(path), 6, "Embellishment=3 out of range 0..2 (3 classes)"),
        (str(path), 7, "Daily=-1 out of range 0..5 (6 classes)"),
    ]
    st2 = write(tmp_path / "c.csv", ["a.png,0,0,4,4,17", "b.png,0,0,4,4,18"], header=ST2_HEADER)
    assert problems(read_csv, st2, ST2, tmp_path, check_images=False) == [
        (str(st2), 3, "Color=18 out of range 0..17 (18 classes)")
    ]


BOXES = {  # box -> message, in a 10 x 8 image
    "0,0,10,8": None,  # touches every edge: fine
    "-1,0,10,8": "box (-1, 0, 10, 8) has negative coordinates",
    "0,-1,10,8": "box (0, -1, 10, 8) has negative coordinates",
    "3,0,3,8": "zero-area box (3, 0, 3, 8): need xmin < xmax and ymin < ymax",
    "0,2,10,2": "zero-area box (0, 2, 10, 2): need xmin < xmax and ymin < ymax",
    "5,0,4,8": "inverted box (5, 0, 4, 8): need xmin < xmax and ymin < ymax",
    "0,5,10,4": "inverted box (0, 5, 10, 4): need xmin < xmax and ymin < ymax",
    "3,5,3,4": "inverted box (3, 5, 3, 4): need xmin < xmax and ymin < ymax",  # zero-wide and inverted
    "0,0,11,8": "box (0, 0, 11, 8) outside the image (10 x 8 px)",
    "0,0,10,9": "box (0, 0, 10, 9) outside the image (10 x 8 px)",
}


def test_boxes_must_be_non_negative_non_empty_upright_and_inside_the_image(tmp_path):
    img = tmp_path / "img"
    for k in range(len(BOXES)):
        png(img / f"{k}.png")
    path = write(tmp_path / "x.csv", [f"{k}.png,{box},0,0,0" for k, box in enumerate(BOXES)])
    assert problems(read_csv, path, ST1, img) == [
        (str(path), k + 2, message) for k, message in enumerate(BOXES.values()) if message
    ]
    # Without the images, a box is not compared with the image size.
    df = read_csv(path, ST1, tmp_path / "elsewhere", check_images=False, on_error="skip")
    assert df["line"].tolist() == [2, 10, 11]


def test_image_files_are_looked_up_and_their_problems_reported(tmp_path):
    img = tmp_path / "img"
    png(img / "ok.png")
    (img / "empty.png").write_bytes(b"")
    (img / "dir.png").mkdir()
    path = write(tmp_path / "x.csv", [f"{n}.png,0,0,4,4,0,0,0" for n in ("ok", "gone", "empty", "dir")])
    assert problems(read_csv, path, ST1, img) == [
        (str(path), 3, f"image not found: {img / 'gone.png'}"),
        (str(path), 4, f"{img / 'empty.png'}: empty file (0 bytes)"),
        (str(path), 5, f"image not found: {img / 'dir.png'}"),
    ]
    df = read_csv(path, ST1, img, check_images=False)  # nothing is opened
    assert (df["width"].tolist(), df["height"].tolist()) == ([-1] * 4, [-1] * 4)


def test_image_names_must_stay_inside_the_images_folder(tmp_path):
    img = tmp_path / "img"
    png(tmp_path / "b.png")  # what '../b.png' would reach: never looked up
    png(img / "..a" / "b..png")  # dots inside names are fine
    names = ["/etc/x.png", "C:/x.png", "\\x.png", "a/../../b.png", "a\\..\\..\\b.png", "..", "..a/b..png"]
    path = write(tmp_path / "x.csv", [f"{n},0,0,4,4,0,0,0" for n in names])
    absolute = "is an absolute path; it must be relative to the images folder"
    escapes = "escapes the images folder ('..'); it must stay inside it"
    assert problems(read_csv, path, ST1, img) == [
        (str(path), 2, f"image_name '/etc/x.png' {absolute}"),
        (str(path), 3, f"image_name 'C:/x.png' {absolute}"),
        (str(path), 4, f"image_name {names[2]!r} {absolute}"),
        (str(path), 5, f"image_name 'a/../../b.png' {escapes}"),
        (str(path), 6, f"image_name {names[4]!r} {escapes}"),
        (str(path), 7, f"image_name '..' {escapes}"),
    ]


def test_repeated_rows_and_images_name_the_line_they_repeat(tmp_path):
    path = write(tmp_path / "x.csv", [
        "a.png,0,0,4,4,0,0,0",  # 2
        "",                     # 3
        "b.png,0,0,4,4,0,0,0",  # 4
        "a.png,0,0,4,4,0,0,0",  # 5 same row as line 2
        "a.png,0,0,4,4,1,0,0",  # 6 same image, other label
        "b.png,1,0,4,4,0,0,0",  # 7 same image, other box
        "a.png,0,0,4,4,1,0,0",  # 8 same row as line 6
    ])  # fmt: skip
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == [
        (str(path), 5, "duplicate of line 2"),
        (str(path), 6, "image 'a.png' already listed on line 2 with other values"),
        (str(path), 7, "image 'b.png' already listed on line 4 with other values"),
        (str(path), 8, "duplicate of line 6"),
    ]


def test_several_problems_of_one_row_are_joined_in_one_message(tmp_path):
    path = write(tmp_path / "x.csv", ["a.png,0,0,4,4,0,0,0", "a.png,-1,0,4,4,9,0,0"])
    assert problems(read_csv, path, ST1, tmp_path, check_images=False) == [
        (str(path), 3, "Daily=9 out of range 0..5 (6 classes); box (-1, 0, 4, 4) has negative coordinates; "
                       "image 'a.png' already listed on line 2 with other values")
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------- the read frame
def test_a_clean_read_returns_typed_columns_sizes_paths_and_attrs(tmp_path, caplog):
    img = tmp_path / "img"
    png(img / "a.png", (10, 8))
    png(img / "sub dir" / "b.png", (6, 4))
    header = " " + HEADER.replace(",", " , ")  # spaces around the header cells
    path = write(tmp_path / "x.csv", [" a.png ,0,1,10, 8,+1,0 ,2", "sub dir/b.png,1,0,6,4,5,4,0"], header=header)
    with caplog.at_level(logging.INFO, logger="fh_utils.data.reader"), warnings.catch_warnings():
        warnings.simplefilter("error")
        df = read_csv(path, ST1, img)  # defaults: labels required, images checked, raise, utf-8
    assert reader_logs(caplog) == []
    assert list(df.columns) == COLUMNS + ADDED
    assert df.index.equals(pd.RangeIndex(2))
    assert df.to_dict("list") == {
        "image_name": ["a.png", "sub dir/b.png"],
        "BBox_xmin": [0, 1], "BBox_ymin": [1, 0], "BBox_xmax": [10, 6], "BBox_ymax": [8, 4],
        "Daily": [1, 5], "Gender": [0, 4], "Embellishment": [2, 0],
        "line": [2, 3], "width": [10, 6], "height": [8, 4],
        "path": [str(img / "a.png"), str(img / "sub dir" / "b.png")],
    }  # fmt: skip
    for column in [*BOX_COLUMNS, *LABELS, "line", "width", "height"]:
        assert df[column].dtype == np.int64, column
    assert pd.api.types.is_string_dtype(df["image_name"]) and pd.api.types.is_string_dtype(df["path"])
    assert df.attrs == {"has_labels": True, "csv": str(path), "skipped": []}
    assert type(df.attrs["csv"]) is str


def test_skip_drops_the_bad_rows_renumbers_the_index_and_logs_once(tmp_path, caplog):
    path = write(tmp_path / "x.csv", ["a.png,0,0,4,4,0,0,0", "b.png,0,0,4,4,6,0,0", "c.png,0,0,4,4,1,1,1"])
    with caplog.at_level(logging.WARNING, logger="fh_utils.data.reader"):
        df = read_csv(path, ST1, tmp_path, on_error="skip", check_images=False)
    bad = f"{path}:3: Daily=6 out of range 0..5 (6 classes)"
    assert reader_logs(caplog) == [(logging.WARNING, f"skipped 1 bad row(s) of {path}:\n{bad}")]
    assert list(df.columns) == COLUMNS + ADDED
    assert df.index.equals(pd.RangeIndex(2))
    assert df[["image_name", "line", "Daily"]].values.tolist() == [["a.png", 2, 0], ["c.png", 4, 1]]
    assert df.attrs == {"has_labels": True, "csv": str(path), "skipped": [bad]}


def test_on_error_must_be_raise_or_skip(tmp_path):
    path = write(tmp_path / "x.csv", ["a.png,0,0,4,4,0,0,0"])
    with pytest.raises(ValueError) as info:
        read_csv(path, ST1, tmp_path, on_error="ignore")
    assert not isinstance(info.value, DataValidationError)
    assert str(info.value) == "on_error must be 'raise' or 'skip', got 'ignore'"
    for on_error in ("raise", "skip"):
        assert read_csv(path, ST1, tmp_path, on_error=on_error, check_images=False)["line"].tolist() == [2]


def test_a_missing_csv_lists_the_csvs_beside_it(tmp_path):
    for name in ("b.csv", "a.csv", "notes.txt"):
        (tmp_path / name).write_text("")
    assert problems(read_csv, tmp_path / "c.csv", ST1, tmp_path) == [
        (str(tmp_path / "c.csv"), None, "CSV not found; CSVs present: ['a.csv', 'b.csv']")
    ]
    nowhere = tmp_path / "nowhere" / "c.csv"
    assert problems(read_csv, nowhere, ST1, tmp_path) == [(str(nowhere), None, "CSV not found; CSVs present: []")]


def test_class_counts_counts_every_class_of_every_head_absent_ones_as_zero():
    df = pd.DataFrame({"Daily": [1, 1, 3], "Gender": [0, 0, 0], "Embellishment": [2, 2, 2]})
    counts = class_counts(df, ST1)
    assert list(counts) == LABELS
    assert {k: v.tolist() for k, v in counts.items()} == {
        "Daily": [0, 2, 0, 1, 0, 0], "Gender": [3, 0, 0, 0, 0], "Embellishment": [0, 0, 3]
    }  # fmt: skip


# --------------------------------------------------------------------------------- read_split and classes.json
def test_read_split_finds_the_csv_and_images_and_passes_its_options_on(tmp_path, caplog):
    root = tmp_path / "root"
    data = root / "Dataset"
    write(data / "Fashion-How24_sub2_val.csv", ["a.png,0,0,4,4,3", "b.png,0,0,4,4,18"], header=ST2_HEADER)
    png(data / "val" / "a.png", (10, 8))
    nobg = tmp_path / "nobg"
    png(nobg / "val" / "a.png", (12, 9))  # a background-removed copy, of another size
    path = str(data / "Fashion-How24_sub2_val.csv")
    assert problems(read_split, root, "st2", "val") == [
        (path, 3, f"Color=18 out of range 0..17 (18 classes); image not found: {data / 'val' / 'b.png'}")
    ]
    with caplog.at_level(logging.WARNING, logger="fh_utils.data.reader"):
        df = read_split(root, "st2", "val", on_error="skip")
    assert df[["path", "width", "height", "Color"]].values.tolist() == [[str(data / "val" / "a.png"), 10, 8, 3]]
    assert df.attrs["csv"] == path and len(reader_logs(caplog)) == 1
    df = read_split(str(root), ST2, "val", on_error="skip", images_root=str(nobg))
    assert df[["path", "width", "height"]].values.tolist() == [[str(nobg / "val" / "a.png"), 12, 9]]
    df = read_split(root, "st2", "val", on_error="skip", check_images=False)
    assert df[["width", "height"]].values.tolist() == [[-1, -1]]
    # encoding reaches the decoder, utf-8 by default
    (data / "Fashion-How24_sub2_val.csv").write_bytes((ST2_HEADER + "\n\xe9t\xe9.png,0,0,4,4,1\n").encode("latin-1"))
    [(_, _, message)] = problems(read_split, root, "st2", "val", check_images=False)
    assert message.startswith(f"not valid utf-8 text (byte 0xe9 at offset {len(ST2_HEADER) + 1}); re-save")
    (data / "Fashion-How24_sub2_val.csv").write_bytes((ST2_HEADER + "\nété.png,0,0,4,4,1\n").encode("latin-1"))
    assert read_split(root, "st2", "val", check_images=False, encoding="latin-1")["image_name"].tolist() == ["été.png"]


def test_read_split_of_test_takes_a_csv_without_labels_but_val_does_not(tmp_path):
    root = tmp_path
    for split in ("test", "val"):
        write(root / f"Fashion-How24_sub1_{split}.csv", ["t.png,0,0,4,4"], header=TEST_HEADER)
    df = read_split(root, "st1", "test", check_images=False)
    assert df.attrs["has_labels"] is False and list(df.columns) == ["image_name", *BOX_COLUMNS, *ADDED]
    path = str(root / "Fashion-How24_sub1_val.csv")
    assert problems(read_split, root, "st1", "val", check_images=False) == [
        (path, None, f"missing column {c!r}; expected {COLUMNS}") for c in LABELS
    ]


def test_classes_json_sets_class_counts_and_is_blamed_when_labels_exceed_them(tmp_path, caplog):
    write(tmp_path / "Fashion-How24_sub1_train.csv", [
        "a.png,0,0,4,4,0,0,0",  # 2
        "b.png,0,0,4,4,2,1,2",  # 3 the highest classes classes.json allows
        "c.png,0,0,4,4,3,4,0",  # 4 beyond them
        "d.png,0,0,4,4,x,0,0",  # 5 a label that does not parse is not a count
        "e.png,0,0,4,4,0,0,3",  # 6 Embellishment keeps its 3 classes: not blamed on classes.json
    ])  # fmt: skip
    write(tmp_path / "Fashion-How24_sub1_test.csv", ["t.png,0,0,4,4"], header=TEST_HEADER)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"Daily": ["A", "B", "C"], "Gender": ["M", "F"]}))
    path = str(tmp_path / "Fashion-How24_sub1_train.csv")
    expected = [
        (path, 4, "Daily=3 out of range 0..2 (3 classes); Gender=4 out of range 0..1 (2 classes)"),
        (path, 5, "Daily must be an integer class id, got 'x'"),
        (path, 6, "Embellishment=3 out of range 0..2 (3 classes)"),
        (str(classes), None, "class count disagrees with the CSV labels: Daily has 3 classes there but the CSV "
                             "uses labels up to 3; Gender has 2 classes there but the CSV uses labels up to 4"),
    ]  # fmt: skip
    assert problems(read_split, tmp_path, "st1", "train", check_images=False) == expected
    with caplog.at_level(logging.WARNING, logger="fh_utils.data.reader"):
        df = read_split(tmp_path, "st1", "train", check_images=False, on_error="skip")
    report = [f"{f}:{row}: {m}" if row else f"{f}: {m}" for f, row, m in expected]
    assert df["line"].tolist() == [2, 3] and df.attrs["skipped"] == report
    assert reader_logs(caplog) == [(logging.WARNING, f"skipped 3 bad row(s) of {path}:\n" + "\n".join(report))]
    # A test CSV has no labels to compare.
    assert read_split(tmp_path, "st1", "test", check_images=False)["line"].tolist() == [2]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"Daily": ["A"', None),  # the JSON error itself, below
        ('{"daily": ["A", "B"], "Colour": ["R"]}',
         "unknown label column(s) ['daily', 'Colour']; expected some of ['Daily', 'Gender', 'Embellishment', "
         "'Color']"),
        ('{"Daily": "A,B"}', "'Daily' must be a non-empty list of class-name strings"),
        ('["A", "B"]', "expected an object mapping label column -> list of class names"),
    ],
    ids=["not_json", "unknown_column", "not_a_list", "not_an_object"],
)  # fmt: skip
def test_a_bad_classes_json_is_one_problem_of_that_file(tmp_path, text, message):
    write(tmp_path / "Fashion-How24_sub1_train.csv", ["a.png,0,0,4,4,0,0,0"])
    (tmp_path / "classes.json").write_text(text)
    if message is None:
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            message = f"not valid JSON ({err})"
    assert problems(read_split, tmp_path, "st1", "train", check_images=False) == [
        (str(tmp_path / "classes.json"), None, message)
    ]


def test_a_custom_tasks_own_label_columns_are_known_to_classes_json(tmp_path):
    style = Task(name="st3", title="Style", csv_prefix="Fashion-How24_sub3",
                 heads=(Head("Style", "style", ("a", "b")),), metric="acsa")  # fmt: skip
    write(tmp_path / "Fashion-How24_sub3_train.csv", ["a.png,0,0,4,4,2"], header=TEST_HEADER + ",Style")
    (tmp_path / "classes.json").write_text(json.dumps({"Style": ["a", "b", "c"]}))
    assert read_split(tmp_path, style, "train", check_images=False)["Style"].tolist() == [2]


def test_classes_json_is_read_as_utf8_whatever_the_locale(tmp_path, monkeypatch):
    names = ["Á", "Í", "Ï", "Ð", "Ý", "Sportswear"]  # their UTF-8 bytes hold 0x81, 0x8d, ...: not cp1252
    write(tmp_path / "Fashion-How24_sub1_train.csv", ["a.png,0,0,4,4,5,0,0"])
    (tmp_path / "classes.json").write_text(json.dumps({"Daily": names}, ensure_ascii=False), encoding="utf-8")
    read_text = Path.read_text

    def cp1252_locale(self, encoding=None, errors=None):  # what a text read without an encoding gets there
        return read_text(self, encoding=encoding or "cp1252", errors=errors)

    monkeypatch.setattr(Path, "read_text", cp1252_locale)
    assert read_split(tmp_path, "st1", "train", check_images=False)["Daily"].tolist() == [5]
    assert get_task("st1", tmp_path).head("Daily").class_names == tuple(names)


# ---------------------------------------------------------------------------------------------- validate_root
def test_validate_root_reports_missing_csvs_but_not_a_missing_test_csv(tmp_path):
    png(tmp_path / "train" / "a.png")
    png(tmp_path / "val" / "v.png")
    write(tmp_path / "Fashion-How24_sub1_train.csv", ["a.png,0,0,4,4,0,0,0"])
    write(tmp_path / "Fashion-How24_sub2_val.csv", ["v.png,0,0,4,4,18"], header=ST2_HEADER)
    st2 = [
        DataProblem(str(tmp_path / "Fashion-How24_sub2_train.csv"), None, "CSV not found"),
        DataProblem(str(tmp_path / "Fashion-How24_sub2_val.csv"), 2, "Color=18 out of range 0..17 (18 classes)"),
    ]
    assert validate_root(tmp_path) == [
        DataProblem(str(tmp_path / "Fashion-How24_sub1_val.csv"), None, "CSV not found"), *st2
    ]  # fmt: skip
    assert validate_root(tmp_path, tasks=("st2",)) == st2
    assert validate_root(tmp_path / "nope") == [DataProblem(str(tmp_path / "nope"), None, "data root does not exist")]


def test_validate_root_reports_a_bad_classes_json_once_and_still_checks_the_other_task(tmp_path):
    png(tmp_path / "train" / "a.png")
    write(tmp_path / "Fashion-How24_sub2_train.csv", ["a.png,0,0,4,4,1", "a.png,0,0,4,4,1"], header=ST2_HEADER)
    write(tmp_path / "Fashion-How24_sub2_val.csv", ["a.png,0,0,4,4,1"], header=ST2_HEADER)
    classes = tmp_path / "classes.json"
    classes.write_text('{"Daily": "A,B"}')  # wrong for st1 only: st2 has no Daily head
    assert validate_root(tmp_path) == [
        DataProblem(str(classes), None, "'Daily' must be a non-empty list of class-name strings"),
        DataProblem(str(tmp_path / "Fashion-How24_sub2_train.csv"), 3, "duplicate of line 2"),
        DataProblem(str(tmp_path / "Fashion-How24_sub2_val.csv"), 2, f"image not found: {tmp_path / 'val' / 'a.png'}"),
    ]
    classes.write_text('{"Daily": ')  # wrong for both tasks: reported once
    [problem] = validate_root(tmp_path)
    assert (problem.file, problem.row) == (str(classes), None)
    assert problem.message.startswith("not valid JSON (")
