/** Parses a decimal amount of the operator's currency (`12.50`) into integer micro-units, or null when malformed. */
export function parseAmountMicros(text: string): number | null {
  // twelve digits would reach 10^18 micro-units, beyond 2^53: the balance would silently round
  const match = /^(\d{1,9})(?:\.(\d{1,6}))?$/.exec(text.trim());
  if (match === null) return null;
  const whole = Number(match[1]);
  const fraction = Number((match[2] ?? "").padEnd(6, "0"));
  return whole * 1_000_000 + fraction;
}

/** Formats micro-units as a decimal amount with six places (`-0.000125`). */
export function formatMicros(micros: number): string {
  const sign = micros < 0 ? "-" : "";
  const absolute = Math.abs(micros);
  return `${sign}${Math.floor(absolute / 1_000_000)}.${String(absolute % 1_000_000).padStart(6, "0")}`;
}
