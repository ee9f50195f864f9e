import gzip
import hashlib
import shutil
from importlib import resources
from pathlib import Path

import pytest

import motune as mt
from motune.data import adult_frame, german_credit_frame

SHA256 = {  # from ../shared/data/README.md: the original UCI files
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
    "german.data": "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871",
}
FILES = resources.files("motune.data") / "files"


@pytest.mark.parametrize("name", sorted(SHA256))
def test_shipped_files_are_the_original_uci_files(name):
    raw = gzip.decompress((FILES / f"{name}.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == SHA256[name]


def test_attribution_ships_with_the_data():
    text = (FILES / "ATTRIBUTION.md").read_text()
    assert "10.24432/C5XW20" in text and "10.24432/C5NC77" in text and "CC BY 4.0" in text


def test_adult_frame_and_task():
    frame = adult_frame()
    assert len(frame) == 48842 and "fnlwgt" not in frame.columns
    assert set(frame["income"]) == {">50K", "<=50K"}
    assert frame["workclass"].isna().sum() > 0  # '?' is missing
    task = mt.data.adult(sensitive="race", max_rows=2000, seed=1)
    assert task.positive_label == ">50K" and len(task.y_train) + len(task.y_valid) + len(task.y_test) == 2000
    assert "White" in task.groups and 0.15 < task.y_train.mean() < 0.35
    assert "Becker" in task.citation


def test_adult_reads_a_users_own_copy(tmp_path):
    for name in ("adult.data", "adult.test"):
        with gzip.open(FILES / f"{name}.gz") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    mine = adult_frame(path=tmp_path)
    assert mine.equals(adult_frame())
    with pytest.raises(FileNotFoundError, match="adult.data"):
        adult_frame(path=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="source"):
        adult_frame(source="kaggle")


def _shared_layout(folder: Path) -> Path:
    """../shared/data's layout (adult/adult.data, adult/adult.test, german/german.data) under ``folder``:
    the real folder when it is beside the checkout, else one built from the packaged files (the same
    bytes, checked by test_shipped_files_are_the_original_uci_files), so this test runs on any clone."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if shared.joinpath("adult", "adult.data").is_file():
        return shared
    for sub, name in (("adult", "adult.data"), ("adult", "adult.test"), ("german", "german.data")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / name).write_bytes(gzip.decompress((FILES / f"{name}.gz").read_bytes()))
    return folder


def test_adult_and_german_credit_from_a_shared_data_folder(tmp_path):
    shared = _shared_layout(tmp_path)
    for sub, name in (("adult", "adult.data"), ("adult", "adult.test"), ("german", "german.data")):
        assert hashlib.sha256((shared / sub / name).read_bytes()).hexdigest() == SHA256[name]
    assert adult_frame(path=shared / "adult").equals(adult_frame())
    assert german_credit_frame(path=shared / "german").equals(german_credit_frame())


def test_german_credit():
    frame = german_credit_frame()
    assert len(frame) == 1000 and (frame["credit"] == "good").sum() == 700
    assert set(frame["sex"]) == {"male", "female"} and (frame["sex"] == "female").sum() == 310
    task = mt.data.german_credit(sensitive="age_group")
    assert task.groups == ["25_and_over", "under_25"] and "sex" not in task.X_train.columns
    with pytest.raises(ValueError, match="sensitive must be"):
        mt.data.german_credit(sensitive="race")
