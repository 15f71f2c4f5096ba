"""A headless Chromium driven over the DevTools protocol (``--remote-debugging-pipe``).

``--dump-dom`` cannot measure a page's height or hover a point; the protocol can, with no
extra package: Chromium reads JSON messages, each ended by a NUL byte, on file descriptor
3 and writes its answers on descriptor 4.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import retry


def _onto_3_and_4(reads: int, writes: int) -> None:
    """In the child: the pipe ends where Chromium looks for them (via copies, so one end
    already on 3 or 4 is not overwritten before it is moved)."""
    first, second = os.dup(reads), os.dup(writes)
    os.dup2(first, 3)
    os.dup2(second, 4)


class Browser:
    """One Chromium with one page at ``width`` by ``height``; stop it with :meth:`close`."""

    def __init__(self, chromium: str, profile: Path, *, width: int = 1400, height: int = 900):
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        os.set_inheritable(to_child, True)
        os.set_inheritable(from_child, True)
        self.process = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=lambda: _onto_3_and_4(to_child, from_child),  # noqa: PLW1509  # no threads yet
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next = 0
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        self.session = attached["sessionId"]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
            session=True,
        )

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def open(self, url: str) -> None:
        """Navigate and wait until the document is complete."""
        self.call("Page.navigate", url=url, session=True)
        retry(lambda: self.evaluate("document.readyState") == "complete", timeout=30)

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, session=True
        )
        return result.get("result", {}).get("value")

    def mouse(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, session=True)

    def paste(self, text: str) -> None:
        """``text`` into the focused element as one input, then a key release: one value
        change, so a page that answers every keyup (Material's search) answers it once."""
        self.call("Input.insertText", text=text, session=True)
        self.call("Input.dispatchKeyEvent", type="keyUp", key="End", code="End", session=True)

    def screenshot(self, path: Path, *, full: bool = False) -> Path:
        import base64

        params: dict[str, Any] = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)
