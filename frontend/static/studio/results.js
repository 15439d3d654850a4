// One generation as a card: its images with seed, revised prompt and download link, its costs,
// and the request as code (not for an edit, whose input image the code could not hold).

import { snippets } from "./code.js";

export function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

// Decoded here rather than fetched as a data: URL, which the Content-Security-Policy refuses.
export function toBlob(b64, format) {
  return new Blob([Uint8Array.from(atob(b64), (char) => char.charCodeAt(0))], { type: `image/${format}` });
}

function figure(image, format) {
  const url = URL.createObjectURL(image.blob);
  const caption = [element("span", { textContent: `seed ${image.seed}` })];
  if (image.revised_prompt) caption.push(element("span", { textContent: image.revised_prompt }));
  caption.push(element("a", { href: url, download: `imagegen-${image.seed}.${format}`, textContent: "Download" }));
  return element("figure", {}, [
    element("img", { src: url, alt: `Generated image, seed ${image.seed}` }),
    element("figcaption", {}, caption),
  ]);
}

function codeBlock(body) {
  const tabs = Object.entries(snippets(body)).map(([language, code]) => {
    const copy = element("button", { type: "button", textContent: `Copy ${language}` });
    copy.addEventListener("click", async () => {
      await navigator.clipboard.writeText(code);
      copy.textContent = `Copied ${language}`;
    });
    return element("div", { className: "snippet" }, [copy, element("pre", {}, [element("code", { textContent: code })])]);
  });
  return element("details", { className: "code" }, [element("summary", { textContent: "Copy as code" }), ...tabs]);
}

export function generationCard(generation) {
  const format = generation.request.output_format ?? "png";
  const costs = `energy ${generation.energy_cost.toPrecision(3)} kWh · credits ${generation.credits_cost}`;
  return element("article", { className: "generation" }, [
    element("p", { className: "prompt", textContent: generation.request.prompt }),
    element("p", { className: "meta", textContent: `${generation.request.model} · ${costs}` }),
    element("div", { className: "grid" }, generation.images.map((image) => figure(image, format))),
    ...(generation.edit ? [] : [codeBlock(generation.request)]),
  ]);
}
