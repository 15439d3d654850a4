// The Studio: sign in, pick a model and its parameters, generate or edit an image while following
// the server's step count and its live previews, and keep the results in this browser.

import { ApiError, call, stream } from "./api.js";
import { editing, requestBody, showMode, showModels } from "./form.js";
import { forget, generations, remember } from "./history.js";
import { JobsPanel } from "./jobs.js";
import { MaskPainter } from "./mask.js";
import { LivePreviews } from "./previews.js";
import { generationCard, toBlob } from "./results.js";

const POLL_MS = 250;
const HINTS = {
  VALIDATION_4003:
    "Your account's plan does not include the Studio: ask the operator for a plan with studio_access.",
};

const $ = (id) => document.getElementById(id);

let account = null; // the signed-in username, whose history the page shows
let painter = null; // the edit mode's image and mask
let jobs = null; // the account's jobs, live

// The API's own message and code, and what to do about it where the code alone does not say.
function showError(error) {
  const detail = error instanceof ApiError ? ` (${error.code}) ${HINTS[error.code] ?? ""}` : "";
  $("error").textContent = `${error.message}${detail}`.trim();
  $("error").hidden = false;
}

function showProgress({ stage, step, steps }) {
  $("progress-bar").max = steps || 1;
  $("progress-bar").value = step;
  $("progress-text").textContent = steps ? `Step ${step} of ${steps} · ${stage}` : stage;
}

function progressId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// Polls the server's count of denoising steps while the POST runs, and once after it answers,
// so the last state shown is the server's own end.
async function followProgress(id, answer) {
  let settled = false;
  const settle = answer.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (;;) {
    const last = settled;
    try {
      showProgress(await call("GET", `/images/progress/${id}`));
    } catch {
      // 404 until the server has admitted the request; the POST's own answer reports failures.
    }
    if (last) return;
    await Promise.race([settle, new Promise((resolve) => setTimeout(resolve, POLL_MS))]);
  }
}

// The edits endpoint's multipart form: the request's fields, the image, and the painted mask.
async function editForm(body, partialImages) {
  const form = new FormData();
  for (const [name, value] of Object.entries({ ...body, stream: true, partial_images: partialImages })) {
    form.append(name, String(value));
  }
  form.append("image", $("edit-image").files[0]);
  const mask = await painter.maskBlob();
  if (mask) form.append("mask", mask, "mask.png");
  return form;
}

// Streams the request: previews replace each other as they arrive, the completed events give the images.
async function generate(event) {
  event.preventDefault();
  const edit = editing(event.target);
  const body = requestBody(event.target);
  const partialImages = Number(event.target.partial_images.value);
  const id = progressId();
  $("run").disabled = true;
  $("error").hidden = true;
  $("progress").hidden = false;
  showProgress({ stage: "waiting", step: 0, steps: 0 });
  try {
    const previews = new LivePreviews($("result"), body.n, partialImages);
    const completed = [];
    const request = edit
      ? { form: await editForm(body, partialImages) }
      : { body: { ...body, partial_images: partialImages } };
    const answer = stream(
      edit ? "/images/edits" : "/images/generations",
      { ...request, headers: { "X-Progress-Id": id } },
      (name, data) => (name.endsWith(".partial_image") ? previews.show(data) : (completed[data.image_index] = data)),
    );
    await followProgress(id, answer);
    await answer;
    const format = body.output_format ?? "png";
    const images = completed.map(({ b64_json, seed }) => ({ blob: toBlob(b64_json, format), seed }));
    // The first image's seed makes the copied code give the same images again.
    const generation = {
      created: completed[0].created_at,
      request: { ...body, seed: completed[0].seed },
      images,
      energy_cost: completed[0].energy_cost,
      credits_cost: completed[0].credits_cost,
      edit,
    };
    $("result").replaceChildren(generationCard(generation));
    await remember(account, generation);
    await showHistory();
  } catch (error) {
    $("progress").hidden = true;
    showError(error);
  } finally {
    $("run").disabled = false;
  }
}

async function showHistory() {
  $("history-list").replaceChildren(...(await generations(account)).map(generationCard));
}

async function enter(username) {
  if (!username) throw new Error("not signed in");
  const models = await call("GET", "/models");
  account = username;
  $("account-name").textContent = username;
  $("sign-in").hidden = true;
  $("account").hidden = $("studio").hidden = false;
  showModels($("generate"), models.data);
  await showHistory();
  jobs.start();
  $("prompt").focus();
}

function leave() {
  account = null;
  jobs.stop();
  localStorage.removeItem("imagegen-username");
  $("account").hidden = $("studio").hidden = true;
  $("sign-in").hidden = false;
  $("username").focus();
}

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const account = await call("POST", "/auth/login", {
      body: { username: form.username.value, password: form.password.value },
    });
    localStorage.setItem("imagegen-username", account.username);
    form.reset();
    $("sign-in-error").hidden = true;
    await enter(account.username);
  } catch (error) {
    $("sign-in-error").textContent = error.message;
    $("sign-in-error").hidden = false;
  }
}

async function signOut() {
  // A session that already expired has nothing left to end: the page signs out either way, and
  // leaves no history behind for whoever uses this browser next.
  await call("POST", "/auth/logout").catch(() => {});
  await forget(account);
  leave();
}

async function start() {
  $("sign-in").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("generate").addEventListener("submit", generate);
  painter = new MaskPainter($("edit-canvas"), $("mask-canvas"), $("brush"));
  jobs = new JobsPanel($("jobs"), $("jobs-list"));
  for (const radio of $("generate").mode) radio.addEventListener("change", () => showMode($("generate")));
  $("edit-image").addEventListener("change", (event) => painter.load(event.target.files[0]));
  $("clear-mask").addEventListener("click", () => painter.clear());
  $("clear-history").addEventListener("click", async () => {
    await forget(account);
    await showHistory();
  });
  try {
    await enter(localStorage.getItem("imagegen-username"));
  } catch {
    leave();
  }
}

start();
