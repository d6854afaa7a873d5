"""``--engine ray``: Ray Data decoding tasks + model actors give the local engine's results, survive a killed actor,
and ``prepare``'s validation/hashing on Ray equals the thread pool's. One embedded Ray session for the module."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from nsfwkit.classify import classify
from nsfwkit.results import classify_to, read_results

from data_helpers import tiny_backbone
from results_helpers import by_path, max_prob_difference, require_ray, write_animation, write_images


@pytest.fixture(scope="module")
def ray_session():
    ray = require_ray()
    from nsfwkit.engines import ray_engine

    ray_engine.start(num_cpus=3)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_backbone(tmp_path_factory.mktemp("model"), image_size=16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("in")
    write_images(root, 24)
    write_animation(root / "anim.gif", frames=4)
    (root / "broken.jpg").write_text("<html>403</html>")
    return root


@pytest.mark.parametrize("frames", ["worst", "all"])
def test_ray_equals_local_engine(ray_session, tiny, inputs, tmp_path, frames):
    run = classify_to(tmp_path / "out", [inputs], model=str(tiny), engine="ray", batch_size=5, frames=frames,
                      ray_options={"actors": 2})
    assert run["classified"] == 26 and run["failed"] == 1
    got = read_results(tmp_path / "out")
    want = list(classify([inputs], model=str(tiny), frames=frames))
    if frames == "all":
        key = lambda r: (r.path, r.frame)  # noqa: E731
        assert sorted(map(key, got)) == sorted(map(key, want))
        got, want = {key(r): r for r in got}, {key(r): r for r in want}
    else:
        got, want = by_path(got), by_path(want)
    assert max_prob_difference(got, want) <= 1e-5
    assert all(got[k].frames == want[k].frames and got[k].frame == want[k].frame for k in got)


def test_ray_run_resumes_like_the_local_one(ray_session, tiny, inputs, tmp_path):
    out = tmp_path / "out"
    classify_to(out, [inputs], model=str(tiny))  # local first
    run = classify_to(out, [inputs], model=str(tiny), engine="ray")
    assert run["classified"] == 0 and run["skipped"] == 26


def _model_actor_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any("MapWorker" in part and "_Infer" in part for part in (p.info["cmdline"] or []))]


def test_killed_actor_still_gives_every_file_once(ray_session, tiny, tmp_path):
    write_images(tmp_path / "many", 300, size=16)
    killed = []

    def kill_one(result) -> None:
        pids = _model_actor_pids()
        if not killed and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    run = classify_to(tmp_path / "out", [tmp_path / "many"], model=str(tiny), engine="ray", batch_size=4,
                      on_result=kill_one, ray_options={"actors": 1})
    assert killed, "no model actor process was found to kill"
    got = by_path(read_results(tmp_path / "out"))
    assert len(got) == 300 and run["classified"] == 300
    assert max_prob_difference(got, by_path(classify([tmp_path / "many"], model=str(tiny)))) <= 1e-5


def test_more_actors_than_cpus_is_refused_not_a_hang(ray_session, tiny, inputs, tmp_path):
    with pytest.raises(ValueError, match="needs 3.5 CPUs"):
        classify_to(tmp_path / "out", [inputs], model=str(tiny), engine="ray", ray_options={"actors": 3})


def test_prepare_validation_on_ray_equals_the_thread_pool(ray_session, inputs):
    from nsfwkit.data.scan import validate_files
    from nsfwkit.engines import ray_engine

    files = [(str(p), "neutral") for p in sorted(inputs.iterdir())]
    assert ray_engine.validate_files(files) == validate_files(files, progress=False)


@pytest.mark.slow
def test_ray_equals_local_with_the_default_model(ray_session, default_model, inputs, tmp_path):
    model, spec = default_model
    classify_to(tmp_path / "out", [inputs], model="mobilenet_v2", engine="ray", ray_options={"actors": 1})
    got = by_path(read_results(tmp_path / "out"))
    assert max_prob_difference(got, by_path(classify([inputs], model=model, spec=spec))) <= 1e-5


def test_cli_engine_ray(ray_session, tiny, inputs, tmp_path):
    from nsfwkit import cli

    out = tmp_path / "out"
    args = ["classify", str(inputs), "--model", str(tiny), "--out", str(out), "--engine", "ray", "--actors", "1", "-q"]
    assert cli.main(args) == 1  # the broken file
    assert len(by_path(read_results(out))) == 26
    assert cli.main(args) == 1  # resumed: nothing left to do, but the folder still holds the failure
