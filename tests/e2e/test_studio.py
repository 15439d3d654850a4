"""The Studio in a real browser (Debian's chromium driven by Playwright) against the real stack."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.e2e.studio_page import (
    CAPTURE_FORMS,
    PASSWORD,
    RECORD_RESULT_IMAGES,
    paint_stroke,
    sent_files,
    sign_in,
)
from tests.harness import Server, imagegen

SCREENSHOT = "studio.png"
"""The finished page, saved in the test's own tmp_path (never in the repository), where CI keeps it
as an artefact (README, Studio)."""


@pytest.fixture(scope="module")
def studio_account(server: Server) -> str:
    imagegen(server, "accounts", "create", "studio-user", "--plan", "studio", "--password-stdin", stdin=PASSWORD)
    return "studio-user"


@pytest.fixture(scope="module")
def free_account(server: Server) -> str:
    imagegen(server, "accounts", "create", "free-user", "--plan", "free", "--password-stdin", stdin=PASSWORD)
    return "free-user"


def test_sign_in_generate_download_and_sign_out(
    page: Page, server: Server, studio_account: str, tmp_path: Path
) -> None:
    sign_in(page, server, studio_account)
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
    page.get_by_label("Model").select_option("flux-schnell")
    expect(page.get_by_label("Guidance")).to_be_hidden()  # schnell is guidance-distilled
    page.get_by_label("Size").select_option("256x256")
    page.get_by_label("Seed").fill("7")
    page.get_by_role("button", name="Generate").click()

    expect(page.locator("#progress-text")).to_have_text("Step 4 of 4 · done")
    figure = page.locator("#result figure")
    expect(figure.get_by_role("img")).to_be_visible()
    expect(figure).to_contain_text("seed 7")
    expect(page.locator("#result .meta")).to_contain_text("credits")
    with page.expect_download() as download:
        figure.get_by_role("link", name="Download").click()
    with Image.open(download.value.path()) as image:
        assert (image.format, image.size) == ("PNG", (256, 256))
    page.locator("#result summary").click()
    expect(page.locator("#result pre").first).to_contain_text('"seed": 7')
    expect(page.locator("#history figure")).to_have_count(1)
    page.screenshot(path=tmp_path / SCREENSHOT, full_page=True)

    page.get_by_role("button", name="Clear history").click()
    expect(page.locator("#history figure")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.request.get(f"{server.base_url}/models").status == 401


def test_a_free_plan_account_sees_why_it_cannot_generate(page: Page, server: Server, free_account: str) -> None:
    sign_in(page, server, free_account)
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
    page.get_by_label("Size").select_option("256x256")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("alert")).to_contain_text("VALIDATION_4003")
    expect(page.get_by_role("alert")).to_contain_text("does not include the Studio")


def test_live_previews_appear_before_the_final_image(page: Page, server: Server, studio_account: str) -> None:
    sign_in(page, server, studio_account)
    page.evaluate(RECORD_RESULT_IMAGES)
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
    page.get_by_label("Model").select_option("flux-schnell")
    page.get_by_label("Size").select_option("256x256")
    page.get_by_label("Steps").fill("8")
    page.get_by_label("Live previews").select_option("2")
    page.get_by_role("button", name="Generate").click()

    expect(page.locator("#result .generation figure img")).to_be_visible()
    expect(page.locator("#progress-text")).to_have_text("Step 8 of 8 · done")
    # Read from the page's own record: the order holds however fast the machine.
    assert page.evaluate("window.resultImages") == ["preview", "preview", "final"]


def test_edit_mode_sends_the_image_and_the_painted_mask_and_shows_the_result(
    page: Page, server: Server, studio_account: str, tmp_path: Path
) -> None:
    source = tmp_path / "harbour.png"
    Image.new("RGB", (256, 256), (40, 90, 160)).save(source)
    sign_in(page, server, studio_account)
    page.evaluate(CAPTURE_FORMS)
    page.get_by_label("Edit an image").check()
    expect(page.get_by_label("Size")).to_be_hidden()  # an edit has its image's size
    page.get_by_label("Image to edit").set_input_files(source)
    expect(page.locator("#mask-canvas")).to_have_attribute("width", "256")
    paint_stroke(page, "#mask-canvas", (0.3, 0.5), (0.7, 0.5))
    page.get_by_label("Prompt", exact=True).fill("a red boat in the harbour")
    page.get_by_label("Model").select_option("flux-schnell")
    page.get_by_label("Seed").fill("3")
    page.get_by_role("button", name="Edit", exact=True).click()

    card = page.locator("#result .generation")
    expect(card.get_by_role("img")).to_be_visible()
    expect(card).to_contain_text("seed 3")
    files = sent_files(page, "image", "mask")
    assert files["image"] == source.read_bytes()
    with Image.open(io.BytesIO(files["mask"])) as mask:
        assert (mask.format, mask.mode, mask.size) == ("PNG", "RGBA", (256, 256))
        # OpenAI's mask: transparent where painted (the stroke across the middle), opaque elsewhere.
        assert mask.getpixel((128, 128))[3] == 0
        assert mask.getpixel((128, 20))[3] == mask.getpixel((10, 240))[3] == 255


def serve_page(html: str) -> ThreadingHTTPServer:
    """Another origin on this host: a tiny HTTP server answering `html` to every GET."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_cross_site_post_with_the_session_cookie_but_no_csrf_token_is_refused(
    page: Page, server: Server, studio_account: str
) -> None:
    sign_in(page, server, studio_account)
    # The attacker's page is another origin on the same host (a port is no site boundary), so the
    # browser sends the SameSite=Lax cookie with its POST; a typeless Blob sends no Content-Type,
    # which the API reads as JSON. Only the CSRF token stands in the way.
    url = json.dumps(f"{server.base_url}/images/generations")
    body = json.dumps(json.dumps({"prompt": "forged", "size": "256x256"}))
    attacker = serve_page(
        f"<script>fetch({url}, {{method: 'POST', mode: 'no-cors', credentials: 'include', "
        f"body: new Blob([{body}])}})</script>"
    )
    try:
        with page.expect_response(f"{server.base_url}/images/generations") as answer:
            page.goto(f"http://127.0.0.1:{attacker.server_port}/")
    finally:
        attacker.shutdown()
    # Chromium hides the opaque response's body; 403 rather than 401 shows the cookie was sent and
    # accepted, and an account with every scope on the studio plan is refused 403 only for CSRF.
    assert answer.value.status == 403
