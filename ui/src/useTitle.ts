import { useEffect } from "react";

export function useTitle(title: string) {
  useEffect(() => {
    document.title = `${title} · GPT-2 Dictionary`;
  }, [title]);
}
