"""Text files in other encodings and names that look like numbers: one reader (deploy.text) for every command,
UTF-8 then Latin-1, a one-line error naming the file and line otherwise; class folders matched as text."""
import os
import shutil

import pytest

from data.datasets import discover, imagenet_synsets
from deploy.errors import UserError
from deploy.infer import folder_class_indices, main as infer_main
from deploy.text import is_ascii_number, read_text_lines
from tests.faults.conftest import assert_user_error, one_error_line, run_cli

CLASSES = 1000  # the suite's tiny model


def _write(path, data: bytes) -> str:
    with open(str(path), "wb") as handle:
        handle.write(data)
    return str(path)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8", "utf-8-sig", "utf-16"])
def test_class_names_in_any_stated_encoding_reach_deploy_infer(model_copy, images, tmp_path, capsys, encoding):
    names = ["café {}".format(i) for i in range(CLASSES)]
    labels = _write(tmp_path / "names.txt", "\n".join(names).encode(encoding))
    assert infer_main([model_copy, images, "--labels", labels, "--top-k", "1"]) == 0
    captured = capsys.readouterr()
    assert "café " in captured.out and "Traceback" not in captured.err


def test_a_latin1_listing_works_in_calibrate_as_in_deploy_infer(images, tmp_path):
    """The same reader: a listing saved in Latin-1 names a file called café.png, and it is found."""
    first = sorted(os.listdir(images))[0]
    os.rename(os.path.join(images, first), os.path.join(images, "café.png"))
    labels = _write(tmp_path / "labels.txt", "café.png 3\n".encode("latin-1"))
    found = discover(images, labels)
    assert [os.path.basename(p) for p in found.paths] == ["café.png"] and found.labels == [3]


def test_text_in_neither_encoding_names_its_file_and_line(model_copy, images, tmp_path, capsys):
    # Windows-1252 curly quotes: 0x93/0x94 are control characters in Latin-1, so no guess is made
    labels = _write(tmp_path / "names.txt", b"a\nb\n\x93quoted\x94\n" + b"x\n" * (CLASSES - 3))
    assert infer_main([model_copy, images, "--labels", labels]) == 2
    captured = capsys.readouterr()
    line = one_error_line(captured.err, captured.out)
    assert "names.txt line 3" in line and "UTF-8" in line
    result = run_cli(["calibrate", model_copy, "--data", images, "--labels", _write(tmp_path / "l.txt", b"a 1\n\x00")])
    assert_user_error(result, "l.txt line 2", "not text")


def test_line_numbers_count_every_kind_of_line_break(tmp_path):
    assert read_text_lines(_write(tmp_path / "t.txt", b"a\r\nb\rc\nd\n")) == ["a", "b", "c", "d"]
    with pytest.raises(UserError, match="line 4"):
        read_text_lines(_write(tmp_path / "u.txt", b"a\r\nb\rc\n\x0bd\n"))


@pytest.mark.parametrize("folders", [["²", "٣"], ["0", "٣"], ["1", "2"]])
def test_class_folders_are_numbers_only_in_ascii_digits(model_copy, images, tmp_path, capsys, folders):
    tree = tmp_path / "tree"
    for folder, photo in zip(folders, sorted(os.listdir(images))):
        os.makedirs(str(tree / folder))
        shutil.copy(os.path.join(images, photo), str(tree / folder / photo))
    assert infer_main([model_copy, str(tree), "--json"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    ascii_only = all(is_ascii_number(name) for name in folders)
    assert ('"accuracy": {' in captured.out) == ascii_only, captured.out[-400:]
    assert folder_class_indices(folders, CLASSES, None) == ({f: int(f) for f in folders} if ascii_only else None)


def test_str_isdigit_is_not_the_test():
    assert "²".isdigit() and "٣".isdigit()
    assert not is_ascii_number("²") and not is_ascii_number("٣") and not is_ascii_number("1\n")
    assert is_ascii_number("0042")


def test_loc_csv_with_a_blank_first_line(images, tmp_path):
    synsets = imagenet_synsets()
    names = sorted(os.listdir(images))
    rows = []
    for index, name in enumerate(names):
        image_id = "ILSVRC2012_val_{:08d}".format(index + 1)
        os.rename(os.path.join(images, name), os.path.join(images, image_id + ".png"))
        rows.append("{},{} 1 2 3 4".format(image_id, synsets[index * 7]))
    csv_path = _write(tmp_path / "LOC_val_solution.csv",
                      ("\n\nImageId,PredictionString\n" + "\n".join(rows) + "\nbad row\n").encode("utf-8"))
    with pytest.raises(UserError, match="LOC_val_solution.csv line {}:".format(len(rows) + 4)):
        discover(images, csv_path)  # the line numbers count the blank lines too
    _write(csv_path, ("\n\nImageId,PredictionString\n" + "\n".join(rows) + "\n").encode("utf-8"))
    found = discover(images, csv_path)
    assert found.labels == [index * 7 for index in range(len(names))]


def test_attention_classes_match_folder_names_as_text():
    from analysis.attention.classes import choose_classes
    folders = ["²", "٣", "7"]
    chosen = choose_classes("²,7", folders, labels=[0, 1, 2])
    assert [c.index for c in chosen] == [0, 2] and [c.display for c in chosen] == ["²", "class 7"]
    chosen = choose_classes("1", folders, labels=[0, 1, 2])  # an ASCII number is an index
    assert [c.name for c in chosen] == ["٣"]
    with pytest.raises(UserError, match="unknown class"):
        choose_classes("³", folders, labels=[0, 1, 2])
