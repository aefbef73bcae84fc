"""Bad-input corpus: every broken CSV, image, classes.json or data root is reported, never accepted silently.

Each test builds its own small data root in ``tmp_path`` (a few real images, valid CSVs for both tasks), then
breaks one thing and asserts the exact problems reported: which file, which CSV line (header = line 1) and
what is wrong (the whole message is matched). Inputs that are odd but valid (RGBA/16-bit/palette PNGs,
EXIF-rotated JPEGs, a PNG named .jpg, Korean file names, a UTF-8 BOM, the ``Dataset/`` layout, a test CSV
without labels) must load, with their pixel values checked.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fh_utils.__main__ import main
from fh_utils.data.images import ImageLoadError, image_size, load_image
from fh_utils.data.reader import DataValidationError, find_data_dir, read_split, validate_root

ST1_COLUMNS = "image_name BBox_xmin BBox_ymin BBox_xmax BBox_ymax Daily Gender Embellishment".split()
ST1_HEADER = ",".join(ST1_COLUMNS)
ST2_HEADER = "image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Color"
KOREAN = "2BLOUSE 2019/블라우스 01.jpg"  # a folder with a space, a non-ASCII file name with a space

# split -> {image_name: (width, height)}
IMAGES = {
    "train": {"1209/a.jpg": (64, 48), "1209/b.png": (64, 48), KOREAN: (40, 56)},
    "val": {"1209/v.jpg": (32, 32)},
    "test": {"1209/t.jpg": (32, 32)},
}
# The valid train CSV bodies: CSV lines 2, 3 and 4.
ST1_TRAIN = ["1209/a.jpg,4,4,60,44,0,1,2", "1209/b.png,0,0,64,48,5,4,0", f"{KOREAN},2,3,40,56,3,2,1"]
ST2_TRAIN = ["1209/a.jpg,4,4,60,44,17", "1209/b.png,0,0,64,48,0", f"{KOREAN},2,3,40,56,9"]
BODIES = {
    ("st1", "train"): ST1_TRAIN,
    ("st1", "val"): ["1209/v.jpg,1,1,30,30,1,1,1"],
    ("st1", "test"): ["1209/t.jpg,0,0,20,20"],
    ("st2", "train"): ST2_TRAIN,
    ("st2", "val"): ["1209/v.jpg,1,1,30,30,3"],
    ("st2", "test"): ["1209/t.jpg,0,0,20,20"],
}
HEADERS = {"st1": ST1_HEADER, "st2": ST2_HEADER}
TEST_HEADER = "image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax"
EXPECTED = re.escape(str(ST1_COLUMNS))


# -------------------------------------------------------------------------------------------- fixture builder
def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int] = (200, 30, 90)) -> Path:
    """Write a solid-colour RGB image (JPEG or PNG by extension) of ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray(np.full((h, w, 3), color, np.uint8)).save(path, quality=95)
    return path


def csv_file(data: Path, task: str = "st1", split: str = "train") -> Path:
    return data / f"Fashion-How24_sub{task[-1]}_{split}.csv"


def csv_text(lines: list[str], header: str = ST1_HEADER) -> str:
    return "\n".join([header, *lines]) + "\n"


def make_root(base: Path, dataset: bool = False) -> Path:
    """A valid data root under ``base``: images and CSVs of both tasks (train, val, unlabelled test).

    Returns the data root; the CSVs are in it, or in its ``Dataset/`` folder when ``dataset``.
    """
    root = base / "data"
    data = root / "Dataset" if dataset else root
    for split, images in IMAGES.items():
        for name, size in images.items():
            write_image(data / split / name, size)
    for (task, split), lines in BODIES.items():
        header = TEST_HEADER if split == "test" else HEADERS[task]
        csv_file(data, task, split).write_text(csv_text(lines, header), encoding="utf-8")
    return root


def jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of ``array``: (h, w) -> L, (h, w, 2) -> LA, (h, w, 3) -> RGB, (h, w, 4) -> RGBA."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8))
    return data[: len(data) // 2]


def put(rel: str, data: bytes) -> Callable[[Path], None]:
    """Setup step: write ``data`` to ``rel`` under the data dir."""

    def setup(data_dir: Path) -> None:
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(data)

    return setup


def classes(obj: object | str) -> Callable[[Path], None]:
    """Setup step: write a classes.json (an object as JSON, a str as is)."""
    return put("classes.json", (obj if isinstance(obj, str) else json.dumps(obj)).encode())


def line3(text: str) -> list[str]:
    """The valid ST1 train body with CSV line 3 replaced by ``text``."""
    return [ST1_TRAIN[0], text, ST1_TRAIN[2]]


def drop_column(column: str, header: str = ST1_HEADER, lines: list[str] = ST1_TRAIN) -> tuple[str, list[str]]:
    cols = header.split(",")
    k = cols.index(column)

    def cut(line: str) -> str:
        return ",".join(f for i, f in enumerate(line.split(",")) if i != k)

    return cut(header), [cut(line) for line in lines]


def rename_column(old: str, new: str) -> str:
    return ",".join(new if c == old else c for c in ST1_HEADER.split(","))


# ------------------------------------------------------------------------------------------------ the corpus
@dataclass
class Case:
    """One broken input and the exact problems expected.

    ``expect`` lists (file, CSV line or None, full-match regex of the message); file is ``"csv"`` (the CSV
    read) or a path relative to the data dir.
    """

    id: str
    expect: list[tuple[str, int | None, str]]
    lines: list[str] | None = None  # replaces the CSV body
    header: str | None = None  # replaces the CSV header
    raw: bytes | None = None  # replaces the whole CSV file
    setup: Callable[[Path], None] | None = None
    task: str = "st1"
    split: str = "train"
    kept: list[int] | None = None  # CSV lines on_error="skip" keeps ([]: it raises too); None: the others


_CP949 = csv_text(ST1_TRAIN).encode("cp949")
_CP949_OFFSET = next(i for i, b in enumerate(_CP949) if b >= 0x80)
_MISSING_DEFAULT = r"expected " + EXPECTED

CASES = [
    # -- the file as a whole: columns, encoding, emptiness (no line number: the whole file is wrong)
    Case(
        "missing_label_column",
        [("csv", None, rf"missing column 'Gender'; {_MISSING_DEFAULT}")],
        *reversed(drop_column("Gender")),
    ),
    Case(
        "missing_box_column",
        [("csv", None, rf"missing column 'BBox_ymax'; {_MISSING_DEFAULT}")],
        *reversed(drop_column("BBox_ymax")),
    ),
    Case(
        "renamed_column_lowercase",
        [("csv", None, rf"missing column 'Daily' \(found 'daily': renamed\?\); {_MISSING_DEFAULT}")],
        header=rename_column("Daily", "daily"),
    ),
    Case(
        "renamed_column_typo",
        [
            (
                "csv",
                None,
                rf"missing column 'Embellishment' \(found 'Embelishment': renamed\?\); {_MISSING_DEFAULT}",
            )
        ],
        header=rename_column("Embellishment", "Embelishment"),
    ),
    Case(
        "renamed_box_column",
        [("csv", None, rf"missing column 'BBox_xmin' \(found 'xmin': renamed\?\); {_MISSING_DEFAULT}")],
        header=rename_column("BBox_xmin", "xmin"),
    ),
    Case(
        "renamed_column_st2",
        [("csv", None, r"missing column 'Color' \(found 'Colour': renamed\?\); expected .*")],
        header=ST2_HEADER.replace("Color", "Colour"),
        lines=ST2_TRAIN,
        task="st2",
    ),
    Case(
        "duplicate_header_column",
        [("csv", None, r"column 'Daily' appears 2 times in the header")],
        header=ST1_HEADER + ",Daily",
        lines=[line + ",1" for line in ST1_TRAIN],
    ),
    Case(
        "xlsx_saved_as_csv",
        [
            (
                "csv",
                None,
                r"a zip file \(an Excel \.xlsx\?\), not CSV text; export it from the spreadsheet as "
                r"'CSV UTF-8'",
            )
        ],
        raw=b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)),
    ),
    Case("empty_csv_0_bytes", [("csv", None, r"empty CSV \(no header, no rows\)")], raw=b""),
    Case("csv_with_only_a_bom", [("csv", None, r"empty CSV \(no header, no rows\)")], raw=b"\xef\xbb\xbf\n"),
    Case("header_only", [("csv", None, r"CSV has a header but no data rows")], lines=[]),
    Case(
        "header_and_blank_lines",
        [("csv", None, r"CSV has a header but no data rows")],
        raw=(ST1_HEADER + "\n\n\n").encode(),
    ),
    Case(
        "cp949_csv",
        [
            (
                "csv",
                None,
                rf"not valid utf-8 text \(byte 0x{_CP949[_CP949_OFFSET]:02x} at offset {_CP949_OFFSET}\); "
                r"re-save the file as UTF-8 \(e\.g\. `iconv -f cp949 -t utf-8`\) or pass encoding='cp949'",
            )
        ],
        raw=_CP949,
    ),
    Case(
        "utf16_csv",
        [
            (
                "csv",
                None,
                r"not valid utf-8 text \(byte 0xff at offset 0\); the file is UTF-16: "
                r"re-save it as UTF-8 or pass encoding='utf-16'",
            )
        ],
        raw=csv_text(ST1_TRAIN).encode("utf-16"),
    ),
    Case(
        "test_csv_with_some_label_columns",
        [
            ("csv", None, rf"missing column 'Gender'; {_MISSING_DEFAULT}"),
            ("csv", None, rf"missing column 'Embellishment'; {_MISSING_DEFAULT}"),
        ],
        header=TEST_HEADER + ",Daily",
        lines=["1209/t.jpg,0,0,20,20,1"],
        split="test",
    ),
    Case(
        "csv_not_found",
        [
            (
                "csv",
                None,
                r"CSV not found; CSVs present: \['Fashion-How24_sub1_test\.csv', "
                r"'Fashion-How24_sub1_train\.csv', 'Fashion-How24_sub2_test\.csv', "
                r"'Fashion-How24_sub2_train\.csv', 'Fashion-How24_sub2_val\.csv'\]",
            )
        ],
        setup=lambda d: csv_file(d, "st1", "val").unlink(),
        split="val",
    ),
    # -- labels (CSV line 3 = 1209/b.png, 64 x 48)
    Case(
        "label_out_of_range",
        [("csv", 3, r"Daily=6 out of range 0\.\.5 \(6 classes\)")],
        line3("1209/b.png,0,0,64,48,6,4,0"),
    ),
    Case(
        "label_out_of_range_st2",
        [("csv", 3, r"Color=18 out of range 0\.\.17 \(18 classes\)")],
        [ST2_TRAIN[0], "1209/b.png,0,0,64,48,18", ST2_TRAIN[2]],
        task="st2",
    ),
    Case(
        "label_negative",
        [("csv", 3, r"Gender=-1 out of range 0\.\.4 \(5 classes\)")],
        line3("1209/b.png,0,0,64,48,5,-1,0"),
    ),
    Case(
        "label_float",
        [("csv", 3, r"Embellishment must be an integer class id, got '1\.5'")],
        line3("1209/b.png,0,0,64,48,5,4,1.5"),
    ),
    Case(
        "label_float_integral",
        [("csv", 3, r"Daily must be an integer class id, got '2\.0' \(a float: write 2\)")],
        line3("1209/b.png,0,0,64,48,2.0,4,0"),
    ),
    Case(
        "label_not_a_number",
        [("csv", 3, r"Daily must be an integer class id, got 'Office'")],
        line3("1209/b.png,0,0,64,48,Office,4,0"),
    ),
    Case(
        "label_unicode_superscript",
        [("csv", 3, r"Gender must be an integer class id, got '²'")],
        line3("1209/b.png,0,0,64,48,5,²,0"),
    ),
    Case("label_empty_cell", [("csv", 3, r"Gender is missing")], line3("1209/b.png,0,0,64,48,5,,0")),
    Case("label_nan", [("csv", 3, r"Daily is missing")], line3("1209/b.png,0,0,64,48,NaN,4,0")),
    # -- boxes
    Case("box_empty_cell", [("csv", 3, r"BBox_xmax is missing")], line3("1209/b.png,0,0,,48,5,4,0")),
    Case("box_nan", [("csv", 3, r"BBox_ymin is missing")], line3("1209/b.png,0,nan,64,48,5,4,0")),
    Case(
        "box_outside_right",
        [("csv", 3, r"box \(0, 0, 65, 48\) outside the image \(64 x 48 px\)")],
        line3("1209/b.png,0,0,65,48,5,4,0"),
    ),
    Case(
        "box_outside_bottom",
        [("csv", 3, r"box \(0, 0, 64, 49\) outside the image \(64 x 48 px\)")],
        line3("1209/b.png,0,0,64,49,5,4,0"),
    ),
    Case(
        "box_inverted",
        [("csv", 3, r"inverted box \(60, 0, 4, 48\): need xmin < xmax and ymin < ymax")],
        line3("1209/b.png,60,0,4,48,5,4,0"),
    ),
    Case(
        "box_zero_area",
        [("csv", 3, r"zero-area box \(10, 5, 10, 40\): need xmin < xmax and ymin < ymax")],
        line3("1209/b.png,10,5,10,40,5,4,0"),
    ),
    Case(
        "box_negative",
        [("csv", 3, r"box \(-3, 0, 64, 48\) has negative coordinates")],
        line3("1209/b.png,-3,0,64,48,5,4,0"),
    ),
    Case(
        "box_float",
        [("csv", 3, r"BBox_xmin must be an integer pixel coordinate, got '12\.5'")],
        line3("1209/b.png,12.5,0,64,48,5,4,0"),
    ),
    Case(
        "box_float_integral",
        [("csv", 3, r"BBox_ymax must be an integer pixel coordinate, got '40\.0' \(a float: write 40\)")],
        line3("1209/b.png,0,0,64,40.0,5,4,0"),
    ),
    # -- images
    Case("image_name_empty", [("csv", 3, r"image_name is empty")], line3(",0,0,64,48,5,4,0")),
    Case(
        "image_missing",
        [("csv", 3, r"image not found: /.*/train/1209/nope\.jpg")],
        line3("1209/nope.jpg,0,0,64,48,5,4,0"),
    ),
    Case(
        "image_zero_bytes",
        [("csv", 3, r"/.*/train/1209/zero\.jpg: empty file \(0 bytes\)")],
        line3("1209/zero.jpg,0,0,64,48,5,4,0"),
        setup=put("train/1209/zero.jpg", b""),
    ),
    Case(
        "image_truncated_jpeg",
        [("csv", 3, r"/.*/train/1209/half\.jpg: truncated JPEG \(no end-of-image marker\)")],
        line3("1209/half.jpg,0,0,40,40,5,4,0"),
        setup=put("train/1209/half.jpg", truncated_jpeg()),
    ),
    Case(
        "image_truncated_png",
        [("csv", 3, r"/.*/train/1209/half\.png: truncated PNG \(no IEND chunk\)")],
        line3("1209/half.png,0,0,40,40,5,4,0"),
        setup=put("train/1209/half.png", png_bytes(np.zeros((40, 50, 3), np.uint8))[:-40]),
    ),
    Case(
        "image_is_text",
        [
            (
                "csv",
                3,
                r"/.*/train/1209/text\.jpg: not a readable image "
                r"\(UnidentifiedImageError: cannot identify image file .*\)",
            )
        ],
        line3("1209/text.jpg,0,0,40,40,5,4,0"),
        setup=put("train/1209/text.jpg", b"not an image\n"),
    ),
    # -- image names that reach outside the images folder (never opened, even when the file exists)
    Case(
        "image_name_escapes_with_dotdot",
        [("csv", 3, r"image_name '\.\./val/1209/v\.jpg' escapes the images folder \('\.\.'\); it must stay inside it")],
        line3("../val/1209/v.jpg,1,1,30,30,5,4,0"),
    ),
    Case(
        "image_name_escapes_inside_the_path",
        [("csv", 3, r"image_name '1209/\.\./\.\./val/1209/v\.jpg' escapes the images folder .*")],
        line3("1209/../../val/1209/v.jpg,1,1,30,30,5,4,0"),
    ),
    Case(
        "image_name_absolute",
        [("csv", 3, r"image_name '/.*/val/1209/v\.jpg' is an absolute path; it must be relative to the images folder")],
        setup=lambda data: csv_file(data).write_text(
            csv_text([ST1_TRAIN[0], f"{data / 'val' / '1209' / 'v.jpg'},1,1,30,30,5,4,0", ST1_TRAIN[2]])),
    ),
    # -- rows
    Case("exact_duplicate_row", [("csv", 5, r"duplicate of line 2")], [*ST1_TRAIN, ST1_TRAIN[0]]),
    Case(
        "same_image_other_labels",
        [("csv", 5, r"image '1209/a\.jpg' already listed on line 2 with other values")],
        [*ST1_TRAIN, "1209/a.jpg,4,4,60,44,1,1,2"],
    ),
    Case(
        "row_with_an_extra_field",
        [("csv", 3, r"expected 8 fields \(as in the header\), found 9")],
        line3("1209/b.png,0,0,64,48,5,4,0,7"),
    ),
    Case(
        "row_with_a_missing_field",
        [("csv", 3, r"expected 8 fields \(as in the header\), found 7")],
        line3("1209/b.png,0,0,64,48,5,4"),
    ),
    Case(
        "unclosed_quote",
        [
            (
                "csv",
                3,
                r"expected 8 fields \(as in the header\), found 1 \(the record runs on to line 4: "
                r"an unclosed quote\?\)",
            )
        ],
        line3('"1209/b.png,0,0,64,48,5,4,0'),
        kept=[2],  # line 4 was swallowed by the quote
    ),
    Case(
        "field_over_the_csv_size_limit",
        [("csv", 3, r"unreadable CSV line \(field larger than field limit \(131072\)\)")],
        line3("1209/" + "b" * 140_000 + ".png,0,0,64,48,5,4,0"),
        kept=[],
    ),
    Case(
        "only_row_malformed",
        [("csv", 2, r"expected 8 fields \(as in the header\), found 9")],
        ["1209/a.jpg,4,4,60,44,0,1,2,3"],
    ),
    Case(
        "blank_line_before_a_bad_row",
        [("csv", 4, r"Daily=6 out of range 0\.\.5 \(6 classes\)")],
        [ST1_TRAIN[0], "", "1209/b.png,0,0,64,48,6,4,0", ST1_TRAIN[2]],
    ),
    Case(
        "everything_wrong_in_one_row",
        [
            (
                "csv",
                3,
                r"Daily=9 out of range 0\.\.5 \(6 classes\); Gender must be an integer class id, got 'x'; "
                r"image not found: /.*/train/1209/nope\.jpg; box \(-1, 0, -5, 48\) has negative coordinates; "
                r"inverted box \(-1, 0, -5, 48\): need xmin < xmax and ymin < ymax",
            )
        ],
        line3("1209/nope.jpg,-1,0,-5,48,9,x,0"),
    ),
    # -- classes.json
    Case(
        "classes_json_fewer_classes_than_labels",
        [
            ("csv", 3, r"Daily=5 out of range 0\.\.2 \(3 classes\)"),
            ("csv", 4, r"Daily=3 out of range 0\.\.2 \(3 classes\)"),
            (
                "classes.json",
                None,
                r"class count disagrees with the CSV labels: Daily has 3 classes there "
                r"but the CSV uses labels up to 5",
            ),
        ],
        setup=classes({"Daily": ["Casual", "Office", "Party"]}),
    ),
    Case(
        "classes_json_not_json",
        [("classes.json", None, r"not valid JSON \(.*\)")],
        setup=classes('{"Daily": ["A", "B"'),
    ),
    Case(
        "classes_json_not_a_list",
        [("classes.json", None, r"'Daily' must be a non-empty list of class-name strings")],
        setup=classes({"Daily": "Casual,Office"}),
    ),
    Case(
        "classes_json_not_an_object",
        [("classes.json", None, r"expected an object mapping label column -> list of class names")],
        setup=classes(["Casual", "Office"]),
    ),
    Case(
        "classes_json_unknown_column",
        [
            (
                "classes.json",
                None,
                r"unknown label column\(s\) \['daily'\]; expected some of "
                r"\['Daily', 'Gender', 'Embellishment', 'Color'\]",
            )
        ],
        setup=classes({"daily": ["Casual", "Office"]}),
    ),
]


def _data_lines(lines: list[str]) -> list[int]:
    """CSV line numbers of the non-blank body lines."""
    return [n for n, text in enumerate(lines, start=2) if text.strip()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_reported_exactly(tmp_path, case):
    root = make_root(tmp_path)
    data = find_data_dir(root)
    path = csv_file(data, case.task, case.split)
    if case.raw is not None:
        path.write_bytes(case.raw)
    elif case.lines is not None or case.header is not None:
        header = case.header or HEADERS[case.task]
        lines = case.lines if case.lines is not None else BODIES[(case.task, case.split)]
        path.write_text(csv_text(lines, header), encoding="utf-8")
    if case.setup is not None:
        case.setup(data)

    with pytest.raises(DataValidationError) as info:
        read_split(root, case.task, case.split)
    problems = info.value.problems
    report = "\n".join(map(str, problems))
    assert len(problems) == len(case.expect), report
    for problem, (where, line, pattern) in zip(problems, case.expect):
        assert problem.file == str(path if where == "csv" else data / where), report
        assert problem.row == line, report
        assert re.fullmatch(pattern, problem.message), f"{problem.message!r} !~ {pattern!r}"
        assert str(problem) in str(info.value)

    # Row problems: on_error="skip" drops exactly those rows and keeps the report.
    bad_lines = {line for _, line, _ in case.expect if line is not None}
    if bad_lines and case.lines is not None:
        kept = (
            case.kept if case.kept is not None else [n for n in _data_lines(case.lines) if n not in bad_lines]
        )
        if not kept:
            with pytest.raises(DataValidationError) as again:
                read_split(root, case.task, case.split, on_error="skip")
            assert again.value.problems[: len(problems)] == problems
            return
        df = read_split(root, case.task, case.split, on_error="skip")
        assert df["line"].tolist() == kept
        assert df.attrs["skipped"] == [str(p) for p in problems]


# ---------------------------------------------------------------------------------------------- data roots
def test_data_root_that_does_not_exist(tmp_path):
    with pytest.raises(DataValidationError) as info:
        read_split(tmp_path / "nope", "st1", "train")
    assert [(p.file, p.row, p.message) for p in info.value.problems] == [
        (str(tmp_path / "nope"), None, "data root does not exist")
    ]


def test_data_root_without_csvs(tmp_path):
    write_image(tmp_path / "train" / "1209" / "a.jpg", (8, 8))
    with pytest.raises(DataValidationError) as info:
        read_split(tmp_path, "st2", "train")
    [problem] = info.value.problems
    assert (problem.file, problem.row) == (str(tmp_path), None)
    assert problem.message.startswith("no Fashion-How24_sub{1,2}_{train,val}.csv here or in Dataset/")
    assert "demo-data" in problem.message
    assert validate_root(tmp_path) == [problem]


@pytest.mark.parametrize("dataset", [False, True], ids=["flat", "Dataset_subfolder"])
def test_valid_root_reads_every_split(tmp_path, dataset):
    root = make_root(tmp_path, dataset=dataset)
    data = root / "Dataset" if dataset else root
    assert find_data_dir(root) == data
    assert validate_root(root) == []
    for task in ("st1", "st2"):
        df = read_split(root, task, "train")
        assert df["line"].tolist() == [2, 3, 4]
        assert df["path"].tolist() == [str(data / "train" / n) for n in IMAGES["train"]]
        assert list(zip(df["width"], df["height"])) == list(IMAGES["train"].values())
        assert df.attrs["has_labels"] and df.attrs["skipped"] == []
    assert read_split(root, "st1", "train")[["Daily", "Gender", "Embellishment"]].values.tolist() == [
        [0, 1, 2], [5, 4, 0], [3, 2, 1]
    ]  # fmt: skip


def test_names_with_spaces_and_korean_load_and_validate(tmp_path):
    root = make_root(tmp_path)
    df = read_split(root, "st2", "train")
    row = df[df["image_name"] == KOREAN].iloc[0]
    assert row["path"].endswith("train/2BLOUSE 2019/블라우스 01.jpg")
    assert load_image(row["path"]).shape == (56, 40, 3)
    assert (row["width"], row["height"], row["Color"]) == (40, 56, 9)


def test_test_csv_without_labels_is_valid_for_prediction(tmp_path):
    root = make_root(tmp_path)
    for task in ("st1", "st2"):
        df = read_split(root, task, "test")
        assert df.attrs["has_labels"] is False
        assert df["image_name"].tolist() == ["1209/t.jpg"]
        assert not {"Daily", "Color"} & set(df.columns)


def test_utf8_bom_csv_reads(tmp_path):
    root = make_root(tmp_path)
    csv_file(root).write_bytes(csv_text(ST1_TRAIN).encode("utf-8-sig"))
    df = read_split(root, "st1", "train")
    assert list(df.columns[:8]) == ST1_COLUMNS
    assert df["image_name"].tolist() == list(IMAGES["train"])


def test_cp949_csv_reads_with_encoding_argument(tmp_path):
    root = make_root(tmp_path)
    csv_file(root).write_bytes(csv_text(ST1_TRAIN).encode("cp949"))
    with pytest.raises(DataValidationError, match="pass encoding='cp949'"):
        read_split(root, "st1", "train")
    df = read_split(root, "st1", "train", encoding="cp949")
    assert df["image_name"].tolist()[2] == KOREAN
    assert Path(df["path"][2]).is_file()


def test_extra_column_warns_and_is_kept(tmp_path):
    """Decision: an extra column is not an error (teams add fold ids, notes...): warned about, then kept."""
    root = make_root(tmp_path)
    csv_file(root).write_text(
        csv_text([f"{line},fold{i}" for i, line in enumerate(ST1_TRAIN)], ST1_HEADER + ",note")
    )
    with pytest.warns(
        UserWarning, match=r"Fashion-How24_sub1_train\.csv: extra column\(s\) \['note'\] kept but not used"
    ):
        df = read_split(root, "st1", "train")
    assert df["note"].tolist() == ["fold0", "fold1", "fold2"]


def test_whitespace_around_cells_and_crlf_are_accepted(tmp_path):
    root = make_root(tmp_path)
    text = csv_text([" 1209/a.jpg , 4, 4 ,60,44, 0,1,2"], " " + ST1_HEADER.replace(",", " , ")).replace(
        "\n", "\r\n"
    )
    csv_file(root).write_bytes(text.encode())
    df = read_split(root, "st1", "train")
    assert df[ST1_COLUMNS].values.tolist() == [["1209/a.jpg", 4, 4, 60, 44, 0, 1, 2]]


def test_png_named_jpg_validates_and_loads(tmp_path):
    root = make_root(tmp_path)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = (10, 250, 30)
    (root / "train" / "1209" / "a.jpg").write_bytes(png_bytes(rgb))
    df = read_split(root, "st1", "train")
    assert (df["width"][0], df["height"][0]) == (64, 48)
    assert np.array_equal(load_image(df["path"][0]), rgb)  # lossless: decoded as the PNG it is


def test_exif_rotated_jpeg_keeps_stored_orientation(tmp_path):
    """Decision: EXIF orientation is ignored; boxes are in stored-pixel coordinates."""
    root = make_root(tmp_path)
    path = root / "train" / "1209" / "a.jpg"
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)  # left half red, right half blue, as stored
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    assert Image.open(path).getexif()[0x0112] == 6
    # A box reaching x=60 fits the stored 64 x 48 image (it would not fit the rotated 48 x 64 one).
    df = read_split(root, "st1", "train")
    assert (df["width"][0], df["height"][0]) == (64, 48)
    img = load_image(path)
    assert img.shape == (48, 64, 3)
    assert np.abs(img[24, 8].astype(int) - (255, 0, 0)).max() < 20
    assert np.abs(img[24, 56].astype(int) - (0, 0, 255)).max() < 20
    assert load_image(path, reduce=2).shape == (24, 32, 3)


# ----------------------------------------------------------------------------- several problems, skip, CLI
MANY = [
    ST1_TRAIN[0],  # 2 ok
    "1209/b.png,0,0,64,48,6,4,0",  # 3 label out of range
    f"{KOREAN},2,3,40,57,3,2,1",  # 4 box outside the image
    "",  # 5 blank: not a row
    "1209/gone.jpg,0,0,10,10,0,0,0",  # 6 image missing
    ST1_TRAIN[0],  # 7 duplicate of line 2
    "1209/b.png,0,0,64,48,5,4",  # 8 a field short
    "1209/b.png,0,0,64,48,5,4,x",  # 9 non-numeric label, and b.png listed again
    ST1_TRAIN[1],  # 10 b.png listed a third time
]


def test_several_problems_in_one_csv_are_reported_together(tmp_path):
    root = make_root(tmp_path)
    path = csv_file(root)
    path.write_text(csv_text(MANY), encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        read_split(root, "st1", "train")
    problems = info.value.problems
    assert len(problems) == 7
    assert {p.file for p in problems} == {str(path)}
    assert [(p.row, p.message) for p in problems] == [
        (3, "Daily=6 out of range 0..5 (6 classes)"),
        (4, "box (2, 3, 40, 57) outside the image (40 x 56 px)"),
        (6, f"image not found: {root / 'train' / '1209' / 'gone.jpg'}"),
        (7, "duplicate of line 2"),
        (8, "expected 8 fields (as in the header), found 7"),
        (
            9,
            "Embellishment must be an integer class id, got 'x'; "
            "image '1209/b.png' already listed on line 3 with other values",
        ),
        (10, "image '1209/b.png' already listed on line 3 with other values"),
    ]
    assert str(info.value).startswith("7 data problem(s):\n")
    assert str(info.value).endswith("pass on_error='skip' to drop the bad rows (they are reported).")


def test_skip_drops_exactly_the_bad_rows_and_logs_them(tmp_path, caplog):
    root = make_root(tmp_path)
    path = csv_file(root)
    path.write_text(csv_text(MANY), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="fh_utils.data.reader"):
        df = read_split(root, "st1", "train", on_error="skip")
    assert df["line"].tolist() == [2]
    assert df["image_name"].tolist() == ["1209/a.jpg"]
    assert df.index.tolist() == [0]
    skipped = df.attrs["skipped"]
    assert len(skipped) == 7
    assert skipped[0] == f"{path}:3: Daily=6 out of range 0..5 (6 classes)"
    [record] = [r for r in caplog.records if r.name == "fh_utils.data.reader"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"skipped 7 bad row(s) of {path}:\n" + "\n".join(skipped)


def test_skip_with_no_valid_row_left_raises(tmp_path):
    root = make_root(tmp_path)
    csv_file(root).write_text(csv_text(["1209/gone.jpg,0,0,10,10,0,0,0"]), encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        read_split(root, "st1", "train", on_error="skip")
    assert [(p.row, p.message) for p in info.value.problems] == [
        (2, f"image not found: {root / 'train' / '1209' / 'gone.jpg'}"),
        (None, "no valid rows left"),
    ]


def test_cli_validate_corrupted_root_exits_1_with_file_line_report(tmp_path, capsys):
    root = make_root(tmp_path)
    st1_val = csv_file(root, "st1", "val")
    st1_val.write_text(csv_text(["1209/v.jpg,1,1,30,30,1,9,1"]), encoding="utf-8")
    st2_train = csv_file(root, "st2", "train")
    st2_train.write_text(csv_text([*ST2_TRAIN, ST2_TRAIN[0]], ST2_HEADER), encoding="utf-8")
    empty = root / "train" / "1209" / "b.png"
    empty.write_bytes(b"")

    assert main(["validate", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"4 problem(s) in {root}:",
        f"  {csv_file(root, 'st1', 'train')}:3: {empty}: empty file (0 bytes)",
        f"  {st1_val}:2: Gender=9 out of range 0..4 (5 classes)",
        f"  {st2_train}:3: {empty}: empty file (0 bytes)",
        f"  {st2_train}:5: duplicate of line 2",
    ]


def test_cli_validate_clean_root_exits_0(tmp_path, capsys):
    root = make_root(tmp_path, dataset=True)
    assert main(["validate", str(root)]) == 0
    assert capsys.readouterr().out == f"{root}: OK (st1, st2)\n"


def test_cli_validate_malformed_classes_json_exits_1_not_a_traceback(tmp_path, capsys):
    root = make_root(tmp_path)
    (root / "classes.json").write_text('{"Color": [', encoding="utf-8")
    assert main(["validate", str(root)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"1 problem(s) in {root}:"
    assert re.fullmatch(rf"  {re.escape(str(root / 'classes.json'))}: not valid JSON \(.*\)", err[1])


# ------------------------------------------------------------------------------------------- image loading
def _write_png(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(png_bytes(array))


def _write_cv2(array: np.ndarray) -> Callable[[Path], None]:  # 16-bit PNGs (cv2 channel order: BGR)
    return lambda path: cv2.imwrite(str(path), array)


def _palette(transparent: bool) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        im = Image.new("P", (6, 4), 0)
        im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
        im.putpixel((5, 3), 1)
        im.save(path, format="PNG", **({"transparency": 0} if transparent else {}))

    return write


_RGBA = np.zeros((4, 6, 4), np.uint8)
_RGBA[...] = (200, 10, 20, 255)
_RGBA[0, 0, 3] = 0  # fully transparent -> white
_RGBA[0, 1, 3] = 128  # half -> blended with white: c * 128/255 + 255 * 127/255
_GRAY16 = np.zeros((4, 6), np.uint16)
_GRAY16[0, 0], _GRAY16[0, 1], _GRAY16[0, 2] = 65535, 32768, 255
_BGR16 = np.zeros((4, 6, 3), np.uint16)
_BGR16[0, 0] = (32768, 0, 65535)  # B, G, R
_BGRA16 = np.full((4, 6, 4), 65535, np.uint16)
_BGRA16[..., :2] = 0  # opaque red
_BGRA16[0, 0, 3] = 0  # transparent
_LA = np.zeros((4, 6, 2), np.uint8)
_LA[..., 0], _LA[..., 1] = 50, 255
_LA[0, 0, 1] = 0
_PNG_AS_JPG = np.zeros((4, 6, 3), np.uint8)
_PNG_AS_JPG[:, 3:] = (10, 250, 30)

# id, file name, writer, expected (row, col) -> RGB
LOAD_CASES = [
    (
        "rgba_png",
        "x.png",
        _write_png(_RGBA),
        [((0, 0), (255, 255, 255)), ((0, 1), (227, 132, 137)), ((3, 5), (200, 10, 20))],
    ),
    ("la_png", "x.png", _write_png(_LA), [((0, 0), (255, 255, 255)), ((1, 1), (50, 50, 50))]),
    ("grayscale_png", "x.png", _write_png(np.full((4, 6), 77, np.uint8)), [((2, 3), (77, 77, 77))]),
    (
        "grayscale_16bit_png",
        "x.png",
        _write_cv2(_GRAY16),
        [((0, 0), (255, 255, 255)), ((0, 1), (128, 128, 128)), ((0, 2), (0, 0, 0)), ((3, 5), (0, 0, 0))],
    ),
    ("rgb_16bit_png", "x.png", _write_cv2(_BGR16), [((0, 0), (255, 0, 128)), ((1, 1), (0, 0, 0))]),
    ("rgba_16bit_png", "x.png", _write_cv2(_BGRA16), [((0, 0), (255, 255, 255)), ((1, 1), (255, 0, 0))]),
    ("palette_png", "x.png", _palette(False), [((0, 0), (10, 20, 30)), ((3, 5), (200, 100, 50))]),
    (
        "palette_png_transparent",
        "x.png",
        _palette(True),
        [((0, 0), (255, 255, 255)), ((3, 5), (200, 100, 50))],
    ),
    ("png_named_jpg", "x.jpg", _write_png(_PNG_AS_JPG), [((0, 0), (0, 0, 0)), ((3, 5), (10, 250, 30))]),
    ("uppercase_extension", "X.JPG", _write_png(_PNG_AS_JPG), [((3, 5), (10, 250, 30))]),
]


@pytest.mark.parametrize("name,write,pixels", [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES])
def test_unusual_image_loads_exactly(tmp_path, name, write, pixels):
    path = tmp_path / name
    write(path)
    img = load_image(path)
    assert img.dtype == np.uint8 and img.shape == (4, 6, 3)
    assert image_size(path) == (6, 4)
    for (r, c), rgb in pixels:
        assert tuple(img[r, c]) == rgb, (r, c)


FAIL_CASES = [
    ("zero_bytes", "x.jpg", b"", "empty file (0 bytes)"),
    ("truncated_jpeg", "x.jpg", truncated_jpeg(), "truncated JPEG (no end-of-image marker)"),
    (
        "truncated_png",
        "x.png",
        png_bytes(np.zeros((40, 50, 3), np.uint8))[:-40],
        "truncated PNG (no IEND chunk)",
    ),
    ("text_named_jpg", "x.jpg", b"image_name,BBox_xmin\n", None),
    ("html_named_jpg", "x.jpg", b"<!DOCTYPE html><html>404 Not Found</html>", None),
    ("jpeg_magic_then_garbage", "x.jpg", b"\xff\xd8\xff" + b"\x00" * 100 + b"\xff\xd9", None),
    ("missing_file", "x.jpg", None, "file not found"),
]


@pytest.mark.parametrize("name,data,reason", [c[1:] for c in FAIL_CASES], ids=[c[0] for c in FAIL_CASES])
def test_broken_image_raises_naming_the_file(tmp_path, name, data, reason):
    path = tmp_path / "2BLOUSE 2019" / name
    path.parent.mkdir()
    if data is not None:
        path.write_bytes(data)
    reason = re.escape(reason) if reason else r"not a (decodable|readable) image .*"
    with pytest.raises(ImageLoadError, match=rf"^{re.escape(str(path))}: {reason}$"):
        load_image(path)
    with pytest.raises(ImageLoadError, match=rf"^{re.escape(str(path))}: {reason}$"):
        image_size(path)
