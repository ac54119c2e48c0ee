/** Config entries for the fake OpenAI and Anthropic suppliers, ZDR-qualified, with the rig's own timeouts. */
export function fakeSupplierEntries(
  urls: { openai: string; anthropic: string },
  timeouts: { first_byte_ms: number; idle_ms: number; connect_ms: number; total_ms: number },
): object[] {
  return [
    { id: "fake-openai", type: "openai", base_url: urls.openai, api_key_env: "FAKE_OPENAI_KEY", zdr: true, timeouts },
    {
      id: "fake-anthropic",
      type: "anthropic",
      base_url: urls.anthropic,
      api_key_env: "FAKE_ANTHROPIC_KEY",
      zdr: true,
      timeouts,
    },
  ];
}
