"""Real-browser end-to-end test: the app served by its start command (``streamlit run``) on the embedded
default, driven in headless Debian chromium through Playwright.

It visits every page, changes sliders, follows a latent from the Latent browser to the Steering page,
runs a steered generation while checking ``/_stcore/health`` keeps answering, and saves a screenshot
of each step under ``test-artifacts/e2e/``. Every page in ``PAGES`` must exist: a missing one fails.

Setup: ``make test`` installs Debian's ``chromium`` (apt-get, as root) and ``playwright`` (requirements-dev);
no Playwright browser is downloaded. Without chromium (a system package, not part of the checkout) the
module is skipped with a message; ``make test-fast`` leaves it out (marker ``e2e``).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from sae_lib.constants import REPO_ROOT
from tests.server import serve

from playwright import sync_api  # requirements-dev.txt: a missing install fails, it does not skip
from playwright.sync_api import expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
LOAD_TIMEOUT_MS = 180_000  # the first page of a fresh server loads the model, on a busy 2-core machine
STEP_TIMEOUT_MS = 120_000

# (url path, page file, heading the page shows, its title in the navigation), in app.py's order.
PAGES = [
    ("home", "app_pages/home.py", "Latent Lab", "Home"),
    ("theory", "app_pages/theory.py", "Superposition, and why SAEs", "Theory"),
    ("latent_browser", "app_pages/latent_browser.py", "Latent browser", "Latent browser"),
    ("steering", "app_pages/steering.py", "Steering playground", "Steering playground"),
]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed: run `make setup browser` as root "
        "(or `apt-get install chromium`) to run the real-browser test",
    ),
]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(demo_paths, browser):
    with serve(demo_paths.root, ARTIFACTS / "server.log") as srv:
        yield srv


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def shot(pg, name: str, focus=None) -> None:
    """Screenshot of the window (Streamlit scrolls inside its main block, so it is the viewport), after
    scrolling ``focus`` (a locator) into view when given."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if focus is not None:
        focus.scroll_into_view_if_needed()
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def open_page(pg, server, path: str, heading: str, query: str = "") -> None:
    pg.goto(f"{server.url}/{path}{query}")
    expect(pg.get_by_role("heading", name=heading, level=1)).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    wait_idle(pg)


def wait_idle(pg, timeout_ms: int = STEP_TIMEOUT_MS) -> None:
    """Wait until the script run triggered by the last action has finished (the page stops being stale)."""
    # As Streamlit's own browser tests do: the app frame marks its script state and stale elements.
    pg.wait_for_timeout(300)  # a widget change sets "rerun requested" at once; let it land
    pg.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached", timeout=timeout_ms
    )
    pg.wait_for_function("() => document.querySelectorAll('[data-stale=\"true\"]').length === 0", timeout=timeout_ms)


def no_exception(pg) -> None:
    """A page may show st.error for bad input, never a traceback."""
    assert pg.locator('[data-testid="stException"]').count() == 0


def slider(pg, label: str):
    """The thumb of the Streamlit slider labelled ``label``."""
    box = pg.locator('[data-testid="stSlider"]').filter(has=pg.get_by_text(label, exact=True))
    return box.get_by_role("slider").first


def nudge(pg, label: str, key: str, times: int = 1) -> tuple[str, str]:
    """Move a slider with the keyboard; (value before, value after) as the thumb shows them."""
    thumb = slider(pg, label)
    before = thumb.input_value()  # the thumb is an <input type="range">
    thumb.focus()
    for _ in range(times):
        pg.keyboard.press(key)
    wait_idle(pg)
    return before, slider(pg, label).input_value()


@pytest.mark.parametrize(
    "path, file, heading, nav",
    PAGES,
    ids=[p[0] for p in PAGES],
)
def test_every_page_renders(page, server, path, file, heading, nav):
    assert (REPO_ROOT / file).is_file(), f"{file} is missing: the app lists it in its navigation"
    open_page(page, server, path, heading)
    no_exception(page)
    # Nothing but notices above the title (a stray string literal in a page script shows up there).
    first_text = page.get_by_test_id("stMain").locator(
        '[data-testid="stMarkdownContainer"]:not([data-testid="stAlert"] *), h1'
    ).first
    expect(first_text).to_have_text(heading)
    # Every page is in the navigation, on every page.
    nav_bar = page.get_by_test_id("stSidebarNav")
    for _, _, _, other_nav in PAGES:
        expect(nav_bar.get_by_role("link", name=other_nav)).to_be_visible()
    shot(page, f"page-{path}")


def test_first_visitor_on_a_page_url_gets_the_apps_navigation(demo_paths, browser, tmp_path):
    """On a fresh server, a visitor arriving on a page's URL gets app.py's navigation. (Streamlit 1.67
    runs an app with a ``pages/`` folder beside its entry script as a legacy multipage app until app.py
    first runs: the folder's menu, other URLs. Found by this test; the pages now live in app_pages/.)"""
    with serve(demo_paths.root, tmp_path / "server.log") as fresh:
        pg = browser.new_page()
        try:
            pg.goto(fresh.url + "/home")
            expect(pg.get_by_role("heading", name="Latent Lab", level=1)).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            wait_idle(pg)
            shot(pg, "first-visit-home")
            # A link's text is its Material icon's ligature name, then its title.
            links = [a.inner_text().split("\n")[-1].strip() for a in pg.get_by_test_id("stSidebarNav").get_by_role("link").all()]
            assert links == [nav for _, _, _, nav in PAGES]
        finally:
            pg.close()


def test_browser_slider_filters_the_table(page, server, demo_workspace):
    from sae_lib import latent_index as li

    open_page(page, server, "latent_browser", "Latent browser")
    caption = page.get_by_text(re.compile(r"^[\d,]+ latents match"))
    expect(caption).to_be_visible()
    low_before, low_after = nudge(page, "log10 density range", "ArrowRight", times=10)
    assert float(low_after) == pytest.approx(float(low_before) + 1.0, abs=1e-6)
    # The visible count is the library's answer for the band the slider now shows.
    index = demo_workspace.index
    expected = len(li.latent_table(index, log10_density_range=(float(low_after), 0.0), hide_dead=True, query=""))
    expect(page.get_by_text(f"{expected:,} latents match", exact=False)).to_be_visible()
    no_exception(page)
    shot(page, "browser-slider")


@pytest.mark.parametrize("bad, message", [("abc", "not a number"), ("99999999", "out of range"), ("-1", "out of range")])
def test_bad_latent_in_the_url_shows_a_message(page, server, bad, message):
    open_page(page, server, "latent_browser", "Latent browser", f"?latent={bad}")
    expect(page.get_by_test_id("stAlertContentError").filter(has_text=message)).to_be_visible()
    no_exception(page)


def test_latent_link_to_steering_and_a_steered_generation(page, server, demo_workspace):
    index = demo_workspace.index
    latent = int(index.count.argmax())  # the latent that fires most: surely alive
    open_page(page, server, "latent_browser", "Latent browser", f"?latent={latent}")
    expect(page.get_by_text("Top activating contexts")).to_be_visible()
    shot(page, "browser-latent")

    page.get_by_role("button", name=re.compile(rf"^Steer with latent {latent}\b")).click()
    expect(page.get_by_role("heading", name="Steering playground", level=1)).to_be_visible(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)
    assert f"latent={latent}" in page.url and "max_act=" in page.url
    expect(page.get_by_label(re.compile("^Latents to steer"))).to_have_value(str(latent))
    no_exception(page)

    # Fewer samples: a slider in the settings expander, down from the default 5 to 3.
    page.get_by_text("Generation settings").click()
    before, after = nudge(page, "Samples (one batch)", "ArrowLeft", times=2)
    assert (int(before), int(after)) == (5, 3)
    shot(page, "steering-ready")

    health: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll_health() -> None:
        while not stop.is_set():
            health.append(server.health(timeout=10))
            time.sleep(0.2)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        page.get_by_role("button", name="Generate", exact=True).click()
        table = page.locator("table.outputs-table")
        expect(table).to_be_visible(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
    finally:
        stop.set()
        poller.join()
    assert health and all(h == (200, "ok") for h in health), health  # answered all through the generation
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(1 + 3)  # the normal output, then one steered row per sample
    expect(rows.first).to_contain_text("Normal output")
    for i in range(1, 4):
        expect(rows.nth(i).locator("td").first).to_have_text(str(latent))
        assert len(rows.nth(i).locator("td").nth(1).inner_text()) > len("What are you?")
    no_exception(page)
    shot(page, "steering-result", focus=table)
