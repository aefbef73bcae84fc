"""Where outputs go: the project root is found from the working directory, never beside site-packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from fh_utils import paths

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(paths.OUTPUTS_ENV, raising=False)
    monkeypatch.delenv(paths.DATA_ENV, raising=False)


@pytest.fixture
def site_packages(tmp_path, monkeypatch) -> Path:
    """Pretend the package was installed (not editable): its parent folder is site-packages."""
    site = tmp_path / "venv" / "lib" / "python3.12" / "site-packages"
    (site / "fh_utils").mkdir(parents=True)
    monkeypatch.setattr(paths, "_PACKAGE_PARENT", site)
    return site


def test_root_is_found_above_the_working_directory_by_its_pyproject(tmp_path, monkeypatch, no_env, site_packages):
    project = tmp_path / "work" / "my-copy"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "fh-utils"\nversion = "0.1.0"\n')
    monkeypatch.chdir(project / "notebooks")  # where papermill runs the kernel
    assert paths.project_root() == project.resolve()
    assert paths.PROJECT_ROOT == project.resolve()
    assert paths.outputs_dir() == project.resolve() / "outputs"
    assert paths.runs_dir() == project.resolve() / "outputs" / "runs"
    assert paths.default_data_root() == project.resolve() / "data" / "demo"
    (project / "data" / "fashion-how").mkdir(parents=True)
    assert paths.default_data_root() == project.resolve() / "data" / "fashion-how"


def test_a_checkout_without_pyproject_is_recognised_by_its_folders(tmp_path, monkeypatch, no_env, site_packages):
    project = tmp_path / "checkout"
    (project / "notebooks").mkdir(parents=True)
    (project / "fh_utils").mkdir()
    monkeypatch.chdir(project / "notebooks")
    assert paths.project_root() == project.resolve()


def test_installed_package_writes_to_the_working_directory_not_site_packages(
    tmp_path, monkeypatch, no_env, site_packages
):
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "another-project"\n')  # not ours: no marker
    monkeypatch.chdir(elsewhere)
    assert paths.project_root() == elsewhere.resolve()
    assert paths.outputs_dir() == elsewhere.resolve() / "outputs"
    assert not paths.outputs_dir().is_relative_to(site_packages.parent)


def test_outside_any_project_an_editable_install_keeps_its_checkout(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    assert paths.project_root() == REPO  # the source checkout this package is imported from
    assert paths.outputs_dir() == REPO / "outputs"


def test_fh_outputs_wins(tmp_path, monkeypatch, site_packages):
    monkeypatch.setenv(paths.OUTPUTS_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    assert paths.outputs_dir() == tmp_path / "elsewhere"


def test_unknown_attribute_is_still_an_error():
    with pytest.raises(AttributeError, match="NO_SUCH_NAME"):
        paths.NO_SUCH_NAME  # noqa: B018


def test_a_typed_run_is_looked_up_as_given_then_from_the_root_then_under_outputs_runs(tmp_path, monkeypatch):
    """run_candidates' whole ordered list (duplicates dropped) and resolve_run_dir's miss naming it in that order."""
    from fh_utils.runs import resolve_run_dir, run_candidates

    proj = tmp_path.resolve() / "proj"
    (proj / "notebooks").mkdir(parents=True)
    (proj / "pyproject.toml").write_text('[project]\nname = "fh-utils"\n')
    runs = tmp_path.resolve() / "elsewhere" / "runs"
    monkeypatch.setenv(paths.OUTPUTS_ENV, str(runs.parent))
    monkeypatch.setenv("HOME", str(tmp_path.resolve() / "home"))
    monkeypatch.chdir(proj / "notebooks")
    assert run_candidates("outputs/runs/r1") == [proj / "notebooks" / "outputs/runs/r1", proj / "outputs/runs/r1",
                                                 runs / "outputs/runs/r1"]  # fmt: skip
    assert run_candidates(Path("r1")) == [proj / "notebooks" / "r1", proj / "r1", runs / "r1"]
    assert run_candidates(runs / "r1") == [runs / "r1"]  # absolute: the same path three times, kept once
    assert run_candidates("~/r1") == [tmp_path.resolve() / "home" / "r1"]
    for folder in (proj / "notebooks" / "r1", proj / "r1", runs / "r1", proj / "r2", runs / "r2", runs / "r3"):
        folder.mkdir(parents=True)
        (folder / "best.pt").touch()  # model_file only looks for the file
    assert resolve_run_dir("r1") == proj / "notebooks" / "r1"  # as given wins over the root and outputs/runs
    assert resolve_run_dir("r2") == proj / "r2"  # the root wins over outputs/runs
    assert resolve_run_dir("r3") == runs / "r3"
    monkeypatch.chdir(proj)  # typed at the root: "as given" and "from the root" are one place
    assert run_candidates("r1") == [proj / "r1", runs / "r1"]
    with pytest.raises(FileNotFoundError) as info:
        resolve_run_dir("nope")
    assert str(info.value) == (f"no best.pt / ensemble.pt / model_int8.pt for 'nope'; looked in {proj / 'nope'}, "
                               f"{runs / 'nope'}")  # fmt: skip
    monkeypatch.chdir(proj / "notebooks")
    with pytest.raises(FileNotFoundError) as info:
        resolve_run_dir("outputs/runs/nope")
    assert str(info.value) == ("no best.pt / ensemble.pt / model_int8.pt for 'outputs/runs/nope'; looked in "
                               f"{proj / 'notebooks/outputs/runs/nope'}, {proj / 'outputs/runs/nope'}, "
                               f"{runs / 'outputs/runs/nope'}")  # fmt: skip
