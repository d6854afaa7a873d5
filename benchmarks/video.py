"""Benchmark: classifying a video, against the same frames as still images, in one run.

Usage: python benchmarks/video.py [--seconds 30] [--fps 30] [--size 320x240] [--batch-size 32]

A generated H.264 MP4 (panning crops of scikit-image's safe photos, with noise) is classified

* at 1 frame per second (``classify``'s default for videos): seconds of video per wall second;
* every frame: frames per second, against the still-image path on the same frames (each decoded
  frame saved as a lossless PNG and classified as a file) and against the model alone on
  in-memory tensors. The ratios are measured in the same process, so they hold on any machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image


def make_video(path: Path, seconds: int, fps: int, width: int, height: int, seed: int = 0) -> Path:
    """A camera panning over the sample photos (a new photo every 5 s), with sensor noise."""
    import av

    from nsfwkit import samples

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.fromarray(v).resize((width * 2, height * 2)))
              for k, v in samples.sample_images().items() if k in samples.PHOTOS]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            src = photos[(i // (5 * fps)) % len(photos)]
            x = int((i % (5 * fps)) / (5 * fps) * width)
            crop = src[height // 2: height // 2 + height, x: x + width].astype(np.int16)
            crop = np.clip(crop + rng.integers(-8, 9, crop.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="video length")
    parser.add_argument("--fps", type=int, default=30, help="the video's frame rate")
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is kept")
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))

    from nsfwkit import zoo
    from nsfwkit.classify import classify, predict
    from nsfwkit.frames import load_frames
    from nsfwkit.images import load_image

    model, spec = zoo.load(args.model)
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        video = make_video(Path(tmp) / "clip.mp4", args.seconds, args.fps, width, height)
        frames = list(load_frames(video, every=1))
        stills = []
        for f in frames:
            stills.append(Path(tmp) / f"frame_{f.index:05d}.png")
            Image.fromarray(f.pixels).save(stills[-1], compress_level=1)
        tensors = np.stack([load_image(p, image_size=spec.image_size) for p in stills])

        def run(**kw):
            return list(classify([video], model=model, spec=spec, batch_size=args.batch_size, **kw))

        def best(fn):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        predict(model, tensors[: args.batch_size], batch_size=args.batch_size)  # warm-up / trace
        (sampled,) = run()
        t_sampled = best(run)
        t_every = best(lambda: run(every=1))
        t_stills = best(lambda: list(classify(stills, model=model, spec=spec, batch_size=args.batch_size)))
        t_memory = best(lambda: predict(model, tensors, batch_size=args.batch_size))
        t_decode = best(lambda: sum(1 for _ in load_frames(video, every=1)))

        n = len(frames)
        duration = frames[-1].time_s + 1 / args.fps
        print(f"model {spec.name}, H.264 {width}x{height} {args.fps} fps, {duration:.0f} s = {n} frames, "
              f"batch {args.batch_size}, {os.cpu_count()} CPUs")
        print(f"1 fps sampling ({sampled.frames} frames):       {duration / t_sampled:8.1f} s of video per s "
              f"(decoding alone, every frame: {n / t_decode:.0f} frames/s)")
        print(f"every frame, classify(video):          {n / t_every:8.1f} frames/s")
        print(f"same frames as PNG stills, classify(): {n / t_stills:8.1f} frames/s")
        print(f"same frames, in-memory tensors:        {n / t_memory:8.1f} frames/s")
        print(f"ratio video / stills:                  {t_stills / t_every:8.2f}")
        print(f"ratio video / in-memory:               {t_memory / t_every:8.2f}")


if __name__ == "__main__":
    main()
