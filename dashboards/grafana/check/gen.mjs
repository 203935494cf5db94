// Writes each dashboard JSON as a TypeScript object literal typed as @grafana/schema's
// Dashboard, so that `tsc` checks it with literal types and excess-property checks (a JSON
// import would widen every string and skip unknown fields).
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const dir = new URL("../dashboards/", import.meta.url).pathname;
mkdirSync("gen", { recursive: true });
for (const file of readdirSync(dir).filter((f) => f.endsWith(".json"))) {
  const json = JSON.parse(readFileSync(join(dir, file), "utf8"));
  const name = file.replace(/\.json$/, "").replace(/[^A-Za-z0-9_]/g, "_");
  writeFileSync(
    join("gen", `${name}.ts`),
    `// Generated from dashboards/grafana/dashboards/${file} by gen.mjs; not committed.\n` +
      `import type { Dashboard } from "@grafana/schema";\n` +
      `export const ${name}: Dashboard = ${JSON.stringify(json, null, 2)};\n`,
  );
}
