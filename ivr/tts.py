"""Speech synthesis for prompts: text in, a WAV file Asterisk can play out.

Asterisk wants 8 kHz, 16-bit, mono ``.wav``. espeak-ng writes 22,050 Hz, so sox
converts; flite already writes 8 kHz but goes through sox the same way. Files
are named by a hash of (engine, voice, text), written under a temporary name
and renamed, so a half-written prompt is never played and concurrent calls
asking for the same text share one synthesis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


class TTSError(Exception):
    """Speech could not be synthesized; the message says what to install or fix."""


ENGINES = {
    # engine: (binary, argv builder writing a WAV to the given path)
    "espeak-ng": ("espeak-ng", lambda voice, path, text: ["espeak-ng", "-v", voice, "-w", path, "--", text]),
    "flite": ("flite", lambda voice, path, text: ["flite", "-voice", voice or "slt", "-t", text, "-o", path]),
}
INSTALL_HINT = {"espeak-ng": "apt-get install espeak-ng sox", "flite": "apt-get install flite sox"}


class Synthesizer:
    def __init__(self, engine: str, voice: str, cache_dir: Path, asterisk_dir: str, timeout: float = 20.0):
        if engine not in ENGINES:
            raise TTSError(f"unknown TTS engine {engine!r}: use one of {', '.join(ENGINES)}")
        self.engine = engine
        self.voice = voice
        self.cache_dir = Path(cache_dir)
        self.asterisk_dir = asterisk_dir.rstrip("/")
        self.timeout = timeout
        self._pending: dict[str, asyncio.Future] = {}

    def check(self) -> None:
        """Fail at start-up, not during a call, when the tools are missing."""
        binary = ENGINES[self.engine][0]
        for tool in (binary, "sox"):
            if shutil.which(tool) is None:
                raise TTSError(f"the TTS engine needs `{tool}`, which is not installed "
                               f"(install it with: {INSTALL_HINT[self.engine]})")
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.cache_dir, 0o755)
        except OSError as exc:
            raise TTSError(f"cannot use the prompt directory {self.cache_dir}: {exc.strerror}") from None

    def name_for(self, text: str, voice: str | None = None) -> str:
        digest = hashlib.sha256(f"{self.engine}\0{voice or self.voice}\0{text}".encode()).hexdigest()[:32]
        return f"hl-{digest}"

    def media_for(self, name: str) -> str:
        """The ARI media URI of a synthesized prompt (Asterisk adds the extension)."""
        return f"sound:{self.asterisk_dir}/{name}"

    async def media(self, text: str, voice: str | None = None) -> str:
        """Synthesize ``text`` if needed (in ``voice``, else the configured one: an espeak-ng voice is a
        language code, so a call's language picks it); returns the media URI to play."""
        voice = voice or self.voice
        name = self.name_for(text, voice)
        final = self.cache_dir / f"{name}.wav"
        if final.exists():
            return self.media_for(name)
        pending = self._pending.get(name)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._pending[name] = pending
            try:
                await self._synthesize(text, final, voice)
                pending.set_result(None)
            except BaseException as exc:
                pending.set_exception(exc if isinstance(exc, TTSError) else TTSError(str(exc)))
                pending.exception()  # retrieved: nobody else may be waiting
                raise
            finally:
                self._pending.pop(name, None)
        else:
            await asyncio.shield(pending)
        return self.media_for(name)

    async def _synthesize(self, text: str, final: Path, voice: str) -> None:
        # Names of this synthesis alone: another process (or a second synthesizer) writing the same
        # prompt at the same moment never shares a temporary file with it.
        token = f"{os.getpid()}.{secrets.token_hex(4)}"
        raw = final.with_name(f".{final.stem}.{token}.raw.wav")
        converted = final.with_name(f".{final.stem}.{token}.wav")
        argv = ENGINES[self.engine][1](voice, str(raw), text)
        try:
            await self._run(argv)
            await self._run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                             str(converted)])
            os.chmod(converted, 0o644)
            os.replace(converted, final)
        finally:
            for leftover in (raw, converted):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass

    async def _run(self, argv: list[str]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            raise TTSError(f"`{argv[0]}` is not installed (install it with: {INSTALL_HINT[self.engine]})") from None
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), self.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise TTSError(f"`{argv[0]}` took more than {self.timeout:.0f} s") from None
        if proc.returncode != 0:
            raise TTSError(f"`{argv[0]}` failed ({proc.returncode}): {stderr.decode(errors='replace').strip()[:300]}")


def synthesizer_from_config(config) -> Synthesizer:
    return Synthesizer(config.tts.engine, config.tts.voice, config.sounds_dir, config.asterisk_sounds_dir)
