/// <reference types="vitest/config" />
import { defineConfig, loadEnv } from "vite";
import react from "@vitejs/plugin-react";

// Dev server on 24576; the API server runs on 24577 (see server/API.md).
// With VITE_BACKEND_URL empty the app calls /api on its own origin, and this proxy
// forwards those calls to API_PROXY_TARGET (default http://localhost:24577).
export default defineConfig(({ mode }) => {
  const env = loadEnv(mode, process.cwd(), "");
  const proxyTarget = env.API_PROXY_TARGET || env.VITE_BACKEND_URL || "http://localhost:24577";
  return {
    plugins: [react()],
    server: {
      port: 24576,
      strictPort: true,
      proxy: { "/api": { target: proxyTarget, changeOrigin: true } },
    },
    preview: { port: 24576 },
    build: { outDir: "dist", sourcemap: false },
    test: {
      environment: "happy-dom",
      setupFiles: ["./src/test/setup.ts"],
      include: ["src/**/*.test.{ts,tsx}"],
      css: false,
    },
  };
});
