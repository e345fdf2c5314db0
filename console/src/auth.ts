// Sign-in when deployed: Cognito's hosted sign-in page (authorization code + PKCE, so no secret
// and no password ever passes through this page), then the identity pool exchanges the ID token
// for short-lived AWS credentials of the console's role. Tokens stay in this tab's
// sessionStorage; nothing long-lived reaches the page.

import type { CognitoConfig } from "./config";
import type { Credentials } from "./sigv4";

const TOKENS = "batchscribe.tokens";
const VERIFIER = "batchscribe.pkce";
const MARGIN_MS = 5 * 60 * 1000; // renew credentials and tokens this long before they expire

interface Tokens {
  id: string;
  refresh: string | null;
  expires: number; // epoch ms
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function redirectUri(): string {
  return location.origin + location.pathname;
}

export class CognitoSession {
  private creds: Credentials | null = null;
  private identityId: string | null = null;

  constructor(private readonly c: CognitoConfig) {}

  get region(): string {
    return this.c.region;
  }

  /** Finish a sign-in the hosted page redirected back from; true when signed in. */
  async start(): Promise<boolean> {
    const params = new URLSearchParams(location.search);
    const code = params.get("code");
    if (code) {
      history.replaceState(null, "", redirectUri() + location.hash);
      await this.token({ grant_type: "authorization_code", code, code_verifier: sessionStorage.getItem(VERIFIER) ?? "" });
      sessionStorage.removeItem(VERIFIER);
    }
    return this.tokens() !== null;
  }

  async signIn(): Promise<void> {
    const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
    sessionStorage.setItem(VERIFIER, verifier);
    const challenge = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))));
    const q = new URLSearchParams({
      response_type: "code",
      client_id: this.c.clientId,
      redirect_uri: redirectUri(),
      scope: "openid email",
      code_challenge: challenge,
      code_challenge_method: "S256",
    });
    location.assign(`${this.c.domain}/oauth2/authorize?${q}`);
  }

  signOut(): void {
    sessionStorage.removeItem(TOKENS);
    const q = new URLSearchParams({ client_id: this.c.clientId, logout_uri: redirectUri() });
    location.assign(`${this.c.domain}/logout?${q}`);
  }

  /** Short-lived AWS credentials for the signed-in person (renewed before they expire). */
  async credentials(): Promise<Credentials> {
    if (this.creds && (this.creds.expiration ?? 0) - MARGIN_MS > Date.now()) return this.creds;
    const logins = { [`cognito-idp.${this.c.region}.amazonaws.com/${this.c.userPoolId}`]: await this.idToken() };
    if (!this.identityId) {
      const id = await this.identity("GetId", { IdentityPoolId: this.c.identityPoolId, Logins: logins });
      this.identityId = String(id.IdentityId);
    }
    const out = await this.identity("GetCredentialsForIdentity", { IdentityId: this.identityId, Logins: logins });
    const c = out.Credentials as { AccessKeyId: string; SecretKey: string; SessionToken: string; Expiration: number };
    this.creds = {
      accessKeyId: c.AccessKeyId,
      secretAccessKey: c.SecretKey,
      sessionToken: c.SessionToken,
      expiration: c.Expiration * 1000,
    };
    return this.creds;
  }

  private tokens(): Tokens | null {
    const raw = sessionStorage.getItem(TOKENS);
    return raw ? (JSON.parse(raw) as Tokens) : null;
  }

  private async idToken(): Promise<string> {
    const t = this.tokens();
    if (t && t.expires - MARGIN_MS > Date.now()) return t.id;
    if (t?.refresh) {
      await this.token({ grant_type: "refresh_token", refresh_token: t.refresh });
      const fresh = this.tokens();
      if (fresh) return fresh.id;
    }
    await this.signIn();
    throw new Error("signing in");
  }

  private async token(grant: Record<string, string>): Promise<void> {
    const body = new URLSearchParams({ client_id: this.c.clientId, redirect_uri: redirectUri(), ...grant });
    const resp = await fetch(`${this.c.domain}/oauth2/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body,
    });
    if (!resp.ok) throw new Error(`sign-in failed (HTTP ${resp.status}); sign in again`);
    const t = (await resp.json()) as { id_token: string; refresh_token?: string; expires_in: number };
    const refresh = t.refresh_token ?? this.tokens()?.refresh ?? null;
    const tokens: Tokens = { id: t.id_token, refresh, expires: Date.now() + t.expires_in * 1000 };
    sessionStorage.setItem(TOKENS, JSON.stringify(tokens));
  }

  private async identity(action: string, body: unknown): Promise<Record<string, unknown>> {
    const resp = await fetch(`https://cognito-identity.${this.c.region}.amazonaws.com/`, {
      method: "POST",
      headers: {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": `AWSCognitoIdentityService.${action}`,
      },
      body: JSON.stringify(body),
    });
    const out = (await resp.json()) as Record<string, unknown>;
    if (!resp.ok) throw new Error(`Cognito ${action}: ${String(out.message ?? resp.status)}`);
    return out;
  }
}
