// "Copy as code": the same request through the official openai SDKs and curl, with an API key
// (the Studio's session cookie is for the browser only).

// Arguments the Python SDK's images.generate names; the rest travel in extra_body.
const PYTHON_ARGUMENTS = new Set(["model", "prompt", "n", "size", "output_format"]);

function pythonValue(value) {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function python(body, baseUrl) {
  const entries = Object.entries(body);
  const named = entries.filter(([key]) => PYTHON_ARGUMENTS.has(key));
  const extra = entries.filter(([key]) => !PYTHON_ARGUMENTS.has(key));
  const lines = named.map(([key, value]) => `    ${key}=${pythonValue(value)},`);
  if (extra.length) {
    const fields = extra.map(([key, value]) => `${JSON.stringify(key)}: ${pythonValue(value)}`).join(", ");
    lines.push(`    extra_body={${fields}},`);
  }
  return `import base64
import os

from openai import OpenAI

client = OpenAI(api_key=os.environ["IMAGEGEN_API_KEY"], base_url=${JSON.stringify(baseUrl)})
response = client.images.generate(
${lines.join("\n")}
)
for image in response.data:
    with open(f"image-{image.seed}.${body.output_format ?? "png"}", "wb") as f:
        f.write(base64.b64decode(image.b64_json))
`;
}

function node(body, baseUrl) {
  return `// save as generate.mjs; npm install openai; node generate.mjs
import { writeFileSync } from "node:fs";
import OpenAI from "openai";

const client = new OpenAI({ apiKey: process.env.IMAGEGEN_API_KEY, baseURL: ${JSON.stringify(baseUrl)} });
const response = await client.images.generate(${JSON.stringify(body, null, 2)});
for (const image of response.data) {
  writeFileSync(\`image-\${image.seed}.${body.output_format ?? "png"}\`, Buffer.from(image.b64_json, "base64"));
}
`;
}

function curl(body, baseUrl) {
  const json = JSON.stringify(body).replaceAll("'", "'\\''");
  return `curl ${baseUrl}/images/generations \\
  -H "Authorization: Bearer $IMAGEGEN_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '${json}'
`;
}

export function snippets(body) {
  const baseUrl = `${location.origin}/v1`;
  return { Python: python(body, baseUrl), Node: node(body, baseUrl), curl: curl(body, baseUrl) };
}
