// How times, sizes, money and estimates read on the page.

export function clock(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(hh ? 2 : 1, "0");
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function bytes(n: number): string {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function usd(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  return n < 0.01 ? `$${n.toFixed(4)}` : `$${n.toFixed(2)}`;
}

/** "in 2 min", "in 40 s", "now": how far `iso` (or epoch ms) lies ahead. */
export function fromNow(at: string | number): string {
  const ms = (typeof at === "number" ? at : Date.parse(at)) - Date.now();
  if (ms <= 1000) return "now";
  const s = Math.round(ms / 1000);
  return s < 90 ? `in ${s} s` : s < 5400 ? `in ${Math.round(s / 60)} min` : `in ${(s / 3600).toFixed(1)} h`;
}

/** When a running job should finish, from its progress so far (null until there is some). */
export function finishEstimate(startedAt: string | null, progress: number, now = Date.now()): number | null {
  if (!startedAt || progress <= 0 || progress >= 100) return null;
  const elapsed = now - Date.parse(startedAt);
  return now + (elapsed * (100 - progress)) / progress;
}
