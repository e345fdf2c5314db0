// AWS Signature Version 4 with the browser's own WebCrypto: the API takes IAM-signed requests
// only, and the signed-in person's credentials are short-lived ones from Cognito's identity pool.

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: number; // epoch milliseconds
}

const utf8 = new TextEncoder();

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(data: string): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", utf8.encode(data)));
}

async function hmac(key: ArrayBuffer | Uint8Array<ArrayBuffer>, data: string): Promise<ArrayBuffer> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", k, utf8.encode(data));
}

export function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function canonicalQuery(url: URL): string {
  return Array.from(url.searchParams, ([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`)
    .sort()
    .join("&");
}

/** The headers to send with the request (Authorization, X-Amz-Date, the session token and the
 * given ones), signed for `service` in `region`. `now` is for tests. */
export async function sign(
  method: string,
  url: URL,
  headers: Record<string, string>,
  body: string,
  creds: Credentials,
  region: string,
  service = "execute-api",
  now: Date = new Date(),
): Promise<Record<string, string>> {
  const amzDate = now.toISOString().replace(/[:-]|\.\d{3}/g, "");
  const day = amzDate.slice(0, 8);
  const signed: Record<string, string> = { host: url.host, "x-amz-date": amzDate };
  for (const [k, v] of Object.entries(headers)) signed[k.toLowerCase()] = v;
  if (creds.sessionToken) signed["x-amz-security-token"] = creds.sessionToken;
  const names = Object.keys(signed).sort();
  // every service but S3 takes each path segment encoded twice (URL's pathname is encoded once)
  const path = url.pathname.split("/").map(rfc3986).join("/") || "/";
  const canonical = [
    method,
    path,
    canonicalQuery(url),
    names.map((n) => `${n}:${signed[n].trim().replace(/\s+/g, " ")}\n`).join(""),
    names.join(";"),
    await sha256(body),
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256(canonical)].join("\n");
  let key = await hmac(utf8.encode(`AWS4${creds.secretAccessKey}`), day);
  for (const part of [region, service, "aws4_request"]) key = await hmac(key, part);
  const signature = hex(await hmac(key, toSign));
  const out: Record<string, string> = { ...signed };
  delete out.host; // the browser sends it, and may not be told to
  out.authorization =
    `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, ` +
    `SignedHeaders=${names.join(";")}, Signature=${signature}`;
  return out;
}
