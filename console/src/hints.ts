// What a person can do about a job's error, by its code (the CLI prints the same advice for
// the same codes, in terminal words: batchscribe_cli/cli.py HINTS).

const HINTS: Record<string, string> = {
  unsupported_media_type: "Convert it to a common audio format (mp3, wav, m4a, ogg, flac) first.",
  file_too_large: "Split the file into shorter parts.",
  invalid_media: "The file could not be decoded: check that it plays, or convert it.",
  no_audio: "The file has no audible audio stream.",
  too_long: "Split the file into shorter parts.",
  retries_exhausted: "The job's log says what went wrong each time.",
  upload_expired: "The file was not uploaded in time: submit it again.",
  upload_too_large: "The uploaded file was larger than declared: submit it again.",
  input_too_large_for_worker: "Split the file, or ask the deployer for workers with a larger volume.",
  unsupported_model: "Choose one of the listed models.",
  job_not_cancellable: "It has already finished.",
  network_error: "Check your connection; the page keeps trying.",
  forbidden: "Sign in again.",
  rate_limited: "Too many jobs at once: wait a moment and submit again.",
  upload_failed: "The upload was refused or interrupted: submit the file again.",
  internal_error: "Try again; if it persists, the operator can read the API's logs.",
};

export function hint(code: string): string | undefined {
  return HINTS[code];
}
