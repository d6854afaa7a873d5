"""The web view in headless Chromium (playwright-core driving Debian's chromium): it loads with
no console errors, renders the galleries, classifies an uploaded image like Keras, makes no
request outside its origin; plus the exported models' parity in Chromium."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse

import numpy as np
import pytest

from convert_fixtures import (  # noqa: F401  (fixtures)
    ARTIFACTS, CHROMIUM, exported, pretrained, require_chromium, require_node, test_images,
    write_gallery_manifests,
)
from nsfwkit import convert, serve, webview

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(exported, tmp_path_factory):
    """A built site with gallery manifests and the quantised models under extra/<q>/."""
    require_node()
    root = tmp_path_factory.mktemp("site")
    galleries = tmp_path_factory.mktemp("viz")
    expected = write_gallery_manifests(galleries)
    index = webview.build(root, export_dir=exported.out_dir, galleries_from=galleries)
    for q in ("float16", "uint8"):
        webview._replace_dir(exported.tfjs[q], root / "extra" / q)
    return index.parent, expected


def _browse(url: str, **request) -> dict:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return convert.run_node(convert.paths.repo_root() / "js" / "browser_check.mjs",
                                {"url": url, "chromium": CHROMIUM, "user_data_dir": profile, **request},
                                timeout=240)


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


def test_web_view_in_chromium(site, pretrained, test_images, tmp_path):
    require_chromium()
    from PIL import Image

    root, expected_counts = site
    model, spec = pretrained
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


@pytest.mark.parametrize("quantization", ["float32", "float16", "uint8"])
def test_exported_models_match_keras_in_chromium(quantization, site, exported, test_images,
                                                 tmp_path):
    require_chromium()
    model, _ = convert_fixtures_model()
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


def convert_fixtures_model():
    from convert_fixtures import _default_model

    return _default_model()
