// The API as the page calls it: the session cookie authenticates, and every POST carries the
// CSRF token from the readable `imagegen_csrf` cookie. Images are asked for as streams (`stream`).

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
  }
}

function csrfToken() {
  const cookie = document.cookie.split("; ").find((entry) => entry.startsWith("imagegen_csrf="));
  return cookie ? decodeURIComponent(cookie.slice("imagegen_csrf=".length)) : "";
}

export async function call(method, path, { body, headers = {} } = {}) {
  const response = await fetch(`/v1${path}`, {
    method,
    credentials: "same-origin",
    headers: {
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...(method === "GET" ? {} : { "X-CSRF-Token": csrfToken() }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const payload = await response.json();
  if (!response.ok) throw new ApiError(response.status, payload.error);
  return payload;
}

// One Server-Sent Event's name and data (the API writes `event: NAME` and `data: JSON` lines).
function parseEvent(message) {
  const fields = {};
  for (const line of message.split("\n")) {
    const colon = line.indexOf(":");
    fields[line.slice(0, colon)] = line.slice(colon + 1).replace(/^ /, "");
  }
  return [fields.event, JSON.parse(fields.data)];
}

// POSTs a streamed image request, JSON `body` or multipart `form`, and hands each event to
// `onEvent(name, data)` as it arrives (fetch's body reader). A refusal before the stream is the
// API's JSON error; an `error` event after it ends the stream: both are thrown as ApiError.
export async function stream(path, { body, form, headers = {} }, onEvent) {
  const response = await fetch(`/v1${path}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { ...(form ? {} : { "Content-Type": "application/json" }), "X-CSRF-Token": csrfToken(), ...headers },
    body: form ?? JSON.stringify({ ...body, stream: true }),
  });
  if (!response.ok) throw new ApiError(response.status, (await response.json()).error);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const [name, data] = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (name === "error") throw new ApiError(response.status, data.error);
      onEvent(name, data);
    }
  }
}
