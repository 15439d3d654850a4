// The API as the page calls it: the session cookie authenticates, and every POST carries the
// CSRF token from the readable `imagegen_csrf` cookie.

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
