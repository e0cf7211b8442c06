/** Shown when the server cut a long text at its token limit. */
export function TruncatedNote({ n }: { n: number }) {
  return (
    <p className="notice small" data-testid="truncated">
      Only the first {n} tokens were run: the text is longer than the server's token limit (GPT2DICT_MAX_TEXT_TOKENS).
    </p>
  );
}
