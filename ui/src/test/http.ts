// A stand-in for the network: stubs global fetch with routes answering API-shaped JSON.
import { vi } from "vitest";

export interface Route {
  method?: string;
  /** matched against the path + query of the request */
  path: RegExp;
  status?: number;
  body?: unknown;
  /** simulate "server down": fetch rejects like a refused connection */
  networkError?: boolean;
  /** never answer (to observe loading states) */
  pending?: boolean;
}

export interface Call {
  method: string;
  url: string;
  body: unknown;
}

export function stubServer(routes: Route[]) {
  const calls: Call[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const method = (init?.method ?? "GET").toUpperCase();
    const body = typeof init?.body === "string" ? JSON.parse(init.body) : undefined;
    calls.push({ method, url, body });
    const pathAndQuery = url.replace(/^https?:\/\/[^/]+/, "");
    const route = routes.find((r) => (r.method ?? "GET") === method && r.path.test(pathAndQuery));
    if (!route) return json(404, { detail: `No route for ${method} ${pathAndQuery} in the test server.` });
    if (route.networkError) throw new TypeError("Failed to fetch");
    if (route.pending) return new Promise<Response>(() => {});
    return json(route.status ?? 200, route.body);
  });
  vi.stubGlobal("fetch", fetchMock);
  return { calls, fetchMock };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}
