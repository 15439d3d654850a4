// The signed-in account's asynchronous jobs (README, Asynchronous jobs), live: the list is read
// again every POLL_MS while the page shows it. Results are the server's to hold until fetched, so
// the panel shows status and progress, and cancels; it never fetches (or consumes) a result.

import { call } from "./api.js";

const POLL_MS = 2000;
const ACTIVE = new Set(["queued", "running"]);

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function row(job, onCancel) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.id;
  const progress = job.status === "queued" ? `#${job.queue_position} in queue` : `${job.progress.step}/${job.progress.steps}`;
  tr.append(
    cell(new Date(job.created * 1000).toLocaleTimeString()),
    cell(job.model),
    cell(job.status),
    cell(progress),
  );
  const actions = document.createElement("td");
  if (ACTIVE.has(job.status)) {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", () => onCancel(job.id));
    actions.append(cancel);
  }
  tr.append(actions);
  return tr;
}

export class JobsPanel {
  constructor(section, body) {
    this.section = section;
    this.body = body;
    this.timer = null;
    this.polling = false;
  }

  start() {
    this.stop();
    this.polling = true;
    const poll = async () => {
      await this.refresh().catch(() => {});
      if (this.polling) this.timer = setTimeout(poll, POLL_MS);
    };
    poll();
  }

  // At sign-out: nothing of the account's stays on the page.
  stop() {
    this.polling = false;
    clearTimeout(this.timer);
    this.body.replaceChildren();
    this.section.hidden = true;
  }

  async refresh() {
    const page = await call("GET", "/images/jobs?limit=20");
    if (!this.polling) return;
    this.section.hidden = page.data.length === 0;
    this.body.replaceChildren(...page.data.map((job) => row(job, (id) => this.cancel(id))));
  }

  async cancel(id) {
    await call("POST", `/images/jobs/${id}/cancel`);
    await this.refresh();
  }
}
