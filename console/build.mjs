// Builds the console into dist/ (committed: the local stack and `cdk synth` use it as is, with no
// npm at run time). `node build.mjs --check` builds in memory and fails when dist/ differs (CI).
// The language choices come from the API's own document (docs/openapi.json), so they are defined once.
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";

const LIMIT = 200 * 1024; // the page's whole weight over the wire, uncompressed
const doc = JSON.parse(readFileSync(new URL("../docs/openapi.json", import.meta.url)));
const languages = doc.components.schemas.JobOptions.properties.language.enum;

const result = await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  write: false,
  legalComments: "none",
  define: { __LANGUAGES__: JSON.stringify(languages) },
});
const files = {
  "app.js": result.outputFiles[0].text,
  "index.html": readFileSync(new URL("static/index.html", import.meta.url), "utf8"),
  "app.css": readFileSync(new URL("static/app.css", import.meta.url), "utf8"),
};
const total = Object.values(files).reduce((n, text) => n + Buffer.byteLength(text), 0);
if (total > LIMIT) throw new Error(`the console weighs ${total} bytes, over ${LIMIT}`);
const dist = new URL("dist/", import.meta.url);
if (process.argv.includes("--check")) {
  const stale = Object.entries(files).filter(
    ([name, text]) => !existsSync(new URL(name, dist)) || readFileSync(new URL(name, dist), "utf8") !== text,
  );
  if (stale.length) throw new Error(`dist/ is stale (${stale.map(([n]) => n).join(", ")}): run npm run build`);
} else {
  mkdirSync(dist, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(new URL(name, dist), text);
}
console.log(`console: ${total} bytes in ${Object.keys(files).length} files`);
