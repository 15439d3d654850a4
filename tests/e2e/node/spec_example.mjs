// The spec's Node example, unchanged but for the key and base URL (taken from the environment).
import fs from "node:fs";
import OpenAI from "openai";
const client = new OpenAI({
  apiKey: process.env.IMAGEGEN_API_KEY,
  baseURL: process.env.IMAGEGEN_BASE_URL,
});
const response = await client.images.generate({
  model: "flux-schnell",
  prompt: "A Hanseatic trading ship entering Lübeck harbor at dawn, painted in oils",
  n: 1,
  size: "1024x1024",
});
fs.writeFileSync(process.argv[2] ?? "ship.png", Buffer.from(response.data[0].b64_json, "base64"));
