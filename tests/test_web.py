"""The web view in headless Chromium (playwright-core driving Debian's chromium): it loads with
no console errors, renders the galleries, classifies an uploaded image like Keras, makes no
request outside its origin; plus the exported models' parity in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from nsfwkit import cli, convert, fileio, serve, webview

from convert_helpers import (
    ARTIFACTS,
    CHROMIUM,
    build_tiny_model,
    require_chromium,
    require_converter,
    require_node,
    tiny_spec,
    write_gallery_manifests,
)

browser = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(exported, tmp_path_factory):
    """A built site with gallery manifests and the quantised models under extra/<q>/."""
    require_node()
    root = tmp_path_factory.mktemp("site")
    galleries = tmp_path_factory.mktemp("viz")
    expected = write_gallery_manifests(galleries)
    index = webview.build(root, export_dir=exported.out_dir, galleries_from=galleries)
    for q in ("float16", "uint8"):
        shutil.copytree(exported.tfjs[q], index.parent / "extra" / q)
    return index.parent, expected


def _browse(url: str, **request) -> dict:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return convert.run_node("browser_check.mjs",
                                {"url": url, "chromium": CHROMIUM, "user_data_dir": profile, **request},
                                timeout=240)


@pytest.mark.slow
def test_build_layout(site):
    root, _ = site
    for name in webview.PAGE_FILES + ("site.json", "model/model.json", "vendor/tf.min.js",
                                      "vendor/tfjs-backend-wasm-simd.wasm"):
        assert (root / name).is_file(), name
    info = json.loads((root / "site.json").read_text())
    assert info["galleries"] == {"filters": "filters/manifest.json", "activation": "activation/manifest.json",
                                 "cam": "cam/manifest.json"}
    assert info["model_metadata"]["quantization"] == "float32"
    html = (root / "index.html").read_text()
    assert "http://" not in html and "https://" not in html   # nothing fetched from elsewhere
    assert "connect-src 'self'" in html


@browser[0]
@browser[1]
def test_web_view_in_chromium(site, default_model, test_images, tmp_path):
    require_chromium()
    from PIL import Image

    root, expected_counts = site
    model, spec = default_model
    img = test_images["astronaut"]
    upload = tmp_path / "astronaut.png"      # PNG: the browser decodes the same bytes as PIL
    Image.fromarray(img).save(upload)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web_view.png"
    server = serve.serve_in_thread(root)
    try:
        out = _browse(server.url, upload=str(upload), galleries=True, screenshot=str(shot))
    finally:
        server.shutdown()
    assert out["page_errors"] == []
    assert [m for m in out["console"] if m["type"] in ("error", "warning")] == []
    assert out["backend"] == "wasm"
    # no request leaves the origin (and none is made for the user's image)
    origin = urllib.parse.urlsplit(server.url).netloc
    assert out["requests"] and all(urllib.parse.urlsplit(u).netloc == origin for u in out["requests"])
    assert not any("astronaut" in u for u in out["requests"])
    # the uploaded image is classified like Keras, within the float32 tolerance
    keras_p = convert.keras_probabilities(model, [img])[0]
    page_p = np.array([out["upload"]["probs"][c] for c in spec.class_names])
    assert np.abs(page_p - keras_p).max() <= convert.TOLERANCES["float32"]
    nsfw = keras_p[list(spec.nsfw_indices)].sum()
    assert out["upload"]["nsfw_score"] == pytest.approx(nsfw, abs=1e-5)
    assert out["upload"]["verdict"].startswith("NSFW" if nsfw >= spec.threshold else "SFW")
    assert out["upload"]["cam"] is True
    # galleries: every tab and layer rendered, no broken image
    for kind, count in expected_counts.items():
        assert out["galleries"][kind]["images"] == count, (kind, out["galleries"])
        assert out["galleries"][kind]["broken"] == 0
    assert out["galleries"]["filters"]["layers"] == 2
    assert shot.is_file() and shot.stat().st_size > 10_000


@browser[0]
@browser[1]
def test_explanations_in_chromium(site, default_model, test_images, tmp_path):
    """Vanilla gradients computed in the page match Python's, render over the image, and the methods
    the page does not compute are listed as Python's (from site.json, i.e. attributions.ALL_METHODS)."""
    require_chromium()
    from PIL import Image

    from nsfwkit import images
    from nsfwkit.viz import attributions

    root, _ = site
    model, _ = default_model
    img = test_images["astronaut"]
    upload = tmp_path / "astronaut.png"
    Image.fromarray(img).save(upload)
    server = serve.serve_in_thread(root)
    try:
        out = _browse(server.url, upload=str(upload), explain=["gradients", "smoothgrad", "grad_cam"])
    finally:
        server.shutdown()
    explain = out["explain"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings = {m: round(r["ms"]) for m, r in explain["maps"].items() if r}
    (ARTIFACTS / "web_explain_ms.json").write_text(json.dumps(timings) + "\n")
    print(f"ms per map in Chromium (wasm): {timings}")
    assert out["page_errors"] == []
    assert [m for m in out["console"] if m["type"] in ("error", "warning")] == []
    assert explain["options"] == ["grad_cam", "gradients"]
    python_only = [m for m in attributions.ALL_METHODS if m not in explain["options"]]
    assert explain["python"].startswith(f"Computed in Python: {', '.join(python_only)}")
    grads = explain["maps"]["gradients"]
    assert grads["caption"].startswith("vanilla gradients · ") and grads["caption"].endswith("input pixels")
    assert (grads["height"], grads["width"]) == (224, 224) and grads["peak"] == pytest.approx(1.0)
    assert 0.001 < grads["hot"] < 0.5            # a few hot pixels, not a blank or saturated map
    assert grads["overlay_diff"] > 5              # the drawn overlay differs from the bare image
    expected = attributions.gradients(model, images.resize(img, 224)[None])[0]
    page = np.asarray(grads["heatmap"], np.float32).reshape(224, 224)
    assert np.abs(page - expected).max() < 1e-3   # the same map as Python's (float32 round-off)
    # SmoothGrad (reachable through the page's API, not offered: see the timings) averages noisy copies
    smooth = explain["maps"]["smoothgrad"]
    assert smooth["caption"].startswith("SmoothGrad (8 samples) · ") and smooth["peak"] == pytest.approx(1.0)
    smooth_map = np.asarray(smooth["heatmap"], np.float32)
    assert np.count_nonzero(smooth_map) > smooth_map.size / 2 and not np.array_equal(smooth_map, page)
    assert explain["maps"]["grad_cam"]["caption"].startswith("Grad-CAM · ")


@browser[0]
@browser[1]
@pytest.mark.parametrize("quantization", ["float32", "float16", "uint8"])
def test_exported_models_match_keras_in_chromium(quantization, site, exported, default_model, test_images,
                                                 tmp_path):
    require_chromium()
    model, _ = default_model
    root, _ = site
    picked = {k: test_images[k] for k in ("chelsea", "rocket", "noise_61x37", "gradient_224")}
    items = []
    for name, img in picked.items():
        file = tmp_path / f"{name}.rgb"
        img.tofile(file)
        items.append({"name": name, "width": img.shape[1], "height": img.shape[0], "file": str(file),
                      "model_url": None if quantization == "float32" else f"extra/{quantization}/model.json"})
    server = serve.serve_in_thread(root)
    try:
        out = _browse(server.url, pixels=items)
    finally:
        server.shutdown()
    assert out["page_errors"] == []
    browser = np.array([r["probs"] for r in out["pixels"]])
    report = convert.compare(convert.keras_probabilities(model, list(picked.values())), browser,
                             quantization=quantization)
    assert report.top1_agree == 1.0, report.summary()
    assert report.max_abs_diff <= convert.TOLERANCES[quantization], report.summary()
    # Chromium and Node run the same wasm kernels: identical to Node's answer
    node = convert.tfjs_probabilities(exported.tfjs[quantization], list(picked.values()))["probs"]
    assert np.abs(node - browser).max() <= 1e-6


def test_find_galleries_in_a_run_folder(tmp_path):
    write_gallery_manifests(tmp_path / "04_filters")
    shutil.rmtree(tmp_path / "04_filters" / "activation")
    write_gallery_manifests(tmp_path / "06_cam")
    shutil.rmtree(tmp_path / "06_cam" / "filters")
    (tmp_path / "05_broken" / "activation").mkdir(parents=True)
    (tmp_path / "05_broken" / "activation" / "manifest.json").write_text("{not json")
    found = webview.find_galleries(tmp_path)
    assert found == {"filters": tmp_path / "04_filters" / "filters",
                     "activation": tmp_path / "06_cam" / "activation",
                     "cam": tmp_path / "06_cam" / "activation"}


# --------------------------------------------------------------------------------------------
# Where the site goes, and what it may replace (fast: a fake TF.js model and fake node_modules)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fake_inputs(tmp_path, monkeypatch):
    """``(model_dir, node_modules)``: a minimal nsfwkit model.json and the vendored file names;
    ``dist/`` and the cache redirected into ``tmp_path``."""
    monkeypatch.setenv("NSFWKIT_DIST", str(tmp_path / "dist"))
    monkeypatch.setenv("NSFWKIT_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "fake_model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps(
        {"userDefinedMetadata": {"nsfwkit": {"quantization": "float32", "image_size": 32}}}))
    (model_dir / "group1-shard1of1.bin").write_bytes(b"\0" * 16)
    node_modules = tmp_path / "node_modules"
    for rel in webview.VENDOR_FILES.values():
        (node_modules / rel).parent.mkdir(parents=True, exist_ok=True)
        (node_modules / rel).write_bytes(b"// vendored")
    return model_dir, node_modules


def test_build_web_leaves_a_trained_model_in_dist_intact(fake_inputs, tmp_path):
    """The README workflow: train into dist/model/, then build-web (default out)."""
    model_dir, node_modules = fake_inputs
    dist = tmp_path / "dist"
    (dist / "model").mkdir(parents=True)
    (dist / "model" / "model.keras").write_bytes(b"weights of a week of training")
    (dist / "index.html").write_text("the user's page")
    for _ in range(2):     # a rebuild replaces the previous build
        index = webview.build(export_dir=model_dir, node_modules=node_modules)
        assert index == dist / "web" / "index.html" and index.is_file()
    assert (dist / "model" / "model.keras").read_bytes() == b"weights of a week of training"
    assert (dist / "index.html").read_text() == "the user's page"
    site = dist / "web"
    assert (site / webview.MARKER).is_file() and (site / "model" / "model.json").is_file()
    assert sorted(p.name for p in dist.iterdir()) == ["index.html", "model", "web"]   # no staging left


def test_build_web_refuses_a_folder_it_did_not_build(fake_inputs, tmp_path, capsys, monkeypatch):
    model_dir, node_modules = fake_inputs
    mine = tmp_path / "dist"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "model.keras").write_bytes(b"mine")
    with pytest.raises(webview.SiteFolderError, match="not a web view built by nsfwkit"):
        webview.build(mine, export_dir=model_dir, node_modules=node_modules)
    assert (mine / "model" / "model.keras").read_bytes() == b"mine"
    assert sorted(p.name for p in mine.iterdir()) == ["model"]
    # the CLI: a usage error with the reason, no traceback
    assert cli.main(["build-web", "--out", str(mine), "--export", str(model_dir)]) == 2
    assert "nsfwkit build-web: " in capsys.readouterr().err
    assert (mine / "model" / "model.keras").read_bytes() == b"mine"
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    assert webview.build(tmp_path / "empty", export_dir=model_dir, node_modules=node_modules).is_file()


def test_build_web_into_an_older_kits_site_keeps_the_users_files(fake_inputs, tmp_path):
    model_dir, node_modules = fake_inputs
    old = tmp_path / "oldsite"
    (old / "vendor").mkdir(parents=True)
    (old / "vendor" / "tf.min.js").write_text("// an old build")
    (old / "index.html").write_text("the old page")
    (old / webview.LEGACY_MARKER).write_text("")
    (old / "mynotes").mkdir()
    (old / "mynotes" / "n.txt").write_text("my notes")
    (old / "todo.md").write_text("mine")
    webview.build(old, export_dir=model_dir, node_modules=node_modules)
    assert (old / "mynotes" / "n.txt").read_text() == "my notes"
    assert (old / "todo.md").read_text() == "mine"
    assert (old / "index.html").read_text() != "the old page" and (old / "model" / "model.json").is_file()
    assert not (old / webview.LEGACY_MARKER).exists()        # the old build's marker went with it
    assert "mynotes" not in fileio.owned_entries(old) and "todo.md" not in fileio.owned_entries(old)
    webview.build(old, export_dir=model_dir, node_modules=node_modules)    # a rebuild keeps them too
    assert (old / "mynotes" / "n.txt").read_text() == "my notes"


def test_build_web_folder_modes_and_galleries(fake_inputs, tmp_path):
    """Folders are 0755 under umask 022 (not mkdtemp's 0700); galleries are copied in, found in
    dist/ by default, and kept by a rebuild."""
    model_dir, node_modules = fake_inputs
    os.chmod(model_dir, 0o700)          # e.g. an export made by an older version
    expected = write_gallery_manifests(tmp_path / "dist")
    old = os.umask(0o022)
    try:
        index = webview.build(export_dir=model_dir, node_modules=node_modules)
    finally:
        os.umask(old)
    site = index.parent
    for folder in [site] + [p for p in site.rglob("*") if p.is_dir()]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    info = json.loads((site / "site.json").read_text())
    assert set(info["galleries"]) == set(expected) == {"filters", "activation", "cam"}
    from nsfwkit.viz.attributions import ALL_METHODS

    assert info["explanation_methods"] == list(ALL_METHODS)   # the page's one list of methods
    for rel in info["galleries"].values():
        assert (site / rel).is_file()
    shutil.rmtree(tmp_path / "dist" / "filters")
    shutil.rmtree(tmp_path / "dist" / "activation")
    webview.build(export_dir=model_dir, node_modules=node_modules)       # kept from the last build
    info = json.loads((site / "site.json").read_text())
    assert set(info["galleries"]) == {"filters", "activation", "cam"}
    assert (site / "filters" / "manifest.json").is_file() and (site / "cam" / "manifest.json").is_file()


def test_export_cache_key_is_a_name_not_a_path(fake_inputs, tmp_path):
    cache = tmp_path / "cache" / "exports"
    assert webview.export_cache_dir("mobilenet_v2") == cache / "mobilenet_v2"
    a = tmp_path / "a" / "model.keras"
    b = tmp_path / "b" / "model.keras"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"x")
    key_a = webview.export_cache_dir(str(a))
    assert key_a.parent == cache and key_a.name.startswith("model-")
    assert webview.export_cache_dir(str(b)) != key_a                   # same name, other file
    rel = os.path.relpath(a)
    assert webview.export_cache_dir(rel) == key_a                       # relative = resolved
    os.utime(a, ns=(1, 1))
    assert webview.export_cache_dir(str(a)) != key_a                    # retrained: new export


@pytest.mark.slow
def test_build_web_from_an_absolute_keras_path(fake_inputs, tmp_path):
    """`build-web --model /abs/x.keras` used to make the cache path the model's own path."""
    require_converter()
    _, node_modules = fake_inputs
    path = tmp_path / "models" / "tiny.keras"
    path.parent.mkdir()
    build_tiny_model().save(path)
    tiny_spec().save(path.with_name("tiny.spec.json"))
    index = webview.build(tmp_path / "site", model=str(path.resolve()), node_modules=node_modules)
    meta = json.loads((index.parent / "site.json").read_text())["model_metadata"]
    assert meta["name"] == "tiny" and meta["image_size"] == 32
    assert webview.export_cache_dir(str(path)).is_relative_to(tmp_path / "cache" / "exports")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.keras", "tiny.spec.json"]


# --------------------------------------------------------------------------------------------
# Moving pictures in the page (nsfwkit/web/motion.js)
# --------------------------------------------------------------------------------------------
def test_motion_js_samples_like_python():
    """The page's caps and video rate are nsfwkit.frames' (motion.js states them as constants)."""
    import re

    from nsfwkit import frames

    text = (Path(webview.__file__).parent / "web" / "motion.js").read_text(encoding="utf-8")
    consts = dict(re.findall(r"export const (\w+) = ([\d.]+);", text))
    assert float(consts["MAX_FRAMES"]) == frames.MAX_FRAMES and float(consts["MAX_SECONDS"]) == frames.MAX_SECONDS
    assert float(consts["VIDEO_FPS"]) == frames.VIDEO_FPS
    assert "motion.js" in webview.PAGE_FILES


@browser[0]
@browser[1]
def test_animation_and_video_in_chromium(site, default_model, tmp_path):
    """A GIF whose later frames score differently: the page reports Python's worst frame (index and
    time) and every frame's probabilities within 1e-3; a WebM (VP9): Python's sample times."""
    require_chromium()
    from nsfwkit import samples
    from nsfwkit.classify import classify

    root, _ = site
    model, spec = default_model
    pictures = samples.moving_frames()
    gif = samples.write_animation(tmp_path / "clip.gif", pictures)
    webm = samples.write_video(tmp_path / "clip.webm", pictures, fps=10, repeat=5)
    python = {p.name: list(classify([p], model=model, spec=spec, frames="all")) for p in (gif, webm)}
    scores = sorted(r.nsfw for r in python["clip.gif"])
    assert scores[-1] - scores[-2] > 0.01                      # an unambiguous worst frame...
    worst = max(python["clip.gif"], key=lambda r: r.nsfw)
    assert worst.frame > 0                                     # ...and not the first one
    server = serve.serve_in_thread(root)
    try:
        out = _browse(server.url, moving=[str(gif), str(webm)])
    finally:
        server.shutdown()
    assert out["page_errors"] == []
    assert [m for m in out["console"] if m["type"] == "error"] == []
    assert out["image_decoder"] is True                        # Chromium, on a localhost (secure) origin
    page_gif, page_webm = out["moving"]
    assert page_gif["error"] is None and page_gif["shown"] and page_gif["source"] == "ImageDecoder"
    assert (page_gif["worst_index"], page_gif["worst_time"]) == (worst.frame, pytest.approx(worst.time, abs=1e-9))
    assert [f["index"] for f in page_gif["frames"]] == [r.frame for r in python["clip.gif"]]
    assert [f["time"] for f in page_gif["frames"]] == pytest.approx([r.time for r in python["clip.gif"]], abs=1e-9)
    page_p = np.array([f["probs"] for f in page_gif["frames"]])
    keras_p = np.array([[r.probs[c] for c in spec.class_names] for r in python["clip.gif"]])
    assert np.abs(page_p - keras_p).max() <= 1e-3
    assert page_gif["strip_points"] == len(pictures) and page_gif["worst_marked"] == 1
    # the video: seeked at 1 fps plus the last frame, as load_frames samples it
    assert page_webm["error"] is None and page_webm["source"] == "video"
    assert [f["time"] for f in page_webm["frames"]] == pytest.approx([r.time for r in python["clip.webm"]], abs=0.05)
    page_v = np.array([f["probs"] for f in page_webm["frames"]])
    keras_v = np.array([[r.probs[c] for c in spec.class_names] for r in python["clip.webm"]])
    print("video: max |page - python| probability", np.abs(page_v - keras_v).max())
    # a browser without ImageDecoder: the first frame only, and the page says so
    server = serve.serve_in_thread(root)
    try:
        out = _browse(server.url, moving=[str(gif)], no_image_decoder=True)
    finally:
        server.shutdown()
    (first,) = out["moving"]
    assert out["image_decoder"] is False and not first["shown"] and first["error"] is None
    assert "only its first frame was classified" in first["note"]
    table = np.array([first["table"][c] for c in spec.class_names])
    assert np.abs(table - keras_p[0]).max() <= 1e-3


@pytest.mark.node
def test_motion_js_video_sampling_and_worst_frame_in_node():
    """motion.js by hand: 1 fps plus the last frame, the caps named, ties to the first frame."""
    import subprocess

    from nsfwkit import convert

    require_node()
    motion = Path(webview.__file__).parent / "web" / "motion.js"
    script = (f"import * as m from {json.dumps(motion.as_uri())};\n"
              "const rows = (s) => s.map((nsfwScore) => ({ nsfwScore }));\n"
              "console.log(JSON.stringify([m.videoSampleTimes(4.0), m.videoSampleTimes(4.0, { maxFrames: 3 }),\n"
              "  m.videoSampleTimes(4.0, { maxFrames: 4 }), m.videoSampleTimes(4.0, { maxSeconds: 2.5 }),\n"
              "  m.videoSampleTimes(1.5, { fps: 2 }), m.worstFrame(rows([0.1, 0.7, 0.3, 0.7]))]));")
    proc = subprocess.run([str(convert._node()), "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    full, capped, no_last, short, rate, worst = json.loads(proc.stdout)
    assert full == {"times": pytest.approx([0.001, 1.001, 2.001, 3.001, 3.999]), "truncated": None}
    assert capped == {"times": pytest.approx([0.001, 1.001, 2.001]), "truncated": "stopped after 3 frames"}
    assert no_last["times"] == pytest.approx([0.001, 1.001, 2.001, 3.001])
    assert no_last["truncated"] == "stopped after 4 frames: the last frame was not read"
    assert short == {"times": pytest.approx([0.001, 1.001, 2.001]), "truncated": "stopped at 2.5 s"}
    assert rate == {"times": pytest.approx([0.001, 0.501, 1.001, 1.499]), "truncated": None}
    assert worst == 1
