// The generation form: fields and bounds follow the chosen model's `limits` from GET /v1/models,
// so the page offers exactly what the API accepts.

const CUSTOM_SIZE = "custom";

export function showModels(form, models) {
  form.model.replaceChildren(...models.map((model) => new Option(model.id, model.id)));
  form.model.onchange = () => applyLimits(form, models);
  form.size.onchange = () => showCustomSize(form);
  applyLimits(form, models);
}

function applyLimits(form, models) {
  const { limits } = models.find((model) => model.id === form.model.value);
  const takes = new Set(limits.parameters);
  for (const field of form.querySelectorAll("[data-parameter]")) {
    field.hidden = !takes.has(field.dataset.parameter);
  }
  const sizes = limits.sizes.map((size) => new Option(size, size, false, size === limits.default_size));
  if (takes.has("width")) sizes.push(new Option("Custom width and height", CUSTOM_SIZE));
  form.size.replaceChildren(...sizes);
  for (const side of [form.width, form.height]) {
    Object.assign(side, { min: limits.min_side, max: limits.max_side, step: limits.side_multiple });
  }
  Object.assign(form.steps, { max: limits.max_steps, placeholder: limits.default_steps });
  Object.assign(form.guidance, { max: limits.max_guidance, placeholder: limits.default_guidance });
  showCustomSize(form);
}

function showCustomSize(form) {
  const custom = form.size.value === CUSTOM_SIZE && !editing(form);
  form.querySelector('[data-parameter="width"]').hidden = !custom;
  form.width.required = form.height.required = custom;
}

export const editing = (form) => form.mode.value === "edit";

// Edit mode takes an image (and a painted mask) and makes images of its size: no size fields.
export function showMode(form) {
  const edit = editing(form);
  form.querySelector("#edit-fields").hidden = !edit;
  form.querySelector("#size-field").hidden = edit;
  form.image.required = edit;
  form.run.textContent = edit ? "Edit" : "Generate";
  showCustomSize(form);
}

// The request body: what the user filled in among the visible fields, typed as the API expects
// (the stream's previews aside: `partial_images` is read by the page).
export function requestBody(form) {
  const body = { model: form.model.value, prompt: form.prompt.value, n: form.n.valueAsNumber };
  // An edit makes images of the edited image's size.
  if (!editing(form) && form.size.value === CUSTOM_SIZE) {
    Object.assign(body, { width: form.width.valueAsNumber, height: form.height.valueAsNumber });
  } else if (!editing(form)) {
    body.size = form.size.value;
  }
  for (const name of ["seed", "steps", "guidance"]) {
    const input = form[name];
    if (!input.closest("[hidden]") && input.value !== "") body[name] = input.valueAsNumber;
  }
  if (!form.negative_prompt.closest("[hidden]") && form.negative_prompt.value.trim()) {
    body.negative_prompt = form.negative_prompt.value;
  }
  if (form.output_format.value !== "png") body.output_format = form.output_format.value;
  return body;
}
