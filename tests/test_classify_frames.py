"""`classify` on animations and videos: the worst frame reported, with its time; rows per frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nsfwkit import classify as classify_module
from nsfwkit import cli
from nsfwkit.classify import Result, classify
from nsfwkit.frames import load_frames
from nsfwkit.images import load_image
from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec, spec_path_for

from frames_helpers import cartoon, flatness_model, flatness_probs, photo, write_video

SIZE = 32


@pytest.fixture(scope="module")
def flat():
    """``(model, spec)``: the flatness model, whose NSFW (Porn) score is known by hand."""
    return flatness_model(SIZE), ModelSpec(name="flatness", class_names=NSFWJS_CLASSES, image_size=SIZE)


def expected(path, **sampling):
    """Per-frame ``(index, time, probs)`` computed by hand from the loader's pixels."""
    frames = list(load_frames(path, image_size=SIZE, **sampling))
    probs = flatness_probs(np.stack([f.pixels for f in frames]))
    return [(f.index, f.time_s, p) for f, p in zip(frames, probs, strict=True)]


def turning_clip(tmp_path, fmt: str, size: int = 48, later=None):
    """Two photo frames, then two flat cartoon frames (100 ms each), as an animated GIF or WebP."""
    pictures = [photo(size), photo(size)[::-1], *(later or [cartoon(size, seed=1), cartoon(size, seed=2)])]
    path = tmp_path / f"turns.{fmt.lower()}"
    kw = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(pictures[0]).save(path, format=fmt, save_all=True, duration=100, loop=0,
                                      append_images=[Image.fromarray(p) for p in pictures[1:]], **kw)
    return path


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_reported_by_its_worst_frame(tmp_path, flat, fmt):
    model, spec = flat
    path = turning_clip(tmp_path, fmt)
    per_frame = expected(path)
    scores = [p[3] for _, _, p in per_frame]
    assert scores[0] < 0.01 and min(scores[2:]) > 0.99  # the photo is safe, the cartoon is not
    worst = int(np.argmax(scores))
    (result,) = classify([path], model=model, spec=spec, batch_size=3, workers=2)
    assert result.ok and result.frames == 4
    assert result.frame == per_frame[worst][0] >= 2 and result.time == pytest.approx(per_frame[worst][1])
    assert result.top == "Porn" and result.nsfw == pytest.approx(scores[worst], abs=1e-5)
    assert result.probs == pytest.approx(dict(zip(NSFWJS_CLASSES, per_frame[worst][2], strict=True)), abs=1e-5)
    assert result.nsfw_mean == pytest.approx(np.mean(scores), abs=1e-5)
    assert result.truncated is None
    # frame 0 on its own is another class: the first frame alone would have let the clip through
    first = classify([path], model=model, spec=spec, frames="all")
    assert next(first).top == "Neutral"
    rows = list(classify([path], model=model, spec=spec, frames="all", batch_size=3))
    assert [(r.frame, r.time) for r in rows] == [(i, pytest.approx(t)) for i, t, _ in per_frame]
    np.testing.assert_allclose([r.nsfw for r in rows], scores, atol=1e-5)
    assert all(r.frames is None and r.nsfw_mean is None for r in rows)
    assert set(rows[0].to_dict()) == {"path", "top", "probs", "nsfw", "frame", "time"}


def test_video_reported_by_its_worst_frame(tmp_path, flat):
    model, spec = flat
    pictures = [photo()] * 12 + [cartoon(seed=3)] * 6 + [photo()] * 7  # turns flat at 1.2 s, for 0.6 s
    path = write_video(tmp_path / "clip.mp4", pictures, fps=10)
    (worst,) = classify([path], model=model, spec=spec, every=1)
    assert worst.frames == 25 and 12 <= worst.frame <= 17 and worst.top == "Porn"
    assert abs(worst.time - worst.frame / 10) < 0.05
    (sampled,) = classify([path], model=model, spec=spec)  # 1 fps: 0, 1, 2 s and the last frame
    assert sampled.frames == 4 and sampled.top == "Neutral"  # 1.2-1.8 s fell between the samples
    (dense,) = classify([path], model=model, spec=spec, fps=5)
    assert dense.top == "Porn" and 1.15 < dense.time < 1.75
    assert dense.frames == 13  # 0, 0.2, ... 2.4 s: the last frame (2.4 s) is one of them
    (capped,) = classify([path], model=model, spec=spec, every=1, max_frames=10)
    assert capped.frames == 10 and capped.top == "Neutral" and "max_frames" in capped.truncated
    assert capped.to_dict()["truncated"] == capped.truncated


def test_video_frame_equals_the_same_frame_as_png(tmp_path, default_model):
    """Parity: a decoded video frame, saved losslessly and classified as a still, scores the same."""
    model, spec = default_model
    rng = np.random.default_rng(0)
    pictures = [np.clip(photo(96).astype(int) + rng.integers(-20, 21, (96, 96, 3)), 0, 255).astype(np.uint8)
                for _ in range(6)]
    path = write_video(tmp_path / "clip.webm", pictures, fps=6, codec="libvpx-vp9")
    frames = list(load_frames(path, every=1))
    stills = []
    for f in frames:
        stills.append(tmp_path / f"frame_{f.index}.png")
        Image.fromarray(f.pixels).save(stills[-1])
        np.testing.assert_array_equal(load_image(stills[-1]), f.pixels)  # lossless round trip
    rows = list(classify([path], model=model, spec=spec, frames="all", every=1, batch_size=4))
    singles = list(classify(stills, model=model, spec=spec, batch_size=4))
    assert [r.frame for r in rows] == [f.index for f in frames]
    for row, single in zip(rows, singles, strict=True):
        assert set(single.to_dict()) == {"path", "top", "probs", "nsfw"}  # a still: no frame keys
        np.testing.assert_allclose([row.probs[c] for c in spec.class_names],
                                   [single.probs[c] for c in spec.class_names], atol=1e-6, rtol=0)


def test_mixed_folder_keeps_order_and_reports_bad_videos(tmp_path, flat):
    model, spec = flat
    Image.fromarray(photo()).save(tmp_path / "a_photo.png")
    turning_clip(tmp_path, "GIF").rename(tmp_path / "b_clip.gif")
    write_video(tmp_path / "c_video.mp4", [cartoon(seed=4)] * 5, fps=5)
    (tmp_path / "d_broken.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(100))
    (tmp_path / "e_notes.txt").write_text("not picked up")
    results = list(classify([tmp_path], model=model, spec=spec, batch_size=2, workers=2))
    names = [r.path.rsplit("/", 1)[-1] for r in results]
    assert names == ["a_photo.png", "b_clip.gif", "c_video.mp4", "d_broken.mp4"]
    photo_row, clip, video, broken = results
    assert set(photo_row.to_dict()) == {"path", "top", "probs", "nsfw"}
    assert clip.frames == 4 and video.frames == 2 and video.top == "Porn"  # a 1 s video at 1 fps: first + last
    assert not broken.ok and "not a readable MP4 file" in broken.error


def test_frames_batched_together_and_memory_bounded(tmp_path, flat, monkeypatch):
    """Frames go through the model in batches of at most batch_size; decoded frames held at once
    stay within the budget however many videos are decoded ahead; nothing deadlocks."""
    model, spec = flat
    videos = [write_video(tmp_path / f"v{k}.mp4", [cartoon(seed=k)] * 3 + [photo()] * 17, fps=10)
              for k in range(6)]
    real = classify_module.inference_fn(model, SIZE)
    sizes = []

    def recording(model_, size):
        def infer(x):
            sizes.append(len(x))
            return real(x)
        return infer

    held = []
    take = classify_module._Budget.take

    def counting(self, key):
        take(self, key)
        held.append(self._total)

    monkeypatch.setattr(classify_module, "inference_fn", recording)
    monkeypatch.setattr(classify_module._Budget, "take", counting)
    results = list(classify(videos, model=model, spec=spec, every=1, batch_size=3, workers=2))
    assert [r.path for r in results] == [str(v) for v in videos]
    assert all(r.frames == 20 and r.frame <= 2 and r.top == "Porn" for r in results)
    assert sum(sizes) == 6 * 20 and max(sizes) == 3 and sizes.count(3) == 40
    window = max(2 * 3, 2 * 2)
    assert max(held) <= 2 * window


def test_stopping_early_stops_the_decoders(tmp_path, flat):
    model, spec = flat
    videos = [write_video(tmp_path / f"v{k}.mp4", [photo()] * 20, fps=10) for k in range(4)]
    stream = classify(videos, model=model, spec=spec, every=1, batch_size=2, workers=2)
    assert next(stream).frames == 20
    stream.close()  # returns: the decoding threads blocked on the budget were released


def test_cli_frames_all_and_worst(tmp_path, flat, capsys):
    model, spec = flat
    model_path = tmp_path / "flatness.keras"
    model.save(model_path)
    spec.save(spec_path_for(model_path))
    clip = turning_clip(tmp_path, "GIF")
    Image.fromarray(photo()).save(tmp_path / "still.png")
    assert cli.main(["classify", str(clip), str(tmp_path / "still.png"), "--model", str(model_path),
                     "--format", "jsonl", "--frames", "all"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.get("frame") for r in rows] == [0, 1, 2, 3, None]
    assert set(rows[-1]) == {"path", "top", "probs", "nsfw"}
    assert cli.main(["classify", str(clip), "--model", str(model_path), "--format", "csv", "--frames", "worst"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split(",")[-7:] == ["frames", "frame", "time", "nsfw_mean", "truncated", "error", "path_bytes"]
    assert line.split(",")[1] == "Porn" and line.split(",")[-7] == "4"
    assert cli.main(["classify", str(clip), "--model", str(model_path)]) == 0
    table = capsys.readouterr().out.splitlines()[1]
    assert "Porn" in table and "turns.gif @ 0.20 s (frame 2, worst of 4)" in table


def test_result_frame_keys_only_when_set():
    ok = Result("a.gif", probs={"Porn": 1.0}, top="Porn", nsfw=1.0, frames=3, frame=2, time=0.2, nsfw_mean=0.5)
    assert list(ok.to_dict()) == ["path", "top", "probs", "nsfw", "frames", "frame", "time", "nsfw_mean"]
    with pytest.raises(ValueError, match="frames must be one of"):
        next(classify(["x.gif"], model=flatness_model(SIZE), frames="best"))


@pytest.mark.slow
def test_default_model_finds_the_drawing_frame(tmp_path, default_model):
    """The real model: flat cartoons (soft blobs) drift to Drawing, which is not NSFW; scored as
    the "bad" class (nsfw_classes=["Drawing"]), the clip is reported by a cartoon frame, not frame 0."""
    from nsfwkit import samples

    model, spec = default_model
    blobs = [samples.synthetic_image("blobs", image_size=160, seed=seed) for seed in (0, 2)]
    path = turning_clip(tmp_path, "WEBP", size=160, later=blobs)
    rows = list(classify([path], model=model, spec=spec, frames="all"))
    assert rows[0].top == "Neutral"
    (worst,) = classify([path], model=model, spec=spec, nsfw_classes=["Drawing"])
    assert worst.frame >= 2 and worst.top == "Drawing" and worst.nsfw == pytest.approx(worst.probs["Drawing"])
    assert worst.nsfw > rows[0].probs["Drawing"]
