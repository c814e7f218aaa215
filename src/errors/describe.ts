// One line for a failure in a log or a status field: an error's code (EADDRINUSE, ECONNREFUSED…) and message,
// the code only once when the message already names it, never a stack.
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && !error.message.includes(code)
    ? `${code}: ${error.message}`
    : error.message;
}
