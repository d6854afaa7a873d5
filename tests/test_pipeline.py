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
