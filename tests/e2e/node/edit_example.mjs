// An edit through the Node SDK's images.edit with toFile, as OpenAI's docs write it (key and base URL
// from the environment): node edit_example.mjs input.png output.png
import fs from "node:fs";
import OpenAI, { toFile } from "openai";
const client = new OpenAI({
  apiKey: process.env.IMAGEGEN_API_KEY,
  baseURL: process.env.IMAGEGEN_BASE_URL,
});
const [input, output] = process.argv.slice(2);
const response = await client.images.edit({
  model: "flux-schnell",
  image: await toFile(fs.createReadStream(input), "input.png", { type: "image/png" }),
  prompt: "The same harbor at night",
});
fs.writeFileSync(output, Buffer.from(response.data[0].b64_json, "base64"));
console.log(JSON.stringify({ size: response.size, quality: response.quality, usage: response.usage }));
