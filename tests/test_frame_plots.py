"""plot_frame_scores (score over time, worst frame marked and shown redacted) and the generated
moving samples (samples.moving_frames / write_animation / write_video / write_moving_samples)."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit import samples
from nsfwkit.classify import Result
from nsfwkit.data.plots import redact
from nsfwkit.frames import Frame, load_frames, plot_frame_scores

from frames_helpers import require_av


def _line(ax, label):
    (line,) = [x for x in ax.get_lines() if x.get_label() == label]
    return line


def _rows(scores, times, path="clip.gif"):
    return [Result(path=path, probs={"Neutral": 1 - s, "Porn": s}, top="Neutral", nsfw=s, frame=i, time=t)
            for i, (s, t) in enumerate(zip(scores, times))]


def test_strip_has_one_point_per_frame_and_the_worst_marker_at_the_max():
    scores, times = [0.1, 0.7, 0.3, 0.7], [0.0, 0.5, 1.0, 1.5]
    pictures = [np.full((8, 8, 3), 40 * k, np.uint8) for k in range(4)]
    pictures[1][:4] = 255   # the worst frame: half white, half grey 40
    fig = plot_frame_scores(_rows(scores, times), frames=pictures, threshold=0.5)
    strip, side = fig.axes
    line = _line(strip, "NSFW score")
    assert list(line.get_xdata()) == times and list(line.get_ydata()) == scores
    worst = _line(strip, "worst frame")   # ties: the first, as classify reports
    assert list(worst.get_xdata()) == [0.5] and list(worst.get_ydata()) == [0.7]
    assert _line(strip, "threshold").get_ydata()[0] == 0.5
    assert strip.get_xlabel() == "time (s)"
    assert side.get_title() == "worst: frame 1 @ 0.50 s (redacted)"
    shown = side.get_images()[0].get_array()
    assert np.array_equal(shown, redact(pictures[1])) and not np.array_equal(shown, pictures[1])
    assert fig._suptitle.get_text() == "clip.gif"


def test_unredacted_frames_and_scores_without_times():
    pixels = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    frames = [Frame(0, 0.0, pixels * 0), Frame(1, 0.1, pixels * 0), Frame(2, 0.2, pixels)]
    fig = plot_frame_scores([0.2, 0.1, 0.9], frames=frames, redact=False)
    strip, side = fig.axes
    assert list(_line(strip, "NSFW score").get_xdata()) == [0, 1, 2] and strip.get_xlabel() == "frame"
    assert list(_line(strip, "worst frame").get_xdata()) == [2]
    assert np.array_equal(side.get_images()[0].get_array(), pixels) and side.get_title() == "worst: frame 2"
    assert len(plot_frame_scores([0.2, 0.4], times=[0, 0.5]).axes) == 1   # no frames: no picture


def test_plot_frame_scores_refuses_what_it_cannot_plot():
    with pytest.raises(ValueError, match="no frames"):
        plot_frame_scores([])
    with pytest.raises(ValueError, match="results of 2 inputs"):
        plot_frame_scores(_rows([0.1], [0.0], "a.gif") + _rows([0.2], [0.0], "b.gif"))
    with pytest.raises(ValueError, match="b.gif: not a classified frame"):
        plot_frame_scores([Result(path="b.gif", error="broken")])
    with pytest.raises(ValueError, match="2 times for 3 scores"):
        plot_frame_scores([0.1, 0.2, 0.3], times=[0, 1])
    with pytest.raises(ValueError, match="1 pictures for 2 scores"):
        plot_frame_scores([0.1, 0.2], frames=[np.zeros((2, 2, 3), np.uint8)])


def test_moving_samples_frames_times_and_files(tmp_path):
    require_av()
    frames = samples.moving_frames(cartoon_frames=2, photo_frames=3, image_size=32)
    assert len(frames) == 5 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    assert len(np.unique(frames[0].reshape(-1, 3), axis=0)) <= 3    # a flat cartoon: 3 colours at most
    assert len(np.unique(frames[2].reshape(-1, 3), axis=0)) > 100   # a photo
    gif, clip = samples.write_moving_samples(tmp_path)
    assert [g.name for g in (gif, clip)] == ["cartoon_then_photo.gif", "cartoon_then_photo.mp4"]
    animation = list(load_frames(gif))
    assert [f.time_s for f in animation] == pytest.approx([0.2 * k for k in range(8)])
    assert np.array_equal(animation[0].pixels, samples.moving_frames()[0])   # a cartoon fits a GIF palette
    video = list(load_frames(clip))   # 40 frames at 10 fps: 1 fps sampling plus the last
    assert [f.index for f in video] == [0, 10, 20, 30, 39]
    assert [f.time_s for f in video] == pytest.approx([0, 1, 2, 3, 3.9])
    before = gif.stat().st_mtime_ns
    samples.write_moving_samples(tmp_path)               # kept, not rewritten
    assert gif.stat().st_mtime_ns == before
    webm = samples.write_video(tmp_path / "x.webm", frames[:2], fps=5, repeat=2)
    assert load_frames(webm).format == "WebM" and len(list(load_frames(webm, every=1))) == 4
    with pytest.raises(ValueError, match="writes .mp4 or .webm"):
        samples.write_video(tmp_path / "x.avi", frames)
    with pytest.raises(ValueError, match="writes .gif or .webp"):
        samples.write_animation(tmp_path / "x.png", frames)
