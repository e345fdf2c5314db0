// The same HTTP API the CLI calls, from the page: JSON in and out, errors in the API's one shape
// ({error: {code, message}}), each request SigV4-signed when the page is signed in.

import type { CognitoSession } from "./auth";
import type { ConsoleConfig } from "./config";
import { sign } from "./sigv4";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class Api {
  constructor(
    private readonly cfg: ConsoleConfig,
    private readonly session: CognitoSession | null,
  ) {}

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const url = new URL(this.cfg.api + path, location.href);
    const data = body === undefined ? "" : JSON.stringify(body);
    let h: Record<string, string> = { ...headers };
    if (data) h["Content-Type"] = "application/json";
    if (this.session) h = await sign(method, url, h, data, await this.session.credentials(), this.session.region);
    let resp: Response;
    try {
      resp = await fetch(url.toString(), { method, headers: h, body: data || undefined });
    } catch (err) {
      throw new ApiError(0, "network_error", `the API could not be reached (${String(err)})`);
    }
    const payload = (await resp.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
    if (!resp.ok) {
      const e = payload?.error;
      throw new ApiError(resp.status, e?.code ?? `http_${resp.status}`, e?.message ?? resp.statusText);
    }
    return payload as T;
  }
}
