// The edit mode's image and mask: the chosen image drawn on a canvas, and strokes painted over it
// with the pointer (mouse, pen or finger). The mask is OpenAI's: a PNG the image's size, fully
// transparent where painted (the region to edit), opaque elsewhere.

export class MaskPainter {
  constructor(imageCanvas, paintCanvas, brush) {
    this.image = imageCanvas;
    this.paint = paintCanvas;
    this.brush = brush; // a range input: the stroke's width, in the image's pixels
    this.painted = false;
    this.last = null;
    paintCanvas.addEventListener("pointerdown", (event) => {
      paintCanvas.setPointerCapture(event.pointerId);
      this.last = this.point(event);
      this.stroke(this.last);
    });
    paintCanvas.addEventListener("pointermove", (event) => {
      if (this.last) this.stroke(this.point(event));
    });
    for (const end of ["pointerup", "pointercancel"]) paintCanvas.addEventListener(end, () => (this.last = null));
  }

  async load(file) {
    const bitmap = await createImageBitmap(file);
    for (const canvas of [this.image, this.paint]) Object.assign(canvas, { width: bitmap.width, height: bitmap.height });
    this.image.getContext("2d").drawImage(bitmap, 0, 0);
    this.clear();
  }

  clear() {
    this.paint.getContext("2d").clearRect(0, 0, this.paint.width, this.paint.height);
    this.painted = false;
  }

  // The pointer's position in the image's pixels: the canvas is shown scaled to the page.
  point(event) {
    const box = this.paint.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * this.paint.width) / box.width,
      y: ((event.clientY - box.top) * this.paint.height) / box.height,
    };
  }

  // Opaque strokes (the canvas is shown half transparent), so that the mask is fully transparent under them.
  stroke(to) {
    const context = this.paint.getContext("2d");
    Object.assign(context, { strokeStyle: "#e11d48", lineWidth: this.brush.valueAsNumber, lineCap: "round" });
    context.beginPath();
    context.moveTo(this.last.x, this.last.y);
    context.lineTo(to.x, to.y);
    context.stroke();
    this.last = to;
    this.painted = true;
  }

  // The mask as a PNG Blob, or null when nothing is painted (the edit then changes the whole image).
  maskBlob() {
    if (!this.painted) return Promise.resolve(null);
    const mask = Object.assign(document.createElement("canvas"), { width: this.paint.width, height: this.paint.height });
    const context = mask.getContext("2d");
    context.fillRect(0, 0, mask.width, mask.height);
    context.globalCompositeOperation = "destination-out";
    context.drawImage(this.paint, 0, 0);
    return new Promise((resolve) => mask.toBlob(resolve, "image/png"));
  }
}
