"""The closed-loop report as a person sees it: opened in a real browser (headless Chromium),
every plot decodes and is laid out, and the plots are painted on the page.

The report itself has no JavaScript. The test opens a copy with a probe appended: on load it
draws every <img> on a canvas and writes what the browser got (natural size, laid-out size,
opaque and non-white pixels, errors) into the DOM, which `--dump-dom` returns once the
virtual time budget has run: a truncated PNG still reports its size, but not all its pixels.
A screenshot then shows the plots' colours on the page (broken images would show none).

Without a Chromium binary the test is skipped, saying how to install it, unless
PLATFORM_REQUIRE_CHROMIUM=1 (CI sets it, so that CI can never pass by skipping it)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlplatform.rollout.report import write
from tests.unit.test_rollout_report import _images, _png_size, sample_report

PROBE = """<script>
window.addEventListener("load", () => {
  const out = [];
  for (const img of document.images) {
    const box = img.getBoundingClientRect();
    let inked = null, opaque = null, error = null;
    try {  // draw it: the pixels themselves must have decoded, not only the PNG's header
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      inked = 0; opaque = 0;  // a matplotlib PNG is opaque: an undecoded part reads transparent
      for (let i = 0; i < px.length; i += 4) {
        if (px[i + 3] === 255) { opaque++; if (px[i] + px[i + 1] + px[i + 2] < 600) inked++; }
      }
    } catch (e) { error = String(e); }
    out.push({alt: img.alt, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
              shown: [Math.round(box.width), Math.round(box.height)], inked, opaque,
              error});
  }
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        message = "chromium not found (apt-get install chromium)"
        if os.environ.get("PLATFORM_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message + " and PLATFORM_REQUIRE_CHROMIUM=1")
        pytest.skip(message)
    return binary


def _run(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def open_in_chromium(path: Path, tmp_path: Path) -> str:
    """Open a written report in headless Chromium and check, image by image, that the browser
    decoded every plot completely and laid it out; returns the page as the browser saw it."""
    binary = _chromium()
    page = path.read_text(encoding="utf-8")
    expected = [(alt, _png_size(png)) for alt, png in _images(page)]
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = _run(binary, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, "the probe did not run: " + done.stdout[-1000:] + done.stderr[-1000:]
    images = json.loads(html.unescape(found.group(1)))
    assert [i["alt"] for i in images] == [html.unescape(alt) for alt, _ in expected]
    for image, (alt, size) in zip(images, expected, strict=True):
        assert image["complete"] and image["error"] is None, image
        assert tuple(image["natural"]) == size, (alt, image)  # the browser read the PNG's size
        assert image["opaque"] == size[0] * size[1], image  # and all its pixels
        assert image["inked"] > 0.02 * size[0] * size[1], image  # which show axes, lines, text
        assert image["shown"][0] > 100 and image["shown"][1] > 100, image  # and laid it out
    return done.stdout


def test_every_plot_loads_in_chromium(tmp_path: Path) -> None:
    binary = _chromium()
    report = sample_report()
    path = write(report, tmp_path / "loop.html")
    assert len(_images(path.read_text(encoding="utf-8"))) == len(report.rollouts)
    dom = open_in_chromium(path, tmp_path)
    assert "Model versions and gate decisions" in dom
    assert "rolled back v3: success rate 0.52 &lt; 0.99" in dom

    shot = tmp_path / "shot.png"
    done = _run(binary, tmp_path / "profile", "--window-size=1400,4000", f"--screenshot={shot}",
                path.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    import matplotlib.image

    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round()
    # matplotlib's first line colour (C0, #1f77b4): only the plots use it, the tables do not
    blue = (abs(pixels - [31, 119, 180]).max(axis=-1) <= 8).sum()
    assert blue > 200, f"the plots are not painted on the page ({blue} plot-blue pixels)"
