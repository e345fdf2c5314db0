// What the page is told by the site that serves it (config.json beside index.html): where the
// API is, and how people sign in (none locally; Cognito when deployed).

export interface CognitoConfig {
  region: string;
  userPoolId: string;
  clientId: string;
  identityPoolId: string;
  domain: string; // the hosted sign-in's base URL, https://PREFIX.auth.REGION.amazoncognito.com
}

export interface ConsoleConfig {
  api: string; // "" locally: the API answers on the page's own origin
  cognito: CognitoConfig | null;
  multipartBytes: number; // files larger than this go up in parts, as the CLI sends them
}

export const MULTIPART_BYTES = 16 * 1024 * 1024; // the CLI's threshold (batchscribe_cli/client.py)

export async function loadConfig(): Promise<ConsoleConfig> {
  const resp = await fetch("config.json", { cache: "no-store" });
  if (!resp.ok) throw new Error(`config.json: HTTP ${resp.status}`);
  const raw = (await resp.json()) as Partial<ConsoleConfig> & { multipart_bytes?: number };
  // ?multipart_bytes=N sends smaller files in parts too (to try the multipart path on a short file)
  const asked = Number(new URLSearchParams(location.search).get("multipart_bytes"));
  return {
    api: (raw.api ?? "").replace(/\/+$/, ""),
    cognito: raw.cognito ?? null,
    multipartBytes: asked > 0 ? asked : raw.multipart_bytes ?? MULTIPART_BYTES,
  };
}
