// One generation as a card: its images with seed, revised prompt and download link, its costs,
// and the request as code.

import { snippets } from "./code.js";

function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
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
    codeBlock(generation.request),
  ]);
}
