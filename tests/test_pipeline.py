"""The notebook runner: stage discovery, parameters, run folders, and failures that name the cell."""

from __future__ import annotations

import json

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nsfwkit import pipeline


def write_nb(path, *cells, params='run_dir: str = ""  # run folder\nvalue: int = 1  # a number'):
    nb = new_notebook(cells=[new_markdown_cell("# t"), new_code_cell(params, metadata={"tags": ["parameters"]}),
                             *[new_code_cell(c) for c in cells]],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)


@pytest.fixture
def series(tmp_path):
    nbs = tmp_path / "notebooks"
    (nbs / "params" / "smoke").mkdir(parents=True)
    write_nb(nbs / "00_first.ipynb",
             "from pathlib import Path\nout = Path(run_dir) / '00_first'\nout.mkdir(exist_ok=True)\n"
             "(out / 'value.txt').write_text(str(value))")
    write_nb(nbs / "01_second.ipynb",
             "from pathlib import Path\nv = int((Path(run_dir) / '00_first' / 'value.txt').read_text())",
             "x = 1\ny = v * 10\nassert y < 50, f'value too big: {y}'")
    (nbs / "10_not_a_stage.txt").write_text("")
    (nbs / "scratch.ipynb").write_text("{}")
    (nbs / "params" / "smoke" / "00_first.yaml").write_text("value: 2\n")
    return nbs


def test_stages_are_discovered_in_order(series):
    assert [s.name for s in pipeline.stages(series)] == ["00_first", "01_second"]
    repo = [s.name for s in pipeline.stages()]
    assert repo[0] == "00_classify" and repo == sorted(repo)


def test_param_sets_and_files(series, tmp_path):
    names = ["00_first", "01_second"]
    assert pipeline.load_params("smoke", names, series) == {"00_first": {"value": 2}, "01_second": {}}
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"all": {"value": 3}, "second": {"value": 4}}))
    assert pipeline.load_params(f, names, series) == {"00_first": {"value": 3}, "01_second": {"value": 4}}
    f.write_text(yaml.safe_dump({"third": {}}))
    with pytest.raises(ValueError, match="unknown stages"):
        pipeline.load_params(f, names, series)
    with pytest.raises(ValueError, match="not a parameter set"):
        pipeline.load_params("nope", names, series)


def test_run_writes_notebooks_params_and_artifacts(series, tmp_path):
    run_dir = pipeline.run("smoke", name="ok", notebooks=series, runs=tmp_path / "runs", progress=False)
    assert (run_dir / "00_first" / "value.txt").read_text() == "2"
    assert (run_dir / "notebooks" / "01_second.ipynb").is_file()
    used = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert used["00_first"] == {"value": 2, "run_dir": str(run_dir)}
    record = json.loads((run_dir / "run.json").read_text())
    assert [record["stages"][s]["status"] for s in ("00_first", "01_second")] == ["ok", "ok"]


def test_failure_names_notebook_and_cell_and_keeps_earlier_outputs(series, tmp_path):
    (series / "params" / "big").mkdir()
    (series / "params" / "big" / "00_first.yaml").write_text("value: 9\n")
    with pytest.raises(pipeline.StageFailed) as info:
        pipeline.run("big", name="bad", notebooks=series, runs=tmp_path / "runs", progress=False)
    message = str(info.value)
    assert "01_second.ipynb" in message and "cell" in message and "value too big: 90" in message
    run_dir = tmp_path / "runs" / "bad"
    assert (run_dir / "00_first" / "value.txt").read_text() == "9"  # earlier stage kept
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["01_second"]["status"] == "failed"


def test_select_stages_by_number_or_name(series, tmp_path):
    run_dir = pipeline.run(None, name="one", select=["00"], notebooks=series, runs=tmp_path / "runs",
                           progress=False)
    assert (run_dir / "notebooks" / "00_first.ipynb").is_file()
    assert not (run_dir / "notebooks" / "01_second.ipynb").exists()
    with pytest.raises(ValueError, match="unknown stage"):
        pipeline.run(None, select=["07"], notebooks=series, runs=tmp_path / "runs")
    with pytest.raises(ValueError, match="run name"):
        pipeline.run(None, name="../escape", notebooks=series, runs=tmp_path / "runs")


def test_cell_timeout_is_a_stage_failure_naming_the_cell(series, tmp_path):
    write_nb(series / "02_slow.ipynb", "import time\ntime.sleep(30)")
    with pytest.raises(pipeline.StageFailed) as info:
        pipeline.run(None, name="slow", select=["02"], notebooks=series, runs=tmp_path / "runs",
                     progress=False, timeout=2)
    # cell 3 of the executed notebook (papermill inserts the injected-parameters cell)
    assert "02_slow.ipynb" in str(info.value) and "cell 3 ('import time')" in str(info.value)
    assert "CellTimeoutError" in str(info.value)
    record = json.loads((tmp_path / "runs" / "slow" / "run.json").read_text())
    assert record["stages"]["02_slow"]["status"] == "failed"


def test_dead_kernel_is_a_stage_failure(series, tmp_path):
    write_nb(series / "02_crash.ipynb", "import os\nos._exit(1)")
    with pytest.raises(pipeline.StageFailed) as info:
        pipeline.run(None, name="crash", select=["02"], notebooks=series, runs=tmp_path / "runs",
                     progress=False)
    assert "02_crash.ipynb" in str(info.value)
    record = json.loads((tmp_path / "runs" / "crash" / "run.json").read_text())
    assert record["stages"]["02_crash"]["status"] == "failed"


# --------------------------------------------------------------------------------------------
# Issue 9 finding 10: parameters are checked against the notebooks before any kernel starts
# --------------------------------------------------------------------------------------------
TYPED = ('run_dir: str = ""  # run folder\nrate: float = 0.5  # a float\nname: str = "a"  # a string\n'
         'flag: bool = False  # a switch\nitems: list = []  # a list\ncount: int = 1  # a number')


@pytest.fixture
def typed(series):
    write_nb(series / "02_typed.ipynb", "print(rate, name, flag, items, count)", params=TYPED)
    return series


@pytest.mark.parametrize("values,message", [
    ({"cuont": 2}, r"02_typed.ipynb: unknown parameter 'cuont' \(did you mean 'count'\?\); the parameters are "
                   r"count, flag, items, name, rate"),
    ({"count": "2"}, r"02_typed.ipynb: parameter 'count' must be int \(default 1\), got str '2'"),
    ({"count": True}, r"'count' must be int .*got bool True"),
    ({"count": 1.5}, r"'count' must be int .*got float 1.5"),
    ({"rate": "0.5"}, r"'rate' must be float .*got str"),
    ({"flag": "yes"}, r"'flag' must be bool .*got str 'yes'"),
    ({"items": "float32"}, r"'items' must be list .*got str 'float32'"),
    ({"name": 3}, r"'name' must be str .*got int 3"),
    ({"run_dir": "/elsewhere"}, r"run_dir is set by nsfwkit run"),
])
def test_wrong_parameters_fail_before_any_kernel(typed, tmp_path, values, message):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"typed": values}))
    with pytest.raises(pipeline.ParameterError, match=message) as info:
        pipeline.run(f, name="never", notebooks=typed, runs=tmp_path / "runs", progress=False)
    assert str(info.value).startswith(f"{f}: ") and "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()  # refused before a run folder or a kernel existed


def test_well_typed_parameters_pass_and_all_goes_to_the_stages_that_have_it(typed, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("all:\n  value: 3\n  rate: 2\ntyped:\n  items: [a]\n  flag: true\n  rate: 1\n")
    got = pipeline.load_params(f, ["00_first", "02_typed"], typed)
    assert got == {"00_first": {"value": 3}, "02_typed": {"rate": 1, "items": ["a"], "flag": True}}
    f.write_text("all:\n  valeu: 3\n  rate: 2\n  count: x\n")
    with pytest.raises(pipeline.ParameterError, match=r"2 problems: .*all: unknown parameter 'valeu' \(did you "
                                                      r"mean 'value'\?\).*'count' must be int"):
        pipeline.load_params(f, ["00_first", "02_typed"], typed)


@pytest.mark.parametrize("text,where", [
    ("typed:\n  count: 1\n   name: x\n", "line 3, column 8"),
    ("typed: [count: 1\n", "line 2, column 1"),
    ("typed:\n\tcount: 1\n", "line 2, column 1"),
])
def test_malformed_yaml_is_one_line_naming_file_and_line(typed, tmp_path, text, where):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(pipeline.ParameterError, match="not valid YAML") as info:
        pipeline.run(f, notebooks=typed, runs=tmp_path / "runs", progress=False)
    message = str(info.value)
    assert message.startswith(f"{f}: {where}: not valid YAML (") and "\n" not in message
    (typed / "params" / "smoke" / "02_typed.yaml").write_text("count: [1\n")
    with pytest.raises(pipeline.ParameterError, match=r"02_typed.yaml: line 2, column 1: not valid YAML"):
        pipeline.load_params("smoke", ["02_typed"], typed)


def test_parameters_cell_papermill_cannot_read_is_refused(series, tmp_path):
    """papermill skips (with a log warning only) a line with '=' in its comment: the value would be lost."""
    write_nb(series / "02_eq.ipynb", "pass", params='run_dir: str = ""  # run folder\nq: list = []  # (a = b)')
    with pytest.raises(pipeline.ParameterError, match=r"02_eq.ipynb: papermill cannot read its parameters cell "
                                                      r"\(Unable to parse line 2"):
        pipeline.run(None, select=["02"], notebooks=series, runs=tmp_path / "runs", progress=False)
    write_nb(series / "02_eq.ipynb", "pass", params='q: list = []  # no run folder')
    with pytest.raises(pipeline.ParameterError, match="02_eq.ipynb: no run_dir parameter"):
        pipeline.load_params(None, ["02_eq"], series)


def test_repository_parameter_sets_fit_the_notebooks():
    for params in pipeline.PARAM_SETS:
        names = [s.name for s in pipeline.stages()]
        assert set(pipeline.load_params(params, names)) == set(names)


def test_stage_that_classified_nothing_fails(tmp_path):
    """`images_dir: /nonexistent` used to mark 00_classify ok with 0 images."""
    f = tmp_path / "p.yaml"
    f.write_text(f"classify:\n  images_dir: {tmp_path / 'nonexistent'}\n")
    with pytest.raises(pipeline.StageFailed) as info:
        pipeline.run(f, name="empty", select=["00"], runs=tmp_path / "runs", progress=False)
    message = str(info.value)
    assert "00_classify.ipynb failed in cell" in message and "results = list(classify.classify(" in message
    assert "NothingClassifiedError: no image was classified" in message and "nonexistent" in message
    record = json.loads((tmp_path / "runs" / "empty" / "run.json").read_text())
    assert record["stages"]["00_classify"]["status"] == "failed"
