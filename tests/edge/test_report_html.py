"""report.html of an audit: self-contained, its figures drawn from the report's numbers, and it
renders in a real headless Chromium (skipped, with the reason, where no Chromium is installed)."""
import os
import re
import shutil
import subprocess

import pytest

from edgerobust.edge.audit import AuditConfig, audit
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.edge.render.report import write_report
from onnx_models import write_profile
from edgerobust.edge.render.svg import esc

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("html") / "tiny")  # this module's own copy


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return write_profile(tmp_path_factory.mktemp("p") / "fast.toml",
                         budgets="[budgets]\nlatency_ms_p50 = 1000\nmodel_size_mb = 0.001\n")


@pytest.fixture(scope="module")
def report(bundle, profile):
    return audit(AuditConfig(model=bundle / "model.onnx", profile=str(profile), show_progress=False,
                             measure_memory=False))


@pytest.fixture(scope="module")
def folder(report, tmp_path_factory):
    return write_report(report, tmp_path_factory.mktemp("out") / "r")


@pytest.fixture(scope="module")
def page(folder):
    return (folder / "report.html").read_text(encoding="utf-8")


def assert_self_contained(page: str) -> None:
    """Nothing on the page is fetched: no external src/href, no script, no stylesheet link."""
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert all(s.startswith("data:") for s in re.findall(r"""\ssrc\s*=\s*["']([^"']+)""", page))


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, re.S)


def test_page_is_self_contained_with_its_figures(page):
    assert_self_contained(page)
    titles = [re.search(r"<title>(.*?)</title>", s).group(1) for s in svgs(page)]
    assert titles == ["Accuracy per set (95% Wilson CI)", "FGSM", "Latency per model and batch size",
                      "Model file size", "Peak memory (fresh process)"]


def test_page_states_the_headline_sets_budgets_and_provenance(report, bundle, folder, page):
    from edgerobust.edge.render.headline import headline
    from edgerobust.edge.render.svg import esc

    assert esc(headline(report)) in page
    for s in report.sets:
        for role in ("base", "deployed"):
            p = getattr(s, role).accuracy
            # every bar's tooltip carries the number it draws, as the table has it
            assert (f"{role} on {s.name}: {100 * p.value:.1f}% [{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}]"
                    in page)
    for sp in report.measurement.speedup:
        assert f"{sp.p50:.2f}× speedup" in page
    assert '<p class="fail">FAIL  model_size_mb' in page and '<p class="pass">PASS  latency_ms_p50' in page
    for f in ("base.onnx", "model.onnx", "eval.npz", "adv/fgsm_0.02.npz", "adv/fgsm_0.08.npz", "manifest.json"):
        assert sha256_file(bundle / f) in page
    assert sha256_file(folder / "predictions.npz") in page
    assert "<p class=\"warn\">Warning:" not in page and "warn strong" not in page  # nothing about host or bundle
    from edgerobust.edge.render.speed_lines import noise_warnings

    for line in noise_warnings(report.measurement):  # the latency caveats md and terminal give are on the page
        assert f"Latency warning: {esc(line)}" in page


def _points(svg: str) -> list[list[tuple[float, float]]]:
    return [[tuple(map(float, p.split(","))) for p in pts.split()]
            for pts in re.findall(r'<polyline points="([^"]+)"', svg)]


def test_accuracy_against_eps_draws_the_reported_accuracies(report, page):
    """The FGSM panel: one line per model through clean, eps 0.02 and eps 0.08, at the reported
    accuracies (the panel maps 0..100 % onto pixels 244..46)."""
    panel = next(s for s in svgs(page) if "<title>FGSM</title>" in s)
    lines = _points(panel)
    assert len(lines) == 2 and all(len(line) == 3 for line in lines)
    for role, line in zip(("base", "deployed"), lines):
        want = [100 * getattr(s, role).accuracy.value for s in report.sets]
        got = [(244 - y) / (244 - 46) * 100 for _, y in line]
        assert got == pytest.approx(want, abs=0.06)
        assert [x for x, _ in line] == sorted(x for x, _ in line)


def test_fallback_is_warned_first_and_in_red(bundle, tmp_path):
    gpu = write_profile(tmp_path / "gpu.toml", providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    r = audit(AuditConfig(model=bundle / "model.onnx", profile=str(gpu), allow_fallback=True, show_progress=False,
                          measure_memory=False))
    page = (write_report(r, tmp_path / "r") / "report.html").read_text()
    assert re.search(r'<p class="warn strong">Warning: fallback: profile \S+gpu\S+ asked for CUDAExecutionProvider', page)
    assert page.index("warn strong") < page.index("<h2>Robustness</h2>")


# ---------------------------------------------------------------------------------------------
# in a real browser


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUMS) if p), None)


def screenshot(html_path, png_path, height: int = 3000):
    """Render ``html_path`` in headless Chromium and return the screenshot as a PIL image."""
    image = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot")
    exe = find_chromium()
    if exe is None:
        pytest.skip(f"no Chromium binary on PATH (looked for {', '.join(CHROMIUMS)}); "
                    "install one (Debian: apt-get install chromium) to check the page in a browser")
    profile_dir = png_path.parent / "chromium-profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile_dir}", f"--window-size=1280,{height}", f"--screenshot={png_path}",
           html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(png_path.parent)})
    assert proc.returncode == 0 and png_path.is_file(), proc.stderr[-2000:]
    return image.open(png_path).convert("RGB")


def count_pixels(img, test) -> int:
    """How many pixels of the screenshot pass ``test(r, g, b)``."""
    return sum(n for n, c in img.getcolors(img.width * img.height) if test(*c))


def red(r, g, b):  # the deployed model's color, #d62728, also at the bars' 85% opacity
    return r > 190 and g < 100 and b < 100


def grey(r, g, b):  # the base's color, #4d4d4d, also at 85% opacity
    return max(r, g, b) - min(r, g, b) < 6 and 60 <= r <= 120


def test_page_renders_in_headless_chromium(folder, tmp_path):
    img = screenshot(folder / "report.html", tmp_path / "report.png")
    assert img.size == (1280, 3000)
    colors = img.getcolors(img.width * img.height)
    white = sum(n for n, c in colors if min(c) >= 250)
    assert white < 0.97 * img.width * img.height  # not blank
    # the figures drew: the deployed model's red and the base's grey bars and lines are on screen
    assert count_pixels(img, red) > 5000
    assert count_pixels(img, grey) > 5000
