// Live previews: while a stream runs, each image's newest partial image, replaced as the next one
// arrives, until the final images take their place.

import { element, toBlob } from "./results.js";

export class LivePreviews {
  constructor(container, images, count) {
    this.count = count;
    this.figures = Array.from({ length: images }, (_, index) => {
      const img = element("img", { className: "preview", alt: `Preview of image ${index + 1}` });
      const caption = element("figcaption", { textContent: "Waiting for the first preview" });
      return { img, caption, figure: element("figure", {}, [img, caption]) };
    });
    if (count) container.replaceChildren(element("div", { className: "grid" }, this.figures.map((f) => f.figure)));
  }

  show({ b64_json, image_index, partial_image_index, output_format }) {
    const { img, caption } = this.figures[image_index];
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(toBlob(b64_json, output_format));
    caption.textContent = `Preview ${partial_image_index + 1} of ${this.count}`;
  }
}
