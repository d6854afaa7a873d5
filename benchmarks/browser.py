"""Benchmark: the exported default model in headless Chromium (TF.js wasm) vs nsfwjs's own bundled
MobileNetV2, in the same page and run; plus export time and size per quantisation.

    .venv/bin/python benchmarks/browser.py [--repeat 30] [--model mobilenet_v2]

Latency is per image through the whole in-page path (preprocess: resize with corners aligned,
then predict), median over ``--repeat`` interleaved runs after warm-up, on the same 451x300
photo. nsfwjs's model is its bundled uint8 layers model (``dist/models/mobilenet_v2``), served as
a TF.js layers model and fed the nsfwjs way (pixels / 255, then resize). Target: ours <= 1.0x.

    .venv/bin/python benchmarks/browser.py --animation [--frames 32] [--repeat 3]

instead compares moving pictures: the same generated animated GIF (flat cartoons, then a pan over a
sample photo, 224x224) classified frame by frame in the page (ImageDecoder, one frame at a time
through TF.js wasm) and in Python (``classify(..., frames="all")``, frames batched through Keras):
milliseconds per frame, classification only and with decoding, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_nsfwjs_layers_model(dest: Path, name: str = "mobilenet_v2") -> Path:
    """nsfwjs's bundled model (UMD JS files) as a plain TF.js layers model folder."""
    from nsfwkit import zoo

    topology, specs, data = zoo._read_bundle(zoo.find_nsfwjs(), name)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "weights.bin").write_bytes(data)
    (dest / "model.json").write_text(json.dumps({
        "format": "layers-model", "modelTopology": topology,
        "weightsManifest": [{"paths": ["weights.bin"], "weights": specs}]}))
    return dest


def animation_latency(model_name: str, frames: int, repeat: int) -> None:
    """Per-frame latency of one animated GIF in Chromium (the web view) and in Python."""
    from nsfwkit import convert, samples, serve, webview, zoo
    from nsfwkit.classify import classify

    model, spec = zoo.load(model_name)
    work = Path(tempfile.mkdtemp(prefix="nsfwkit-bench-anim-"))
    try:
        half = frames // 2
        gif = samples.write_animation(work / "clip.gif", samples.moving_frames(
            cartoon_frames=half, photo_frames=frames - half, image_size=spec.image_size))
        webview.build(work / "site", model=model_name)
        server = serve.serve_in_thread(work / "site")
        try:
            with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
                out = convert.run_node("browser_check.mjs", {
                    "url": server.url, "chromium": shutil.which("chromium") or "/usr/bin/chromium",
                    "user_data_dir": profile, "moving": [str(gif)] * repeat}, timeout=600)
        finally:
            server.shutdown()
        runs = out["moving"]
        list(classify([gif], model=model, spec=spec, frames="all"))   # warm-up / trace
        py = []
        for _ in range(repeat):
            t = time.perf_counter()
            rows = list(classify([gif], model=model, spec=spec, frames="all"))
            py.append((time.perf_counter() - t) * 1000 / len(rows))
        n = len(runs[0]["frames"])
        print(f"animated GIF, {n} frames of {spec.image_size}x{spec.image_size}, model {spec.name}, "
              f"best of {repeat}; Chromium {out['backend']} backend, ImageDecoder: {out['image_decoder']}")
        print(f"{'where':<40} {'ms/frame':>9}")
        print(f"{'browser: classify only (batch 1)':<40} {min(r['ms_per_frame'] for r in runs):>9.1f}")
        print(f"{'browser: decode + classify':<40} {min(r['wall_ms'] for r in runs) / n:>9.1f}")
        print(f"{'python: classify(frames=all), batched':<40} {min(py):>9.1f}")
        worst = {(r["worst_index"], r["worst_time"]) for r in runs}
        print(f"worst frame: browser {sorted(worst)}, python "
              f"{max(((r.nsfw, r.frame, r.time) for r in rows))[1:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--repeat", type=int, default=None, help="default: 30 (3 with --animation)")
    parser.add_argument("--animation", action="store_true", help="moving pictures: browser vs Python per frame")
    parser.add_argument("--frames", type=int, default=32, help="frames of the --animation GIF")
    args = parser.parse_args()
    if args.animation:
        animation_latency(args.model, args.frames, args.repeat or 3)
        return 0
    args.repeat = args.repeat or 30

    from nsfwkit import convert, samples, serve, webview, zoo

    model, spec = zoo.load(args.model)
    work = Path(tempfile.mkdtemp(prefix="nsfwkit-bench-"))
    try:
        t0 = time.perf_counter()
        result = convert.export(model, work / "export", spec=spec, nsfwjs=False)
        total = time.perf_counter() - t0
        print(f"export of {spec.name}: {total:.1f} s in all")
        print(f"{'artefact':<22} {'MB':>7} {'seconds':>8}")
        for row in result.sizes:
            key = "saved_model" if row["format"] == "saved_model" else f"tfjs_{row['quantization']}"
            print(f"{row['path']:<22} {row['mb']:>7.2f} {result.seconds.get(key, float('nan')):>8.1f}  "
                  f"{row.get('stored_as', '')}")

        site = work / "site"
        webview.build(site, export_dir=result.out_dir)
        for q in ("float16", "uint8"):
            shutil.copytree(result.tfjs[q], site / "bench" / q)
        write_nsfwjs_layers_model(site / "bench" / "nsfwjs_mobilenet_v2")
        nsfwjs_mb = (site / "bench" / "nsfwjs_mobilenet_v2" / "weights.bin").stat().st_size / 1e6
        img = samples.sample_images()["chelsea"]
        (work / "img.rgb").write_bytes(img.tobytes())
        server = serve.serve_in_thread(site)
        try:
            with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
                out = convert.run_node("browser_check.mjs", {
                    "url": server.url, "chromium": shutil.which("chromium") or "/usr/bin/chromium",
                    "user_data_dir": profile,
                    "bench": {"size": spec.image_size, "repeat": args.repeat, "file": str(work / "img.rgb"),
                              "width": img.shape[1], "height": img.shape[0], "models": [
                                  {"name": "nsfwjs", "url": "bench/nsfwjs_mobilenet_v2/model.json",
                                   "format": "layers", "input_range": [0, 1]},
                                  {"name": "ours_float32", "url": "model/model.json", "input_range": [0, 255]},
                                  {"name": "ours_float16", "url": "bench/float16/model.json", "input_range": [0, 255]},
                                  {"name": "ours_uint8", "url": "bench/uint8/model.json", "input_range": [0, 255]},
                              ]}}, timeout=600)
        finally:
            server.shutdown()
        bench = out["bench"]
        base = bench["nsfwjs"]
        print(f"\nChromium (headless, {out['backend']} backend), {img.shape[1]}x{img.shape[0]} photo, "
              f"median of {args.repeat}:")
        print(f"{'model':<16} {'ms/image':>9} {'vs nsfwjs':>10}")
        print(f"{'nsfwjs bundled':<16} {base:>9.1f} {1.0:>9.2f}x   ({nsfwjs_mb:.2f} MB uint8 layers model)")
        for name in ("ours_float32", "ours_float16", "ours_uint8"):
            print(f"{name:<16} {bench[name]:>9.1f} {bench[name] / base:>9.2f}x")
        ratio = bench["ours_float32"] / base
        print(f"\ntarget <= 1.0x: {'met' if ratio <= 1.0 else 'NOT met'} ({ratio:.2f}x, float32 default model)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
