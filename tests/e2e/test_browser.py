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

from sae_lib import render
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
    expect(table.locator("thead")).to_contain_text(f"Steered: latent {latent}")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(3)  # one row per sample: its normal output beside its steered output
    for i in range(3):
        cells = rows.nth(i).locator("td")
        expect(cells).to_have_count(3)
        expect(cells.first).to_have_text(str(i + 1))
        normal, steered = cells.nth(1).inner_text(), cells.nth(2).inner_text()
        assert normal.strip() and steered.strip()
        # Issue 14, item 9: the marks in a steered output are exactly the words that differ from the
        # normal output shown beside it (recomputed here from the two texts the visitor reads).
        marks = [m.inner_text() for m in cells.nth(2).locator("mark").all()]
        assert marks == [render.show_newlines(w) for w, changed in render.word_diff(*map(unshow, (normal, steered))) if changed]
    no_exception(page)
    shot(page, "steering-result", focus=table)



# --- a hostile first visit (issue 14): what only a browser shows ------------------------------------------

EVIL = "evil.example"
INJECTIONS = [
    "[Session expired - click here](https://evil.example/login)",
    "![x](https://evil.example/pixel.png)",
    "https://evil.example/login",
]


def shown(text: str) -> str:
    """``text`` as the DOM holds it after ``lab_ui.as_text`` (zero-width spaces break URL triggers)."""
    import lab_ui

    return lab_ui.as_text(text).replace("\\", "")


def unshow(text: str) -> str:
    """A table cell's text back to the model's text (the page shows newlines as ↵)."""
    return text.replace(render.NEWLINE_SYMBOL, "\n")


def no_trace(pg) -> None:
    """No traceback and no server path anywhere on the page."""
    no_exception(pg)
    body = pg.locator("body").inner_text()
    assert "Traceback" not in body and str(REPO_ROOT) not in body and 'File "/' not in body


@pytest.fixture
def evil_requests(page):
    """Every request the page makes to the attacker's host (there must be none)."""
    from urllib.parse import urlparse

    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url) if (urlparse(req.url).hostname or "").endswith(EVIL) else None)
    return seen


def assert_inert(pg, evil_requests) -> None:
    expect(pg.locator(f'a[href*="{EVIL}"]')).to_have_count(0)
    expect(pg.locator(f'img[src*="{EVIL}"]')).to_have_count(0)
    assert evil_requests == []


def test_markdown_in_urls_and_boxes_is_shown_as_text(page, server, evil_requests):
    """Item 1: a link or an image put in a URL parameter or typed is shown as its characters."""
    from urllib.parse import quote

    for payload in INJECTIONS:
        open_page(page, server, "latent_browser", "Latent browser", f"?latent={quote(payload)}")
        alert = page.get_by_test_id("stAlertContentError")
        # The characters as typed (the page puts an invisible zero-width space inside URLs).
        expect(alert).to_be_visible()
        assert payload in alert.inner_text().replace("\u200b", "")
        assert_inert(page, evil_requests)
    shot(page, "hostile-latent-browser-url")

    image = INJECTIONS[1]
    open_page(page, server, "steering", "Steering playground", f"?latent={quote(image)}")
    expect(page.get_by_test_id("stAlertContentError").filter(has_text=shown(image))).to_be_visible()
    assert_inert(page, evil_requests)
    open_page(page, server, "steering", "Steering playground", f"?latent=3&max_act={quote(image)}")
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"max_act='{shown(image)}'")).to_be_visible()
    assert_inert(page, evil_requests)
    box = page.get_by_label(re.compile("^Latents to steer"))
    box.fill(image)
    box.press("Enter")
    wait_idle(page)
    expect(page.get_by_test_id("stAlertContentError").filter(has_text=shown(image))).to_be_visible()
    assert_inert(page, evil_requests)
    no_trace(page)
    shot(page, "hostile-steering-typed")


def test_a_huge_max_activation_gets_a_message_not_a_traceback(page, server, demo_workspace):
    """Item 2: max_act=1e308 from the URL and typed; Generate and the sweep cannot run it."""
    latent = int(demo_workspace.index.count.argmax())
    open_page(page, server, "steering", "Steering playground", f"?latent={latent}&max_act=1e308")
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="above this server's limit")).to_be_visible()
    box = page.get_by_role("spinbutton", name="max activation")
    box.fill("1e308")
    box.press("Enter")
    wait_idle(page)
    expect(page.get_by_test_id("stAlertContentError").filter(has_text="above this server's limit")).to_be_visible()
    expect(page.get_by_role("button", name="Generate", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Run sweep")).to_be_disabled()
    no_trace(page)
    shot(page, "hostile-max-act")


def test_a_thousand_latents_in_the_url_are_refused_at_the_top(page, server):
    """Item 3: the "at most 8" message is on the first screen and no per-latent widget is built."""
    numbers = ",".join(str(i) for i in range(1024))
    open_page(page, server, "steering", "Steering playground", f"?latent={numbers}")
    alert = page.get_by_test_id("stAlertContentError").filter(has_text="at most 8")
    expect(alert).to_be_visible()
    top = alert.bounding_box()["y"]
    assert top < page.viewport_size["height"], top  # on the first screen, not 141,000 px down
    expect(page.get_by_label("max activation")).to_have_count(0)
    expect(page.locator('[data-testid="stSlider"]').filter(has_text="hi (positive components)")).to_have_count(0)
    no_trace(page)
    shot(page, "hostile-many-latents")


def test_a_megabyte_paste_into_the_steering_prompt_says_why(page, server):
    """Item 4: the box takes the paste and the page says why it cannot be used (the browser would drop a
    paste longer than the box's max_chars without a word)."""
    open_page(page, server, "steering", "Steering playground", "?latent=3")
    paste = "It was a dark and stormy night. " * (1_000_000 // 32)
    prompt = page.get_by_label(re.compile("^Prompt"))
    prompt.fill(paste)
    prompt.press("Control+Enter")  # Streamlit applies a text area on Ctrl+Enter (or when it loses focus)
    wait_idle(page)
    expect(page.get_by_test_id("stAlertContentError").filter(has_text="1,000,000 characters; the limit is 2,000")).to_be_visible()
    expect(page.get_by_role("button", name="Generate", exact=True)).to_be_disabled()
    no_trace(page)
    shot(page, "hostile-paste")


def test_theory_figures_titles_fit_and_the_label_sits_off_the_bars(page, server):
    """Item 12: the WᵀW title is not cut off, the bar title is typeset, "represented" overlaps no bar."""
    open_page(page, server, "theory", "Superposition, and why SAEs")
    charts = page.locator(".js-plotly-plot")
    expect(charts.nth(2)).to_be_visible(timeout=STEP_TIMEOUT_MS)
    heat, bars = charts.nth(1), charts.nth(2)  # after the arrow panels
    for chart in (heat, bars):
        frame = chart.locator(".main-svg").first.bounding_box()
        title = chart.locator(".gtitle").bounding_box()
        assert frame["x"] <= title["x"] and title["x"] + title["width"] <= frame["x"] + frame["width"], (title, frame)
    assert "_{" not in bars.locator(".gtitle").text_content()  # SVG text: Plotly typeset the <sub> tags
    label = bars.locator(".annotation").filter(has_text="represented").bounding_box()
    for bar in bars.locator(".bars path").all():
        box = bar.bounding_box()
        if box is None or box["width"] == 0:
            continue
        overlap_x = label["x"] < box["x"] + box["width"] and box["x"] < label["x"] + label["width"]
        overlap_y = label["y"] < box["y"] + box["height"] and box["y"] < label["y"] + label["height"]
        assert not (overlap_x and overlap_y), (label, box)
    shot(page, "theory-superposition", focus=bars)
