"""The Studio's page as a person uses it, shared by the browser tests (the `browser` and `page`
fixtures are in tests/e2e/conftest.py)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.harness import Server

PASSWORD = "studio password 123"
"""Every browser test's accounts are made with it."""


def sign_in(page: Page, server: Server, username: str) -> None:
    page.goto(f"{server.root}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(username, exact=True)).to_be_visible()


RECORD_RESULT_IMAGES = """() => {
  window.resultImages = [];
  const record = (img) => img.getAttribute("src") && window.resultImages.push(img.className || "final");
  new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      if (mutation.type === "attributes") record(mutation.target);
      for (const node of mutation.addedNodes) if (node.querySelectorAll) node.querySelectorAll("img").forEach(record);
    }
  }).observe(document.getElementById("result"), {childList: true, subtree: true, attributeFilter: ["src"]});
}"""
"""From now on, `window.resultImages` lists each image the result area shows, in order: "preview" for
a live preview (each new one), "final" for a finished image."""

CAPTURE_FORMS = """() => {
  window.sentForms = [];
  const send = window.fetch;
  window.fetch = (url, init) => {
    if (init && init.body instanceof FormData) window.sentForms.push(init.body);
    return send(url, init);
  };
}"""
"""From now on, every multipart form the page sends is kept in `window.sentForms`."""

SENT_FILES = """async (names) => {
  const form = window.sentForms.at(-1);
  const files = {};
  for (const name of names) files[name] = Array.from(new Uint8Array(await form.get(name).arrayBuffer()));
  return files;
}"""
"""The bytes of the named files of the last form sent."""


def sent_files(page: Page, *names: str) -> dict[str, bytes]:
    """The named files of the last multipart form the page sent (after CAPTURE_FORMS)."""
    return {name: bytes(data) for name, data in page.evaluate(SENT_FILES, list(names)).items()}


def paint_stroke(page: Page, canvas: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A mouse stroke across the canvas, from and to points given as fractions of its width and height."""
    box = page.locator(canvas).bounding_box()
    assert box is not None, f"{canvas} is not shown"
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=8)
    page.mouse.up()
