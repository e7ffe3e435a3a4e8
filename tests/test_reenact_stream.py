"""Driving videos of any length in ``reenact``: the sound comes along (or not), a video's alignment
is computed once and then read from the cache, frames flow through a window of bounded size,
and an interrupted run leaves nothing behind. A stand-in face model replaces dlib, so these
run without downloaded assets."""

from __future__ import annotations

import gc
import shutil
import tracemalloc

import av
import numpy as np
import pytest
import torch

from portrait4d import cli
from portrait4d.commands.reenact import OutputStreams
from portrait4d.data.clip_format import read_clip
from portrait4d.inference import Avatar, inputs
from portrait4d.preprocess.alignment_cache import cached_track
from portrait4d.preprocess import pipeline
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor

from inference_helpers import synthetic_clip_folder, tiny_checkpoint
from stream_helpers import TONE_HZ, TemplateFace, moving_face, stream_kinds, template_preprocessor, tone_frequency, write_video

FPS = 12.5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    source = synthetic_clip_folder(root / "source", frames=1)
    face = read_clip(source).frames[0].permute(1, 2, 0).numpy()
    return {
        "psi": tiny_checkpoint(root / "psi"),
        "source": source,
        "face": face,
        "raw": write_video(root / "raw.mp4", moving_face(face, 10, 128), FPS),
        "pcm": write_video(root / "aligned_pcm.mkv", moving_face(face, 6, 64), FPS, sound=("pcm_s16le", 192000)),
    }


@pytest.fixture(autouse=True)
def face(monkeypatch, tmp_path):
    """A fresh cache folder and the stand-in face model (it counts the frames it landmarks)."""
    monkeypatch.setenv("PORTRAIT4D_CACHE", str(tmp_path / "cache"))
    previous = torch.get_num_threads()
    model = TemplateFace()
    monkeypatch.setattr(Preprocessor, "from_assets", classmethod(lambda cls, config, cache_dir=None: template_preprocessor(model, config)))
    yield model
    torch.set_num_threads(previous)


def _reenact(files, out, *extra, driving="raw"):
    driving = files.get(driving, driving)
    argv = ["reenact", "--source", str(files["source"]), "--driving", str(driving), "--out", str(out)]
    return cli.main([*argv, "--checkpoint", str(files["psi"]), "--device", "cpu", "--threads", "1", *extra])


def _pictures(path):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])])


def test_the_driving_sound_is_copied_and_cut_where_the_pictures_end(files, tmp_path):
    out = tmp_path / "out.mp4"
    assert _reenact(files, out) == 0
    durations = stream_kinds(out)
    assert set(durations) == {"video", "audio"} and durations["video"] == pytest.approx(10 / FPS)
    assert abs(durations["audio"] - durations["video"]) <= 1 / FPS
    frequency, seconds = tone_frequency(out)
    assert frequency == pytest.approx(TONE_HZ, abs=5) and seconds == pytest.approx(10 / FPS, abs=1 / FPS)

    silent = tmp_path / "silent.mp4"
    assert _reenact(files, silent, "--no-audio") == 0
    assert set(stream_kinds(silent)) == {"video"} and len(_pictures(silent)) == 10


def test_any_sound_becomes_aac(files, tmp_path):
    """PCM at 192 kHz in unordered channels ("2 channels"): AAC has neither, so 48 kHz stereo."""
    out = tmp_path / "out.mp4"
    assert _reenact(files, out, "--aligned", "--view", "frontal", driving="pcm") == 0
    with av.open(str(out)) as container:
        sound = container.streams.audio[0].codec_context
        assert (sound.name, sound.sample_rate, sound.layout.name) == ("aac", 48000, "stereo")
    frequency, seconds = tone_frequency(out)
    assert frequency == pytest.approx(TONE_HZ, abs=5) and seconds == pytest.approx(6 / FPS, abs=1 / FPS)


def test_a_second_run_reads_the_alignment_from_the_cache(files, face, tmp_path, capsys):
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    assert _reenact(files, first) == 0
    assert "alignment: computed (10 frames" in capsys.readouterr().out and face.calls == 10
    assert _reenact(files, second) == 0
    assert "alignment: cached (10 frames" in capsys.readouterr().out and face.calls == 10  # no frame landmarked again
    np.testing.assert_array_equal(_pictures(first), _pictures(second))



def test_the_cache_key_is_the_content_and_a_damaged_entry_is_recomputed(files, face, tmp_path):
    config = PreprocessConfig()
    build = lambda: template_preprocessor(face, config)  # noqa: E731
    first = cached_track(files["raw"], config, build)
    renamed = cached_track(shutil.copy(files["raw"], tmp_path / "renamed.mp4"), config, build)
    assert (first.cached, renamed.cached, face.calls) == (False, True, 10)
    np.testing.assert_array_equal(renamed.track.cameras, first.track.cameras)
    assert renamed.track.transforms == first.track.transforms and str(renamed.track.path).endswith("renamed.mp4")
    other = cached_track(files["raw"], PreprocessConfig(max_yaw=30.0), build)
    assert not other.cached and other.path != first.path  # another setting, another entry
    first.path.write_bytes(b"damaged")
    again = cached_track(files["raw"], config, build)
    assert not again.cached and face.calls == 30 and cached_track(files["raw"], config, build).cached


def test_faceless_frames_show_the_nearest_face_in_stream_order(files, tmp_path):
    pictures = moving_face(files["face"], 8, 128)
    for index in (0, 1, 4, 5, 6):
        pictures[index] = np.zeros_like(pictures[index])  # the stand-in finds no face in the dark
    video = write_video(tmp_path / "gaps.mp4", pictures, FPS, sound=None)
    stream = inputs.open_driving(video, 64, preprocessors=inputs.PreprocessorCache())
    assert stream.audio is None and "5 frame(s) without a usable face" in stream.notes[-1] and "0-1, 4-6" in stream.notes[-1]
    images = torch.cat([batch for batch, _ in stream.batches(3)])
    assert len(images) == 8
    for frame, shown in enumerate([2, 2, 2, 3, 3, 3, 7, 7]):  # frame 5 is as near 3 as 7: the earlier wins
        assert torch.equal(images[frame], images[shown])
    assert not torch.equal(images[2], images[3]) and not torch.equal(images[3], images[7])


def _stream_peak(path, monkeypatch) -> tuple[int, list[tuple[int, int]]]:
    """Peak traced bytes while a video is tracked and streamed, and (frames handed out, frames
    decoded on the second pass) at every batch."""
    decoded = []
    reader = inputs.read_video

    def counting(*args, **kwargs):
        decoded.append(0)
        for frame in reader(*args, **kwargs):
            decoded[-1] += 1
            yield frame

    monkeypatch.setattr(inputs, "read_video", counting)
    tracemalloc.start()
    try:
        stream = inputs.open_driving(path, 64, preprocessors=inputs.PreprocessorCache(config=PreprocessConfig(crop_size=64)))
        progress, handed = [], 0
        for images, _ in stream.batches(4):
            handed += len(images)
            progress.append((handed, decoded[-1]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert handed == stream.n_frames
    return peak, progress


def test_camera_fits_in_slices_equal_one_fit(face, monkeypatch):
    preprocessor = template_preprocessor(face)
    crop_landmarks = np.random.default_rng(0).normal(scale=2.0, size=(7, 68, 2)) + face.landmarks(np.zeros((512, 512, 3)), None)
    whole = preprocessor.fit_cameras(crop_landmarks)
    monkeypatch.setattr(pipeline, "FIT_CHUNK", 3)
    for sliced, single in zip(preprocessor.fit_cameras(crop_landmarks), whole):
        np.testing.assert_allclose(sliced, single, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_long_video_streams_through_a_window_of_frames(files, tmp_path, monkeypatch):
    """200 frames cost what 30 do: decoding and tracking memory does not grow with length
    (holding every 160² frame would add ~15 MB), and the second pass never reads ahead of its output."""
    peaks = {}
    for count in (30, 200):
        video = write_video(tmp_path / f"long{count}.mp4", moving_face(files["face"], count, 160), 25, sound=None)
        peaks[count], progress = _stream_peak(video, monkeypatch)
        assert all(decoded <= handed + 1 for handed, decoded in progress), progress
    assert peaks[200] - peaks[30] < 3 * 2**20, peaks


def _frames_alive() -> int:
    """Frames (``[3, H, W]`` or ``[N, 3, H, W]`` uint8 tensors) that Python holds right now."""
    count = 0
    for thing in gc.get_objects():
        if type(thing) is torch.Tensor and thing.dtype == torch.uint8 and thing.dim() in (3, 4) and thing.shape[-3] == 3:
            count += 1 if thing.dim() == 3 else thing.shape[0]
    return count


@pytest.mark.slow
def test_reenact_holds_the_same_few_frames_however_long_the_video(files, tmp_path, monkeypatch):
    """Driving frames, model inputs and results in flight, counted as each batch is written:
    48 frames hold no more than 8 do (keeping results or frames would grow with length)."""
    add = OutputStreams.add
    counts: list[int] = []

    def counting(self, *args, **kwargs):
        counts.append(_frames_alive())
        return add(self, *args, **kwargs)

    monkeypatch.setattr(OutputStreams, "add", counting)
    most = {}
    for length in (8, 48):
        video = write_video(tmp_path / f"long{length}.mp4", moving_face(files["face"], length, 128), FPS, sound=None)
        counts.clear()
        assert _reenact(files, tmp_path / f"out{length}.mp4", "--batch-size", "4", driving=video) == 0
        most[length] = max(counts)
    assert most[48] <= most[8] <= 8 * 4, most


def test_an_interrupted_run_leaves_no_output(files, tmp_path, monkeypatch, capsys):
    calls = []
    reenact = Avatar.reenact

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return reenact(self, *args, **kwargs)

    monkeypatch.setattr(Avatar, "reenact", interrupted)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert _reenact(files, out_dir / "out.mp4", "--batch-size", "2") == 130
    assert "interrupted" in capsys.readouterr().err and list(out_dir.iterdir()) == []
