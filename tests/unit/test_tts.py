"""Speech synthesis with the real espeak-ng and sox (installed by `make test`)."""

from __future__ import annotations

import asyncio
import wave

import pytest

from ivr.tts import Synthesizer, TTSError


@pytest.fixture
def tts(tmp_path):
    synth = Synthesizer("espeak-ng", "en-us", tmp_path / "sounds", "/var/lib/hotline/sounds")
    synth.check()
    return synth


async def test_prompt_is_8khz_16bit_mono_and_cached(tts, tmp_path):
    media = await tts.media("Please wait while we connect you.")
    name = tts.name_for("Please wait while we connect you.")
    assert media == f"sound:/var/lib/hotline/sounds/{name}"
    path = tmp_path / "sounds" / f"{name}.wav"
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
        assert wav.getnframes() > 8000  # over a second of speech
    assert path.stat().st_mode & 0o444 == 0o444  # Asterisk runs as another user
    before = path.stat().st_mtime_ns
    assert await tts.media("Please wait while we connect you.") == media
    assert path.stat().st_mtime_ns == before  # served from the cache
    assert [p.name for p in (tmp_path / "sounds").iterdir()] == [f"{name}.wav"]  # no temporary left


async def test_concurrent_requests_share_one_synthesis(tts, tmp_path):
    results = await asyncio.gather(*(tts.media("Same words") for _ in range(5)))
    assert len(set(results)) == 1
    assert len(list((tmp_path / "sounds").iterdir())) == 1


def test_names_depend_on_engine_voice_and_text(tmp_path):
    a = Synthesizer("espeak-ng", "en-us", tmp_path, "/x")
    assert a.name_for("hi") != a.name_for("hi!")
    assert a.name_for("hi") != Synthesizer("espeak-ng", "en-gb", tmp_path, "/x").name_for("hi")
    assert a.name_for("hi") != Synthesizer("flite", "en-us", tmp_path, "/x").name_for("hi")


def test_a_missing_engine_is_a_clear_error_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither espeak-ng nor sox can be found
    with pytest.raises(TTSError, match="needs `espeak-ng`, which is not installed"):
        Synthesizer("espeak-ng", "en-us", tmp_path, "/x").check()
    with pytest.raises(TTSError, match="unknown TTS engine"):
        Synthesizer("say", "en-us", tmp_path, "/x")


async def test_a_failing_synthesis_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "espeak-ng"
    broken.write_text("#!/bin/sh\necho 'cannot open audio device' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    tts = Synthesizer("espeak-ng", "en-us", tmp_path / "sounds", "/x")
    tts.check()
    with pytest.raises(TTSError, match=r"`espeak-ng` failed \(3\): cannot open audio device"):
        await tts.media("hello")
    assert list((tmp_path / "sounds").iterdir()) == []
